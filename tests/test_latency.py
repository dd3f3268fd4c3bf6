"""Latency beside energy: the figures (latency.py), the sim's per-request replay, the measurement
path, the results JSON, the summary column, `joules compare`, the exporters and the latency gate."""

from __future__ import annotations

import json

import pytest

from pytest_joules.measure import latency as L
from pytest_joules.engines.base import EngineSpec
from pytest_joules.engines.sim import create as sim
from pytest_joules.measure import measure
from pytest_joules.store.results import measurement_to_dict
from pytest_joules.engines.workload import EngineRun, Workload

from .fakes import FakeEngine, FakeMeter


def test_percentile_interpolates_like_numpy():
    assert L.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert L.percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        L.percentile([], 50)


def test_round_and_measurement_figures():
    runs = [EngineRun([8, 8], [4, 4], 2.0, ttft_s=[0.1, 0.3], tpot_s=[0.01, 0.03]),
            EngineRun([8, 8], [4, 4], 2.0, ttft_s=[0.2, 0.4], tpot_s=[0.02, 0.04])]
    lat = L.round_latency(runs)
    assert lat["ttft_s"] == pytest.approx(0.25) and lat["tpot_s"] == pytest.approx(0.025)
    assert lat["tpot_p90_s"] == pytest.approx(0.037) and lat["out_tok_per_s"] == pytest.approx(16 / 4.0)
    none = L.round_latency([EngineRun([8], [4], 1.0)])  # an engine that knows only its time
    assert none == {"ttft_s": None, "tpot_s": None, "tpot_p90_s": None, "out_tok_per_s": 4.0}


def test_the_gate_judges_medians_with_slower_positive():
    base = {"ttft_s": 0.100, "tpot_s": 0.010, "out_tok_per_s": 100.0}
    assert L.regression({"ttft_s": 0.105, "tpot_s": 0.0105, "out_tok_per_s": 96.0}, base, 0.10) is None
    message = L.regression({"ttft_s": 0.100, "tpot_s": 0.0125, "out_tok_per_s": 80.0}, base, 0.10)
    assert message == ("latency regression beyond 10.0%: TPOT 10 -> 12.5 ms (+25.0% slower), "
                       "output tok/s 100 -> 80 (+25.0% slower)")
    assert L.regression({"ttft_s": 0.5}, None, 0.1) is None  # no baseline latency: nothing to judge
    assert L.cell({"ttft_s": 0.0412, "tpot_s": 0.0031}) == "41.2/3.1" and L.cell(None) == "—"


@pytest.mark.parametrize("runtime", ["graphs", "eager"])
@pytest.mark.parametrize("w", [Workload(512, 256), Workload(512, 64, requests=40),
                               Workload(2048, 32, requests=300, max_batch_size=64), Workload(100, 1, requests=3),
                               Workload(4096, 16, requests=5)])
def test_the_sim_replays_its_scheduler_for_each_requests_latency(runtime, w):
    engine = sim(EngineSpec(name="sim", options={"noise": 0, "runtime": runtime}))
    run = engine.run(w)  # device.run asserts the replay took the scheduler's steps
    assert len(run.ttft_s) == w.requests and len(run.tpot_s) == (w.requests if w.n_out > 1 else 0)
    assert run.ttft_s == sorted(run.ttft_s)  # admitted in order: a later request never gets its first token earlier
    assert 0 < run.ttft_s[0] and max(run.ttft_s) <= run.seconds * (1 + 1e-12)
    if w.requests == 1:  # one request: its first token, then n_out - 1 steps, make the whole run
        assert run.ttft_s[0] + run.tpot_s[0] * (w.n_out - 1) == pytest.approx(run.seconds)


def test_measure_keeps_latency_per_round_and_in_the_results_json():
    class Timed(FakeEngine):
        def run(self, workload):
            run = super().run(workload)
            run.ttft_s = [0.05] * workload.requests
            run.tpot_s = [0.01] * workload.requests
            return run

    engine = Timed()
    m = measure(engine, FakeMeter(engine), Workload(16, 10, requests=3), rounds=3)
    assert all(r.latency["ttft_s"] == pytest.approx(0.05) for r in m.rounds)
    record = measurement_to_dict(m)
    assert record["latency"] == pytest.approx({"ttft_s": 0.05, "tpot_s": 0.01, "tpot_p90_s": 0.01,
                                               "out_tok_per_s": 100.0})
    assert record["rounds"][0]["latency"]["tpot_s"] == pytest.approx(0.01)
    json.dumps(record)


SIM_TESTS = """
import pytest

@pytest.mark.energy(n_in=512, n_out=128, requests=8)
def test_batch(joules):
    joules()
"""


@pytest.fixture
def sim_project(pytester, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # this checkout's plugin
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                     "-p no:xdist\n")
    pytester.makepyfile(test_energy=SIM_TESTS)
    return pytester


def test_the_summary_shows_latency_and_the_gate_fails_a_slower_run(sim_project, monkeypatch):
    monkeypatch.setenv("COLUMNS", "130")
    args = ["--joules", "--joules-seed", "3", "--joules-engine-option", "noise=0", "--joules-rounds", "2"]
    first = sim_project.runpytest_subprocess(*args, "--joules-update-baselines", "--joules-json", "a.json")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*J/tok*TTFT/TPOT*out tok/s*", "*TTFT/TPOT: median ms to the first token*"])
    doc = json.loads((sim_project.path / "a.json").read_text())
    assert doc["results"][0]["latency"]["tpot_s"] > 0
    stored = json.loads(next((sim_project.path / "baselines").rglob("*.json")).read_text())
    assert next(iter(stored["entries"].values()))["latency"]["tpot_s"] == pytest.approx(doc["results"][0]["latency"]["tpot_s"])
    # 30% slower: within a 50% energy tolerance, beyond a 10% latency tolerance
    slow = sim_project.runpytest_subprocess(*args, "--joules-sim-slowdown", "1.3", "--joules-tolerance", "50%",
                                            "--joules-latency-tolerance", "10%")
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*test_batch: latency regression beyond 10.0%: TTFT * ms (+30.0% slower), "
                               "TPOT * ms (+30.0% slower)*", "*latency regressions (--joules-latency-tolerance) (1):*"])
    assert "Traceback" not in slow.stdout.str()
    sim_project.runpytest_subprocess(*args, "--joules-tolerance", "50%", "--joules-latency-tolerance", "10%"
                                     ).assert_outcomes(passed=1)


def test_compare_shows_latency_changes_and_gates_them(tmp_path, capsys):
    from pytest_joules.cli import main

    from pytest_joules.meters.base import MeterSpec
    from pytest_joules.meters.sim import create as sim_meter
    from pytest_joules.store.results import write_results

    w = Workload(256, 64, requests=4)
    found = []
    for slowdown in (1.0, 1.2):  # the same simulated GPU, 20% slower
        engine = sim(EngineSpec(name="sim", options={"noise": 0, "slowdown": slowdown}))
        found.append(measure(engine, sim_meter(MeterSpec("sim"), engine), w, rounds=3, name="t"))
    old, new = found
    write_results(tmp_path / "old.json", [old])
    write_results(tmp_path / "new.json", [new])
    code = main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--tolerance", "50%",
                 "--latency-tolerance", "10%", "--fail"])
    out = capsys.readouterr().out
    assert code == 1 and "TTFT Δ" in out and "TPOT Δ" in out and "t: latency regression beyond 10.0%" in out
    main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"][0]["latency_change"]["tpot_s"] > 0.1 and doc["results"][0]["new_latency"]["ttft_s"] > 0


def test_exporters_carry_latency():
    from pytest_joules import exporters

    engine = FakeEngine()

    class Timed(FakeEngine):
        def run(self, workload):
            run = super().run(workload)
            run.ttft_s, run.tpot_s = [0.02] * workload.requests, [0.004] * workload.requests
            return run

    engine = Timed()
    m = measure(engine, FakeMeter(engine), Workload(16, 10), rounds=3, name="t")
    bmf = exporters.bmf_json([m])["t"]
    assert bmf["ttft-ms"]["value"] == pytest.approx(20.0) and bmf["tpot-ms"]["value"] == pytest.approx(4.0)
    assert "TTFT 20 ms, TPOT 4 ms (p90 4 ms)" in exporters.gab_json([m])[0]["extra"]
    assert "| TTFT/TPOT ms |" in exporters.markdown_summary([m]) and "| 20/4 |" in exporters.markdown_summary([m])
    props = dict(exporters.junit_properties(m))
    assert props["joules_tpot_s"] == pytest.approx(0.004)
