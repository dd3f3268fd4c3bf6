"""Mixes, arrivals and text prompts through the plugin, end to end on the simulated device."""

import json
import shutil
from pathlib import Path

import pytest

from . import plugin_fake  # noqa: F401  (preloads what inner runs import lazily)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.model.json"

TESTS = """
import pytest

@pytest.mark.energy(mix="mixes/chat.csv", requests=16)
def test_at_once(joules):
    m = joules()
    assert m.workload.requests == 16 and m.j_per_request > 0

@pytest.mark.energy(mix=[(128, 256, 3), (1024, 64, 1)], requests=32, rate=4)
def test_rate(joules):
    m = joules()
    assert m.latency_percentiles["ttft_p50_s"] > 0

@pytest.mark.energy(n_in=512, n_out=128, requests=32, concurrency=16)
def test_users(joules):
    joules()
    joules(concurrency=4, name="fewer users")
"""

CHAT = "n_in,n_out\n" + "".join(f"{n},{m}\n" for n, m in [(128, 256), (200, 300), (64, 512), (600, 128)] * 5)


@pytest.fixture
def proj(pytester):
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                     "-W ignore::pytest.PytestAssertRewriteWarning\njoules_engine_options = noise=0\n")
    pytester.makepyfile(test_traffic=TESTS)
    (pytester.path / "mixes").mkdir()
    (pytester.path / "mixes/chat.csv").write_text(CHAT)
    (pytester.path / "baselines/h100-sxm-simulated").mkdir(parents=True)
    shutil.copy(MODEL, pytester.path / "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.model.json")
    return pytester


def test_mixes_and_arrivals_are_measured_recorded_and_judged(proj):
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-json", "out.json")
    result.assert_outcomes(passed=3)
    doc = json.loads((proj.path / "out.json").read_text())
    rows = {r["name"].split("::", 1)[1]: r for r in doc["results"]}
    at_once = rows["test_at_once"]
    assert at_once["traffic"]["mix"].startswith("chat#") and at_once["traffic"]["distinct"] == 4
    assert at_once["prediction"] is not None  # requests=16 at once: the model's batching
    assert rows["test_rate"]["traffic"]["arrival"] == "rate=4/s" and rows["test_rate"]["prediction"] is None
    assert rows["test_rate"]["model_batching"] == "requests=16"  # Poisson arrivals: no batching the model knows
    assert rows["test_users"]["prediction"] is not None  # 16 users: 16 in flight, as the model assumes
    assert rows["test_users::fewer users"]["model_batching"] == "requests=16"
    assert set(rows["test_users"]["traffic"]["latency"]) >= {"ttft_p50_s", "tpot_p99_s", "e2e_p90_s"}
    stored = json.loads((proj.path / "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.json").read_text())["entries"]
    assert stored["test_traffic.py::test_at_once"]["workload"]["mix"] == at_once["traffic"]["mix"]
    assert stored["test_traffic.py::test_rate"]["workload"]["arrival"] == "rate=4/s"
    again = proj.runpytest("--joules", "-rA")
    again.assert_outcomes(passed=3)
    assert " new" not in again.stdout.str()
    assert "~" in again.stdout.str()  # a mix's mean lengths


def test_fit_skips_mixes_and_arrivals_saying_why(proj, capsys):
    from pytest_joules.cli import main

    proj.runpytest("--joules", "--joules-json", "out.json").assert_outcomes(passed=3)
    capsys.readouterr()
    assert main(["fit", str(proj.path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "its 4 valid result(s) are length mixes or arrivals, not points of the per-point model" in err


def test_a_changed_mix_file_is_another_workload(proj):
    proj.runpytest("--joules", "--joules-update-baselines", "-k", "at_once").assert_outcomes(passed=1)
    (proj.path / "mixes/chat.csv").write_text(CHAT + "4000,16\n")
    result = proj.runpytest("--joules", "-k", "at_once", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline was recorded for another workload (mean n_in=* mix=chat#*); record it again*"])


def test_an_engine_that_runs_requests_at_once_refuses_arrivals_in_one_line(proj):
    result = proj.runpytest("--joules", "--joules-engine-option", "runtime=eager", "-k", "rate")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_rate*rate=4/s: engine 'sim' cannot serve requests over time (runtime=eager runs "
                                 "static batches like transformers' generate); use --joules-engine sim*"])


@pytest.mark.parametrize("marker, words", [
    ('mix="mixes/none.csv"', "mix file mixes/none.csv: cannot read it"),
    ('mix="mixes/empty.csv"', "mix file mixes/empty.csv: is empty"),
    ('mix=[(128, 64, 0)]', "mix[0]: weight 0 must be a positive number"),
    ('mix=[(128, 64)], n_in=128', "mix= and n_in= both given"),
    ('n_in=128, n_out=64, rate=0', "rate=0: must be a positive number of requests per second"),
    ('n_in=128, n_out=64, rate=2, concurrency=4', "give one"),
    ('n_in=128, n_out=64, concurrency=-1', "concurrency=-1: must be a positive number of users"),
    ('n_in=128, n_out=64, prompts="nope.jsonl"', "prompts file nope.jsonl: cannot read it"),
])
def test_bad_traffic_in_a_marker_is_a_collection_error_naming_it(pytester, marker, words):
    pytester.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.energy({marker})
        def test_it(joules):
            joules()
        """)
    (pytester.path / "mixes").mkdir()
    (pytester.path / "mixes/empty.csv").write_text("")
    result = pytester.runpytest("-p", "no:cacheprovider")  # without --joules: every run checks markers
    result.assert_outcomes(errors=1)
    assert words in result.stdout.str() or pytest.fail(result.stdout.str())
    assert "Traceback" not in result.stdout.str()


def test_lengths_beyond_the_context_and_too_short_prompts_fail_in_one_line(proj):
    proj.makepyfile(test_limits="""
        import pytest

        @pytest.mark.energy(mix=[(128, 64, 9), (1500, 1000, 1)], requests=10)
        def test_too_long(joules):
            joules()

        @pytest.mark.energy(n_in=512, n_out=16, requests=2, prompts="prompts.jsonl")
        def test_text(joules):
            joules()
            joules(n_in=1700, name="too long for the file")
        """)
    (proj.path / "prompts.jsonl").write_text('{"prompt": "' + "word " * 160 + '"}\n')  # 200 tokens by the sim's rule
    result = proj.runpytest("--joules", "--joules-model", "tiny-gqa", "test_limits.py")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*test_too_long: mix=inline#*: its longest request: n_in + n_out = 1500 + 1000 = 2500 exceeds*2048 positions*",
        "*test_text: prompts file prompts.jsonl: 200 tokens in all, so n_in=1700 would repeat it 9 times (at most 8)*",
    ])


def test_compare_matches_a_mix_only_with_the_same_mix(proj, capsys):
    from pytest_joules.cli import main

    proj.runpytest("--joules", "-k", "at_once", "--joules-json", "old.json").assert_outcomes(passed=1)
    capsys.readouterr()
    assert main(["compare", str(proj.path / "old.json"), str(proj.path / "old.json"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1
    (proj.path / "mixes/chat.csv").write_text(CHAT + "4000,16\n")
    proj.runpytest("--joules", "-k", "at_once", "--joules-json", "new.json").assert_outcomes(passed=1)
    capsys.readouterr()
    assert main(["compare", str(proj.path / "old.json"), str(proj.path / "new.json"), "--json"]) == 2
    assert "nothing to compare" in capsys.readouterr().err  # another mix: another workload
