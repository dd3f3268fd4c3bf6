"""80 columns, no terminal (a CI log): every table fits without cutting a number, test names wrap
at their joints at most once, and a failure's first line fits 100 characters. Run as CI runs
them: COLUMNS=80, stdout a pipe, on the repository's own examples (SIMULATED)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDTH = 80
#: rich cuts a cell it cannot fit with an ellipsis; a number must never be cut
CUT = "…"


def run(cwd: Path, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
    env.update(COLUMNS=str(WIDTH), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    return proc.stdout


def joules(cwd: Path, *argv: str) -> str:
    return run(cwd, "-c", "import sys; from pytest_joules.cli import main; sys.exit(main())", *argv)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The examples and their committed baselines and model; two saved runs, the second 8% slower."""
    root = tmp_path_factory.mktemp("narrow")
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copytree(REPO / "baselines", root / "baselines")
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -p no:benchmark -p no:hypothesispytest\n")
    return root


@pytest.fixture(scope="module")
def outputs(project) -> dict[str, str]:
    out = {"summary": run(project, "-m", "pytest", "--joules", "examples/", "--joules-seed", "5", "--joules-autosave")}
    out["failures"] = run(project, "-m", "pytest", "--joules", "examples/", "--joules-seed", "6", "--joules-autosave",
                          "--joules-sim-slowdown", "1.08")
    out["compare"] = joules(project, "compare", "last~1", "last")
    out["list"] = joules(project, "list")
    out["history"] = joules(project, "history", "test_summarize_email_thread")
    out["sweetspot"] = joules(project, "sweetspot", "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.model.json",
                              "--n-in", "128,512,2048", "--fit", "all")
    out["sweep"] = joules(project, "sweep", "--model", "Llama-3.1-8B", "--requests", "16", "--n-in", "128,512,2048",
                          "--n-out", "64,256,1024", "--seed", "1")
    return out


def table_lines(text: str) -> list[str]:
    """Lines of tables: those with two or more figures separated by spaces or rules."""
    return [line for line in text.splitlines()
            if re.search(r"\d\S*\s+\S*\d", line) or set(line.strip()) <= set("─━┃│┏┓┗┛┡┩╇┳┻╋ ") and line.strip()]


@pytest.mark.parametrize("name", ["summary", "failures", "compare", "list", "history", "sweetspot", "sweep"])
def test_every_table_fits_80_columns_and_no_number_is_cut(outputs, name):
    text = outputs[name]
    lines = table_lines(text)
    assert lines, text
    wide = [line for line in lines if len(line) > WIDTH and not line.startswith(("  joules ", "model "))]
    assert not wide, "\n".join(wide)
    assert CUT not in text, text


def test_the_summary_keeps_rounds_spread_watts_and_requests(outputs):
    text = outputs["summary"]
    header = next(line for line in text.splitlines() if line.startswith("test ") and "J/tok" in line)
    for column in ("n_in", "n_out", "J/tok", "W", "rnd", "sprd", "base", "model", "verdict"):
        assert column in header.split(), header
    assert "16 requests each" in text


def test_names_wrap_at_their_joints_at_most_once(outputs):
    # the longest example name: one line in the summary, two (at a joint) with its label
    summary = outputs["summary"].splitlines()
    at = next(i for i, line in enumerate(summary) if line.startswith("test_summarize_email_thread  512"))
    assert summary[at + 1].strip() == "::quarter-length"
    compare = outputs["compare"].splitlines()
    for i, line in enumerate(compare):
        if line.startswith("  test_") and re.search(r"\d", line):
            follow = compare[i + 1] if i + 1 < len(compare) else ""
            after = compare[i + 2] if i + 2 < len(compare) else ""
            # a continuation line holds only the rest of the name, and never a third line
            if follow.startswith("  ") and not re.search(r"\d", follow) and not follow.startswith("  test_"):
                assert not (after.startswith("  ") and not re.search(r"\d", after) and not after.startswith("  test_")), \
                    "\n".join(compare[i:i + 3])


def test_a_failures_first_line_fits_100_characters(outputs):
    text = outputs["failures"]
    firsts = [line for line in text.splitlines() if line.startswith("energy regression ")]
    assert len(firsts) >= 10
    assert all(len(line) <= 100 for line in firsts), max(firsts, key=len)
    assert "t-test" not in text and "beyond the noise" in text  # plain words; the statistics at -v


def test_no_hints_and_no_slowdown_in_the_suggestion(project):
    text = run(project, "-m", "pytest", "--joules", "examples/", "--joules-seed", "5", "--joules-no-hints")
    assert "Sweet spots" not in text and "joules calibrate" not in text
