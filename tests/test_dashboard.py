"""`joules dashboard`: a self-contained HTML page of the saved runs, the baselines and the model,
loaded in a real headless Chromium (Debian's `chromium`, installed by .ci/run; skipped, saying
why, where it is absent): no page error, and every chart drawn."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from pytest_joules.cli import main

from . import plugin_fake  # noqa: F401  (preloads what inner runs import lazily)

pytest.importorskip("plotly", reason="the dashboard extra (plotly) is not installed")

GRID = """
import pytest

@pytest.mark.energy(n_in=[64, 256, 1024], n_out=[16, 64, 256], requests=4)
def test_grid(joules):
    joules()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two saved runs (the second 10% slower), baselines from the first, a model fitted to it."""
    pytester = pytest.importorskip("_pytest.pytester")
    del pytester
    root = tmp_path_factory.mktemp("dash")
    (root / "tox.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -p no:benchmark -p no:hypothesispytest\n"
                                  "joules_model = tiny-gqa\njoules_engine_options = noise=0\njoules_seed = 0\n")
    (root / "test_energy.py").write_text(GRID)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
    env["COLUMNS"] = "300"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def pytest_run(*args: str) -> str:
        proc = subprocess.run([os.sys.executable, "-m", "pytest", "--joules", "--joules-autosave", *args],
                              cwd=root, env=env, capture_output=True, text=True, timeout=300)
        return proc.stdout

    out = pytest_run("--joules-update-baselines")
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("joules calibrate "))
    model = shlex.split(command)[shlex.split(command).index("--save") + 1]
    pytest_run("--joules-sim-slowdown", "1.1")
    here = os.getcwd()
    os.chdir(root)
    try:
        first = sorted((root / ".joules").glob("0001_*.json"))[0]
        assert main(["fit", str(first), "--save", model]) == 0
        assert main(["dashboard", "--out", "site"]) == 0
    finally:
        os.chdir(here)
    return root / "site" / "index.html"


def test_the_page_is_one_file_with_the_data_inlined(site, capsys):
    text = site.read_text(encoding="utf-8")
    assert "plotly.js v" in text[:100_000]  # the bundle inlined: no network, no server
    assert not re.search(r"<script[^>]+src=", text) and "<link" not in text
    assert "SIMULATED device" in text and '"name": "test_energy.py::test_grid[n_in=64-n_out=16]"' in text
    assert '"baseline": 0.' in text and '"curves": [{' in text and '"heatmap": {"n_in": [64, 256, 1024]' in text


def test_without_saved_runs_it_says_how_to_make_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".joules").mkdir()
    assert main(["dashboard", "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--joules-autosave" in err


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("no chromium here: install Debian's chromium (.ci/run does) to load the dashboard in a real browser")


def _browse(site: Path, *mode: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=30000", "--window-size=1400,2200", *mode, site.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # chromium and its helper processes, by this group only
        proc.communicate()
        pytest.fail("chromium did not finish loading the dashboard in 180 s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_chromium_loads_the_page_without_errors_and_draws_every_chart(site):
    done = _browse(site, "--dump-dom")
    dom, log = done.stdout, done.stderr
    assert "Uncaught" not in log and not re.search(r"CONSOLE\(\d+\)] \"?(Uncaught|Error)", log), log[-2000:]
    errors = re.search(r'<pre id="joules-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors
    # 9 tests, the heatmap and the sweet spots: each drawn (Plotly's promise resolved) as SVG
    assert 'data-charts="11"' in dom
    assert dom.count('class="main-svg"') >= 11
    assert dom.count('class="hm"') >= 1 or "heatmaplayer" in dom


def test_a_screenshot_shows_the_charts(site, tmp_path):
    png = tmp_path / "dashboard.png"
    _browse(site, f"--screenshot={png}", cwd=tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = pytest.importorskip("matplotlib.image").imread(str(png))
    colours = {tuple(round(float(c), 2) for c in px[:3]) for px in image[::20, ::20].reshape(-1, image.shape[2])}
    assert len(colours) > 20  # lines, bands and the heatmap's cells, not a blank page
