"""The plugin's saved runs (--joules-autosave), machine info and carbon/cost figures."""

import json
import socket
from pathlib import Path

import pytest

from pytest_joules.cli import main
from pytest_joules.plugin.options import JoulesOptions

from .plugin_fake import TWO_TESTS, project

TESTS = TWO_TESTS


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def _doc(proj, name="out.json"):
    return json.loads((proj.path / name).read_text())


# -- machine and commit info ---------------------------------------------------------------------
def test_results_json_says_where_it_ran(proj):
    proj.runpytest("--joules", "--joules-json", "out.json").assert_outcomes(passed=3)
    machine = _doc(proj)["machine"]
    assert machine["host"] == socket.gethostname() and machine["packages"]["pytest-joules"]
    assert "git" in machine  # null here: the pytester project is no repository


def test_the_commit_is_the_one_of_the_code_under_test(proj, tmp_path_factory, monkeypatch):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "test_energy.py"], ["commit", "-q", "-m", "tests"]):
        subprocess.run(git + args, cwd=proj.path, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj.path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # pytest run from outside the repository
    ini = next(proj.path.glob("*.ini"))
    result = proj.runpytest("-c", str(ini), "--rootdir", str(proj.path), str(proj.path), "--joules",
                            "--joules-json", str(proj.path / "out.json"))
    result.assert_outcomes(passed=3)
    assert _doc(proj)["machine"]["git"]["commit"] == head


# -- carbon and cost -----------------------------------------------------------------------------
def test_grid_intensity_and_price_give_carbon_and_cost_per_1000_tokens(proj):
    result = proj.runpytest("--joules", "--joules-json", "out.json", "--joules-grid-intensity", "400",
                            "--joules-price", "0.25", "--joules-export-bmf", "bmf.json")
    result.assert_outcomes(passed=3)
    doc = _doc(proj)
    assert doc["footprint"]["grid_intensity_gco2e_per_kwh"] == 400 and doc["footprint"]["price_per_kwh"] == 0.25
    js = []
    for r in doc["results"]:
        kwh = r["j_per_out_token"] * 1000 / 3.6e6
        assert r["gco2e_per_1k_tokens"] == pytest.approx(kwh * 400)
        assert r["cost_per_1k_tokens"] == pytest.approx(kwh * 0.25)
        js.append(r["j_per_out_token"])
    low = min(js) * 1000 / 3.6e6 * 400
    result.stdout.fnmatch_lines([
        f"footprint per 1,000 output tokens at grid 400 gCO2e/kWh, price 0.25/kWh (stated values): {low:.3g} to *"
        " gCO2e, cost * over 3 measurements",
    ])
    bmf = json.loads((proj.path / "bmf.json").read_text())
    for r in doc["results"]:
        assert bmf[r["name"]]["gco2e-per-1k-tokens"]["value"] == pytest.approx(r["gco2e_per_1k_tokens"])


def test_without_the_inputs_there_is_no_footprint(proj):
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=3)
    doc = _doc(proj)
    assert "footprint" not in doc and all("gco2e_per_1k_tokens" not in r for r in doc["results"])
    assert "footprint per" not in result.stdout.str()


def test_a_bad_grid_intensity_is_a_one_line_usage_error(proj):
    result = proj.runpytest("--joules", "--joules-grid-intensity", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-grid-intensity: invalid value 'lots': give a non-negative number, like 400"])
    assert "Traceback" not in result.stderr.str()


# -- autosave ------------------------------------------------------------------------------------
def test_autosave_keeps_every_run_numbered_beside_the_baselines(proj, capsys):
    first = proj.runpytest("--joules", "--joules-autosave")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["run 0001 saved to *.joules/0001_*_nogit.json*"])
    second = proj.runpytest("--joules", "--joules-autosave", "--joules-sim-slowdown", "1.5")
    second.stdout.fnmatch_lines(["run 0002 saved to *"])
    # filelock keeps its file; the folder ignores itself in git (local history, not source)
    saved = sorted(p.name for p in (proj.path / ".joules").iterdir() if p.name not in (".joules.lock", ".gitignore"))
    assert [n[:5] for n in saved] == ["0001_", "0002_"]
    assert (proj.path / ".joules" / ".gitignore").read_text().splitlines()[-1] == "*"
    doc = json.loads((proj.path / ".joules" / saved[1]).read_text())
    assert doc["schema"] == "pytest-joules/results/1" and len(doc["results"]) == 3 and doc["machine"]["host"]

    # the CLI finds them from the project and judges the last run against the one before
    import os

    here = os.getcwd()
    os.chdir(proj.path)
    try:
        capsys.readouterr()
        assert main(["compare", "last~1", "last", "--fail"]) == 1
        out = capsys.readouterr().out
        assert "3 compared: 3 regression" in out
        assert main(["list"]) == 0
        listing = capsys.readouterr().out
        assert "0001 " in listing and "0002 " in listing
    finally:
        os.chdir(here)


def test_autosave_from_the_ini_file(proj):
    proj.makeini("[pytest]\njoules_engine = fake\njoules_seed = 0\njoules_autosave = true\n"
                 "addopts = -p no:benchmark -p no:cacheprovider\n")
    proj.runpytest("--joules").assert_outcomes(passed=3)
    assert len(list((proj.path / ".joules").glob("0001_*.json"))) == 1


def test_no_autosave_by_default(proj):
    proj.runpytest("--joules").assert_outcomes(passed=3)
    assert not (proj.path / ".joules").exists()


def test_the_runs_folder_follows_the_baselines():
    assert JoulesOptions(baselines=Path("/repo/ci/baselines")).autosave_dir == Path("/repo/ci/.joules")
