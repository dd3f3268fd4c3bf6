"""Extreme numbers, pipes that close, plot paths, numpy integers and smaller careless inputs
(issue 21, items 8, 9, 10, 11, 13 and 14): each ends, gives the right answer, or says one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_joules.cli import main
from pytest_joules.errors import ConfigError, DataError
from pytest_joules.store.results import SCHEMA, load_json

from .plugin_fake import project

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, command):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"joules {command}: error: ") or "error: argument" in err, err


@pytest.fixture
def proj(pytester, monkeypatch):
    return project(pytester, monkeypatch)


# -- item 8: numbers that never end ------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["sweep", "--rounds", "100000000"],
    ["sweep", "--warmup", "1000000000"],
    ["calibrate", "--rounds", "1000000000", "--save", "m.json"],
    ["calibrate", "--warmup", "1000000000", "--save", "m.json"],
    ["calibrate", "--requests", "100000000", "--save", "m.json"],
    ["calibrate", "--levels", "300", "--save", "m.json"],
    ["calibrate", "--levels", "100000", "--save", "m.json"],
    ["calibrate", "--bootstrap", "1", "--save", "m.json"],
])
def test_counts_that_would_run_for_hours_are_refused_at_parse_time(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"joules {argv[0]}: error: argument {argv[1]}: ") and ("at most" in last or "at least" in last
                                                                              or "more than" in last), last


@pytest.mark.parametrize("option", ["slowdown=1e12", "noise=200", "noise=1e6", "noise=nan", "slowdown=inf"])
def test_sim_settings_beyond_any_device_are_one_line(capsys, option):
    code, _, err = cli(capsys, "sweep", "--engine", "sim", "--model", "tiny-gqa", "--n-in", "64", "--n-out", "64",
                       "--rounds", "1", "--engine-option", option)
    one_line(code, err, "sweep")
    assert "sim " + option.split("=")[0] in err


@pytest.mark.parametrize("args, problem", [
    (("--joules-rounds", "100000000"), "--joules-rounds: invalid value '100000000': give auto (measure until the "
                                       "verdict is known) or a positive integer of at most 1,000*"),
    (("--joules-warmup", "1000"), "--joules-warmup: invalid value '1000': give an integer >= 0 of at most 100*"),
])
def test_plugin_counts_that_would_run_for_hours_are_usage_errors(proj, args, problem):
    proj.makepyfile(test_energy="import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8)\ndef test_x(joules):\n    joules()\n")
    result = proj.runpytest("--joules", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + problem])


def test_a_marker_with_rounds_beyond_the_limit_is_a_collection_error(proj):
    proj.makepyfile(test_energy="import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8, rounds=10**30)\n"
                                "def test_x(joules):\n    joules()\n")
    result = proj.runpytest("--joules")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*rounds=1000000000000000000000000000000 is more than 1,000: each runs the whole "
                                 "workload and cannot be cut short; use rounds='auto'*"])


def test_fixed_rounds_stop_at_the_budget_of_measured_seconds(proj):
    """Before: a fixed number of rounds ignored --joules-max-seconds."""
    proj.makepyfile(test_energy="import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8, rounds=1000)\n"
                                "def test_x(joules):\n    m = joules()\n    assert len(m.rounds) == 3, len(m.rounds)\n"
                                "    assert m.stopped == 'budget (3 of 1000 rounds)'\n")
    proj.runpytest("--joules", "--joules-max-seconds", "0.000001").assert_outcomes(passed=1)


# -- item 9: a bootstrap band of one replicate ---------------------------------------------------
def test_calibrate_refuses_fewer_replicates_than_a_95_percent_band_needs(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["calibrate", "--bootstrap", "39", "--save", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert "expected a number of bootstrap replicates of at least 40, got '39': a 95% interval needs at least 40" in err


# -- item 10: a reader that goes away ----------------------------------------------------------
def _first_line(argv, cwd):
    """Run `joules ARGV | head -1`: read one line, close the pipe, and return (line, rc, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    p = subprocess.Popen([sys.executable, "-c", "import sys; from pytest_joules.cli import main; sys.exit(main())", *argv],
                         cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    return line.decode(), p.wait(timeout=60), err


def _results(path, rows, slower=1.0):
    items = [{"name": f"t{i}", "n_in": 128, "n_out": 64, "j_per_out_token": 0.1 * slower, "valid": True,
              "rounds": [{"joules": 6.4 * slower, "output_tokens": 64, "valid": True}]} for i in range(rows)]
    path.write_text(json.dumps({"schema": SCHEMA, "results": items, "engine": {}, "device": {}}))
    return path


@pytest.fixture
def saved_runs(tmp_path):
    runs = tmp_path / ".joules"
    runs.mkdir()
    (tmp_path / ".git").mkdir()
    for i in range(1, 1500):  # more lines than a pipe holds
        _results(runs / f"{i:04d}_20260101T000000Z_abc1234.json", 1)
    return tmp_path


@pytest.mark.parametrize("argv", [["list"], ["history", "t0"]])
def test_a_closed_pipe_ends_a_listing_quietly_with_status_0(saved_runs, argv):
    line, rc, err = _first_line(argv, saved_runs)
    assert line and rc == 0 and err == "", err


@pytest.mark.parametrize("slower, fail, status", [(1.0, True, 0), (1.5, False, 0), (1.5, True, 1)])
def test_a_closed_pipe_keeps_compares_own_status(tmp_path, slower, fail, status):
    """Before: `joules compare | head -1` exited 1 whatever the verdict, like --fail's regression."""
    old, new = _results(tmp_path / "old.json", 3000), _results(tmp_path / "new.json", 3000, slower)
    line, rc, err = _first_line(["compare", old, new, *(["--fail"] if fail else [])], tmp_path)
    assert line.startswith("joules compare") and rc == status and err == "", err


# -- item 11: plot paths ------------------------------------------------------------------------
@pytest.mark.parametrize("plot, problem", [
    ("trend.txt", "--plot trend.txt: matplotlib cannot write '.txt' figures; use one of .png, .svg, .pdf"),
    (".", "--plot .: give a file name with an extension, such as trend.png"),
    ("trend", "--plot trend: give a file name with an extension, such as trend.png"),
])
def test_history_refuses_a_plot_path_it_cannot_write_in_one_line(saved_runs, monkeypatch, capsys, plot, problem):
    """Before: `--plot trend.txt` was a traceback and `--plot .` wrote a hidden `./.png`."""
    monkeypatch.chdir(saved_runs)
    code, _, err = cli(capsys, "history", "t0", "--plot", plot)
    one_line(code, err, "history")
    assert problem in err
    assert not list(saved_runs.glob("*.png")) and not (saved_runs / ".png").exists()


def test_sweep_checks_its_plot_path_before_measuring(capsys):
    code, out, err = cli(capsys, "sweep", "--engine", "sim", "--model", "tiny-gqa", "--n-in", "64", "--n-out", "64",
                         "--plot", "grid.txt")
    one_line(code, err, "sweep")
    assert out == ""  # nothing was measured


# -- item 13: numpy integers ----------------------------------------------------------------------
NUMPY_TESTS = """
import numpy as np
import pytest

@pytest.mark.energy(n_in=np.int64(128), n_out=np.int32(64), requests=np.int64(2))
def test_scalar(joules):
    m = joules()
    assert type(m.workload.n_in) is int

@pytest.mark.energy(n_in=np.array([128, 256]), n_out=np.arange(32, 65, 32))
def test_grid(joules):
    joules()

@pytest.mark.energy(n_in=128, n_out=64)
def test_override(joules):
    joules(n_in=np.int64(256), warmup=np.int64(0))
"""


def test_numpy_integers_and_arrays_are_lengths(proj):
    """Before: `n_in=np.int64(128)` was refused as "must be a positive integer"."""
    proj.makepyfile(test_energy=NUMPY_TESTS)
    result = proj.runpytest("--joules", "--joules-json=r.json", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_grid[[]n_in=256-n_out=64[]] PASSED*"])
    rows = json.loads((proj.path / "r.json").read_text())["results"]
    assert {(r["n_in"], r["n_out"]) for r in rows} >= {(128, 64), (256, 32), (256, 64)}


def test_a_float_length_is_still_refused(proj):
    proj.makepyfile(test_energy="import numpy as np, pytest\n\n@pytest.mark.energy(n_in=np.float64(128), n_out=8)\n"
                                "def test_x(joules):\n    joules()\n")
    result = proj.runpytest("--joules")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*n_in=np.float64(128.0): must be a positive integer*"])


# -- item 14: smaller ones ------------------------------------------------------------------------
@pytest.mark.parametrize("name, problem", [
    ("\x1b[2J\x1b[H", "holds control characters"),
    (5, "must be a non-empty string"),
    ("", "must be a non-empty string"),
    ("a::b", "'::' separates a key's parts"),
])
def test_a_measurement_name_is_printable_text(proj, name, problem):
    """Before: a name with an escape sequence cleared the screen; `name=5` became a key."""
    proj.makepyfile(test_energy=f"import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8)\n"
                                f"def test_x(joules):\n    joules()\n    joules(name={name!r})\n")
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=1)
    assert "\x1b[2J" not in result.stdout.str()
    result.stdout.fnmatch_lines([f"*joules() name=*: {problem}*"])


def test_a_minus_zero_tolerance_reads_as_zero(proj):
    proj.makepyfile(test_energy="import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8)\ndef test_x(joules):\n    joules()\n")
    result = proj.runpytest("--joules", "--joules-tolerance=-0%")
    assert "-0.0%" not in result.stdout.str()
    result.stdout.fnmatch_lines(["joules: engine fake, tolerance 0.0%*"])


def test_a_json_file_with_a_byte_order_mark_is_read(tmp_path):
    """Before: a baseline file saved by a Windows editor (UTF-8 with BOM) was called corrupt."""
    path = tmp_path / "b.json"
    path.write_bytes("\ufeff".encode() + b'{"a": 1}')
    assert load_json(path) == {"a": 1}


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('{"entries": {"t::a": {"rounds": [1]}, "t::a": {"rounds": [2]}}}')
    with pytest.raises(DataError, match="the key 't::a' appears twice in one object"):
        load_json(path)


def test_a_baseline_file_with_a_bom_and_a_duplicate_key_in_the_plugin(proj):
    proj.makepyfile(test_energy="import pytest\n\n@pytest.mark.energy(n_in=16, n_out=8)\ndef test_x(joules):\n    joules()\n")
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=1)
    path = next((proj.path / "baselines").rglob("*.json"))
    text = path.read_text()
    path.write_bytes("\ufeff".encode() + text.encode())
    proj.runpytest("--joules", "--joules-sim-slowdown", "1.5").assert_outcomes(failed=1)  # judged, not "corrupt"
    entry = json.dumps(json.loads(text)["entries"])[1:-1]
    path.write_text(text.replace('"entries": {', '"entries": {' + entry + ", ", 1))
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the key 'test_energy.py::test_x' appears twice in one object*"])


@pytest.mark.parametrize("path, ok", [("x.doc", False), ("x.svg", True), ("x.PNG", True), (".png", False)])
def test_a_plot_path_is_checked_by_its_extension(path, ok):
    from pytest_joules.report.plot import check_plot_path

    if ok:
        check_plot_path(path)
    else:
        with pytest.raises(ConfigError):
            check_plot_path(path)
