"""The drift between sessions through the plugin: what the summary and the results JSON show, a
drifting session at a tight tolerance, one test's regression beyond its session, the session's end,
baselines over several sessions, `joules history --drift`, xdist."""

import json
import math

import pytest

from .plugin_fake import BASELINE, project

#: six tests: enough for the session's common shift (the median of the tests before each one)
GRID = """
import pytest

@pytest.mark.energy(n_in=[128, 256, 512], n_out=[32, 64])
def test_grid(joules):
    joules()
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=GRID)
    p.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=6)
    return p


def doc(proj, name="out.json"):
    return json.loads((proj.path / name).read_text())


def test_summary_and_json_show_the_session_shift_and_the_spread_used(proj, monkeypatch):
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "0.01")
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "session shift +1.0*% (the median of 6 tests' changes); between-session spread 1.00% (prior: no history of "
        "this device yet): a whole-session change within ±*% is drift here; within drift",
        "no drift history of this device yet: record the baselines over several sessions *"])
    d = doc(proj)
    drift = d["session"]["drift"]
    assert drift["shift"] == pytest.approx(0.01, abs=0.002) and drift["status"] == "within drift"
    assert drift["spread"] == {"sd": 0.01, "df": 20.0, "sessions": 0, "source": "prior", "detail": ""}
    assert drift["found_at_end"] == [] and drift["frames"][0]["tests"] == 6
    for i, r in enumerate(d["results"]):
        assert r["verdict"]["status"] == "pass" and r["verdict"]["drift"] == pytest.approx(math.expm1(0.01 * math.sqrt(2)))
        if i < 3:  # passed with the drift in the interval, before three tests made a common shift
            assert r["verdict"]["shift"] is None and "drift between sessions in it" in r["verdict"]["method"]
        else:  # passed against the median of the tests before
            assert r["verdict"]["shift"] == pytest.approx(0.01, abs=0.003) and "beyond the session" in r["verdict"]["method"]
        assert r["drift"]["frame"] == drift["frames"][0]["frame"] and r["drift"]["change"]["sessions"] == 1


def test_a_drifting_session_passes_a_tight_tolerance_and_one_test_beyond_it_fails(proj, monkeypatch):
    """Every test 2.5% dearer is drift at a 2% tolerance; the n_in=512 tests, 5% beyond it, fail."""
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "0.025")
    proj.runpytest("--joules", "--joules-tolerance", "2%").assert_outcomes(passed=6)
    monkeypatch.setenv("FAKE_SLOW_N_IN", "512:1.05")
    result = proj.runpytest("--joules", "--joules-tolerance", "2%", "-rf", "-v")  # -v: the statistics too
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*energy regression +7.6% (tolerance 2%):*", "*test: test_grid?n_in=512-n_out=32?*",
                                 "*+5.0*% beyond the session's common shift, significant: 99.5% CI of the change beyond*"])


def test_without_the_drift_model_the_same_session_fails_everywhere(proj, monkeypatch):
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "0.025")
    proj.runpytest("--joules", "--joules-tolerance", "2%", "--joules-drift", "0").assert_outcomes(failed=6)


def test_a_regression_found_only_at_the_sessions_end_fails_the_session(proj, monkeypatch):
    """The n_in=128 tests run first, with no other tests to tell the drift by: 5% dearer on a 3% cheaper
    day reads +1.9% against the baseline. The session's end sees them 5% beyond their session."""
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "-0.03")
    monkeypatch.setenv("FAKE_SLOW_N_IN", "128:1.05")
    result = proj.runpytest("--joules", "--joules-tolerance", "2%", "--joules-json", "out.json")
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["found at the session's end (its test passed while it ran): energy regression "
                                 "+1.8% (tolerance 2%):*",
                                 "*test: test_energy.py::test_grid?n_in=128-n_out=32?"])  # ? for fnmatch's [
    d = doc(proj)
    assert sorted(d["session"]["drift"]["found_at_end"]) == ["test_energy.py::test_grid[n_in=128-n_out=32]",
                                                            "test_energy.py::test_grid[n_in=128-n_out=64]"]
    statuses = {r["key"].split("[")[1]: r["verdict"]["status"] for r in d["results"]}
    assert statuses == {"n_in=128-n_out=32]": "regression", "n_in=128-n_out=64]": "regression",
                        **{f"n_in={n}-n_out={m}]": "pass" for n in (256, 512) for m in (32, 64)}}


def test_a_whole_session_beyond_the_drift_is_a_regression_of_the_session(proj, monkeypatch):
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "0.03")
    result = proj.runpytest("--joules", "--joules-tolerance", "2%", "--joules-drift", "0.5%")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(["session shift +3.0*% (the median of 6 tests' changes); between-session spread 0.50% "
                                 "(stated with --joules-drift): *; the whole session regressed, beyond the drift"])


def test_baselines_over_several_sessions_measure_the_drift(proj, monkeypatch):
    for seed, offset in ((1, "0.01"), (2, "-0.01")):
        monkeypatch.setenv("FAKE_SESSION_OFFSET", offset)
        proj.runpytest("--joules", "--joules-update-baselines", "--joules-baseline-sessions", "3",
                       "--joules-seed", str(seed)).assert_outcomes(passed=6)
    entries = json.loads((proj.path / BASELINE).read_text())["entries"]
    for entry in entries.values():
        earlier = entry["earlier_sessions"]
        assert len(earlier) == 2 and len({e["session"] for e in earlier} | {entry["session"]}) == 3
    assert len({e["session"] for e in entries.values()}) == 1  # one session recorded them all
    monkeypatch.delenv("FAKE_SESSION_OFFSET")
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=6)
    spread = doc(proj)["session"]["drift"]["spread"]
    assert spread["source"] == "history" and spread["detail"] == "3 baseline sessions" and spread["df"] == 22
    assert 0.008 < spread["sd"] < 0.012  # offsets 0, +1%, -1%: about the prior's 1%
    result.stdout.fnmatch_lines(["*between-session spread *% (from 3 baseline sessions, with the prior)*"])
    # recording a change again with the default (1 session) starts afresh (an unchanged test keeps
    # its entry as it is: quiet diffs)
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-sim-slowdown", "1.2").assert_outcomes(passed=6)
    assert all("earlier_sessions" not in e for e in json.loads((proj.path / BASELINE).read_text())["entries"].values())


def test_history_drift_shows_each_runs_session_shift(proj, monkeypatch, capsys):
    from pytest_joules.cli import main

    for offset in ("0.01", "-0.005", "0.02"):
        monkeypatch.setenv("FAKE_SESSION_OFFSET", offset)
        proj.runpytest("--joules", "--joules-autosave").assert_outcomes(passed=6)
    capsys.readouterr()
    assert main(["history", "--drift", "--storage", str(proj.path / ".joules")]) == 0
    out = capsys.readouterr().out
    assert "FakeGPU 80GB (SIMULATED)" in out and "3 run(s)" in out
    assert "between-session spread in these runs:" in out and "(2 successive difference(s))" in out
    for shift in ("+1.0", "-0.5", "+2.0"):
        assert any(shift in line and "within drift" in line for line in out.splitlines())
    # the next session's spread comes from them
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    assert doc(proj)["session"]["drift"]["spread"]["detail"] == "3 saved runs"
    assert main(["history", "--storage", str(proj.path / ".joules")]) == 2  # neither a TEST nor --drift
    assert "give --drift" in capsys.readouterr().err


def test_xdist_workers_record_one_session_and_the_controller_ends_it(proj, monkeypatch):
    # another seed: every figure changes (unchanged figures would keep their old session)
    result = proj.runpytest_subprocess("--joules", "--joules-update-baselines", "-n", "2", "--joules-seed", "5")
    result.assert_outcomes(passed=6)
    entries = json.loads((proj.path / BASELINE).read_text())["entries"]
    assert len({e["session"] for e in entries.values()}) == 1
    monkeypatch.setenv("FAKE_SESSION_OFFSET", "0.01")
    result = proj.runpytest_subprocess("--joules", "-n", "2", "--joules-json", "out.json")
    result.assert_outcomes(passed=6)
    drift = doc(proj)["session"]["drift"]
    assert drift["frames"][0]["tests"] == 6 and drift["shift"] == pytest.approx(0.01, abs=0.002)
