"""End to end on the simulated device (the default engine), and the examples/ suite as shipped."""

import json
from pathlib import Path

import pytest

from . import plugin_fake  # noqa: F401  (preloads what inner runs import lazily)

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
import pytest

@pytest.mark.energy(n_in=256, n_out=64, requests=4)
def test_reply(joules):
    m = joules()
    assert m.simulated and m.j_per_out_token > 0

@pytest.mark.energy(n_in=[512, 2000], n_out=64)
def test_long(joules):
    joules()
"""


@pytest.fixture
def proj(pytester):
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                     "-W ignore::pytest.PytestAssertRewriteWarning\njoules_model = tiny-gqa\n"
                     # tiny shapes wait for the host on every step (host-bound, noisy: see
                     # test_sim_noise.py); these tests are about the plugin, so the device is exact
                     "joules_engine_options = noise=0\n")
    pytester.makepyfile(test_energy=TESTS)
    return pytester


def test_the_default_engine_is_the_simulated_h100_and_says_so(proj):
    result = proj.runpytest("--joules", "--joules-update-baselines")
    # tiny-gqa holds 2048 positions: 2000 + 64 cannot run, an error at setup naming the point
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_long[[]n_in=2000-n_out=64[]]: n_in=2000-n_out=64: n_in + n_out = 2000 + 64 = 2064 exceeds*2048 positions*"]
    )
    result.stdout.fnmatch_lines(["*joules: engine sim (SIMULATED)*", "*SIMULATED device*", "*H100-SXM (SIMULATED), 700 W*sim tiny-gqa bf16*"])
    data = json.loads((proj.path / "baselines/h100-sxm-simulated/sim-tiny-gqa-bf16-graphs.json").read_text())
    assert data["fingerprint"]["device"]["simulated"] is True and len(data["entries"]) == 2


def test_a_sim_regression_fails_and_passes_again_after_an_update(proj):
    proj.runpytest("--joules", "--joules-update-baselines", "-k", "reply").assert_outcomes(passed=1)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "-k", "reply")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance 5%): test_reply: J/output-token baseline *"])
    proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "-k", "reply", "--joules-update-baselines").assert_outcomes(passed=1)
    proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "-k", "reply").assert_outcomes(passed=1)


def test_another_simulated_gpu_gets_its_own_baselines(proj):
    proj.runpytest("--joules", "--joules-update-baselines", "-k", "reply").assert_outcomes(passed=1)
    result = proj.runpytest("--joules", "--joules-gpu", "A100-SXM-80GB", "-k", "reply", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*new (no baseline yet*"])


def test_the_examples_pass_out_of_the_box_and_fail_on_a_slowdown(pytester):
    """`pytest --joules examples/` against the committed baselines and model (writes nothing)."""
    before = {p: p.read_bytes() for p in (ROOT / "baselines").rglob("*.json")}
    args = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest", "-p", "no:anyio",
            "-W", "ignore::pytest.PytestAssertRewriteWarning", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
            "--joules", str(ROOT / "examples")]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=16)
    out = result.stdout.str()
    assert "SIMULATED" in out and "Sweet spots" in out and "session MAPE" in out
    assert " new" not in out  # every example has its committed baseline
    # realistic noise differs from run to run, like a GPU's: other seeds pass too ...
    for seed in ("7", "8"):
        pytester.runpytest(*args, "--joules-seed", seed).assert_outcomes(passed=16)
    # ... and a 10% slowdown fails every test
    result = pytester.runpytest(*args, "--joules-sim-slowdown", "1.10")
    result.assert_outcomes(failed=16)
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance 5%): test_chat_turn: J/output-token baseline *"])
    assert {p: p.read_bytes() for p in (ROOT / "baselines").rglob("*.json")} == before


def test_a_marked_test_that_never_measures_is_warned_about(proj):
    proj.makepyfile(
        test_forgot="""
        import pytest

        @pytest.mark.energy(n_in=256, n_out=64)
        def test_forgot(joules):
            pass
        """
    )
    result = proj.runpytest("--joules", "test_forgot.py")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*test_forgot is marked @pytest.mark.energy but never called joules(): nothing was measured*"])


def test_a_call_that_fails_is_not_reported_as_never_called(proj):
    proj.makepyfile(
        test_called="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_too_long(joules):
            joules(n_in=200000)

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_bad_override(joules):
            joules(rounds=0)
        """
    )
    result = proj.runpytest("--joules", "test_called.py")
    result.assert_outcomes(failed=2)
    assert "never called joules()" not in result.stdout.str()
