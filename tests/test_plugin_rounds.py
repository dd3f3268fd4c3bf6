"""`--joules-rounds auto` (the default) and `--joules-max-seconds` through the plugin, the rounds
column, and host-bound readings in the summary."""

import json

import pytest

from .plugin_fake import project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    joules()

@pytest.mark.energy(n_in=256, n_out=32, rounds=5)
def test_fixed(joules):
    joules()
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def results(proj, name="out.json"):
    return {r["name"].split("::")[-1]: r for r in json.loads((proj.path / name).read_text())["results"]}


def test_auto_is_the_default_and_quiet_rounds_stop_at_three(proj):
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-json", "out.json")
    result.assert_outcomes(passed=2)
    got = results(proj)
    assert len(got["test_chat"]["rounds"]) == 3 and got["test_chat"]["rounds_stopped"] == "resolved"
    assert len(got["test_fixed"]["rounds"]) == 5 and got["test_fixed"]["rounds_stopped"] is None  # the marker's number
    result.stdout.fnmatch_lines(["*J/tok*r*nd*", "*test_chat*128*64*  3 *", "*test_fixed*256*32*  5 *"])


def test_noisy_rounds_take_more_rounds_until_the_verdict_is_known(proj, monkeypatch):
    monkeypatch.setenv("FAKE_JITTER", "0.08")
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-json", "base.json").assert_outcomes(passed=2)
    recorded = results(proj, "base.json")["test_chat"]
    assert len(recorded["rounds"]) > 3  # a baseline is measured until its median is known to T/2
    # no drift between sessions (--joules-drift 0): the rounds alone decide when to stop
    result = proj.runpytest("--joules", "--joules-json", "out.json", "-k", "chat", "--joules-drift", "0")
    result.assert_outcomes(passed=1)
    now = results(proj)["test_chat"]
    assert len(now["rounds"]) > 3 and now["rounds_stopped"] == "resolved"
    assert now["verdict"]["status"] == "pass" and now["confidence"] == pytest.approx(0.995)
    assert "99.5% CI of the change" in now["verdict"]["detail"]


def test_a_fixed_number_of_rounds_keeps_todays_behaviour(proj, monkeypatch):
    monkeypatch.setenv("FAKE_JITTER", "0.08")
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-rounds", "3", "--joules-json", "out.json",
                   "-k", "chat").assert_outcomes(passed=1)
    got = results(proj)["test_chat"]
    assert len(got["rounds"]) == 3 and got["rounds_stopped"] is None and got["confidence"] == 0.95


def test_the_budget_ends_an_unresolved_test_as_noisy_and_says_so(proj, monkeypatch):
    proj.runpytest("--joules", "--joules-update-baselines", "-k", "chat").assert_outcomes(passed=1)
    monkeypatch.setenv("FAKE_JITTER", "0.5")
    # the fake's rounds last about 4 ms: a 20 ms budget holds a handful
    result = proj.runpytest("--joules", "--joules-max-seconds", "0.02", "--joules-json", "out.json", "-k", "chat")
    result.assert_outcomes(passed=1)
    got = results(proj)["test_chat"]
    assert got["rounds_stopped"] == "budget" and got["verdict"]["status"] == "noisy"
    assert 3 <= len(got["rounds"]) and sum(r["seconds"] for r in got["rounds"]) <= 0.02
    result.stdout.fnmatch_lines(["*too noisy to judge*", "*test_chat*(stopped: budget)*"])


def test_a_regression_is_caught_in_auto_mode(proj):
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=2)
    result = proj.runpytest("--joules", "--joules-engine-option", "slowdown=1.10", "-k", "chat")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance *): test_chat:*", "*beyond the noise*"])
    assert "99.5% CI" not in result.stdout.str()  # the statistics at -v (and in the JSON)
    result = proj.runpytest("--joules", "--joules-engine-option", "slowdown=1.10", "-k", "chat", "-v")
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance *): test_chat:*", "*statistics: *99.5% CI*"])


@pytest.mark.parametrize("args,message", [
    (["--joules-rounds", "many"], "--joules-rounds: invalid value 'many': give auto*or a positive integer*"),
    (["--joules-rounds", "0"], "--joules-rounds: invalid value '0'*"),
    (["--joules-max-seconds", "0"], "--joules-max-seconds: invalid value '0': give a number greater than 0*"),
    (["--joules-max-seconds", "soon"], "--joules-max-seconds: invalid value 'soon'*"),
])
def test_bad_rounds_options_are_usage_errors(proj, args, message):
    result = proj.runpytest("--joules", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_the_marker_takes_rounds_auto_and_refuses_nonsense(proj):
    proj.makepyfile(test_auto="""
        import pytest

        @pytest.mark.energy(n_in=64, n_out=64, rounds="auto")
        def test_auto(joules):
            assert len(joules().rounds) == 3  # quiet rounds resolve at the first look

        def test_override(joules):
            assert len(joules(n_in=64, n_out=64, rounds=2).rounds) == 2
            assert joules(n_in=64, n_out=32, rounds="auto").stopped == "resolved"
    """)
    proj.runpytest("--joules", "test_auto.py", "--joules-rounds", "4").assert_outcomes(passed=2)
    proj.makepyfile(test_bad="""
        import pytest

        @pytest.mark.energy(n_in=64, n_out=64, rounds="lots")
        def test_bad(joules):
            joules()
    """)
    result = proj.runpytest("--joules", "test_bad.py")
    result.stdout.fnmatch_lines(["*test_bad: @pytest.mark.energy rounds='lots': must be a positive integer or 'auto'*"])


def test_host_bound_readings_are_marked_with_the_fix(pytester):
    """The simulated tiny model waits for the host on every step, like a small model on an engine
    without CUDA graphs: the summary marks it and says what to change."""
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                     "-W ignore::pytest.PytestAssertRewriteWarning\njoules_model = tiny-gqa\n"
                     "joules_engine_options = noise=0\n")
    pytester.makepyfile(test_energy="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_small(joules):
            joules()
    """)
    result = pytester.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_small*‡*", "*‡ host-bound: the GPU mostly waited for the host*CUDA graphs*",
                                 "*test_small: GPU busy *% of the window*"])
    record = json.loads((pytester.path / "out.json").read_text())["results"][0]
    assert record["host_bound"] is True and record["gpu_util"] < 0.5
