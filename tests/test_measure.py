import pytest

from pytest_joules.errors import ConfigError, WorkloadMismatch
from pytest_joules.measure import measure
from pytest_joules.engines.workload import Workload

from .fakes import FakeEngine, FakeMeter


def test_measure_reports_energy_per_output_token():
    engine = FakeEngine(watts=200.0, seconds_per_token=0.01)
    m = measure(engine, FakeMeter(engine), Workload(16, 10, requests=3), rounds=3)
    # 0.01 s/token at 200 W = 2 J per output token, exactly.
    assert m.j_per_out_token == pytest.approx(2.0)
    assert m.tokens_per_joule == pytest.approx(0.5)
    assert m.avg_watts == pytest.approx(200.0)
    assert m.joules == pytest.approx(2.0 * 30)
    assert m.seconds == pytest.approx(0.3)
    assert m.spread == pytest.approx(0.0)
    assert len(m.rounds) == 3 and m.valid and not m.dry_run
    assert engine.runs == 4  # one warm-up + three rounds


def test_short_runs_repeat_until_the_window_is_long_enough():
    engine = FakeEngine(seconds_per_token=0.01)
    m = measure(engine, FakeMeter(engine, min_window_s=1.0), Workload(8, 10), rounds=2, warmup=0)
    # each run lasts 0.1 s, so a 1 s window needs 10 of them (float sums may need an 11th)
    assert all(r.reps in (10, 11) for r in m.rounds)
    assert all(r.seconds >= 1.0 for r in m.rounds)
    assert m.j_per_out_token == pytest.approx(1.0)  # 0.01 s * 100 W, whatever the reps


def test_window_edges_sync_the_device():
    engine = FakeEngine()
    measure(engine, FakeMeter(engine), Workload(8, 4), rounds=2, warmup=0)
    assert engine.syncs == 4  # before and after each window


def test_invalid_readings_are_never_results():
    engine = FakeEngine()
    m = measure(engine, FakeMeter(engine, invalid=True), Workload(8, 4), rounds=2)
    assert not m.valid
    assert m.j_per_out_token is None
    assert "zero delta" in m.problems
    with pytest.raises(AssertionError, match="no valid measurement: zero delta"):
        m.assert_no_regression()


def test_an_engine_that_generates_too_few_tokens_is_an_error():
    engine = FakeEngine(short_by=1)
    with pytest.raises(WorkloadMismatch, match="generated \\[3\\] tokens, asked for exactly 4"):
        measure(engine, FakeMeter(engine), Workload(8, 4))


def test_workload_beyond_the_engine_positions_is_refused_before_running():
    engine = FakeEngine(max_positions=100)
    with pytest.raises(ConfigError, match="exceeds fake's maximum of 100"):
        measure(engine, FakeMeter(engine), Workload(90, 20))
    assert engine.runs == 0


def test_rounds_must_be_positive():
    engine = FakeEngine()
    with pytest.raises(ValueError, match="rounds"):
        measure(engine, FakeMeter(engine), Workload(8, 4), rounds=0)


def test_assert_helpers_compare_with_baseline_and_model():
    engine = FakeEngine(watts=100.0, seconds_per_token=0.01)
    m = measure(engine, FakeMeter(engine), Workload(8, 4), rounds=3, name="t")
    assert m.assert_no_regression().status == "new"
    m.baseline_rounds = [1.0, 1.0, 1.0]
    assert m.assert_no_regression(0.05).status == "pass"
    m.baseline_rounds = [0.9, 0.9, 0.9]  # now is 11% above
    with pytest.raises(AssertionError, match=r"^energy regression \+11\.1% \(tolerance 5%\): t: J/output-token baseline 0\.900, now 1\.00\n"):
        m.assert_no_regression(0.05)
    with pytest.raises(AssertionError, match="no fitted model"):
        m.assert_matches_model()
    m.prediction, m.model_name = 1.05, "memflops"
    assert m.assert_matches_model(0.10) == pytest.approx(0.05 / 1.05)
    with pytest.raises(AssertionError, match="from the memflops prediction"):
        m.assert_matches_model(0.01)
    # percentages as the marker and --joules-tolerance take them
    assert m.assert_matches_model("10%") == pytest.approx(0.05 / 1.05)
    with pytest.raises(AssertionError, match="from the memflops prediction"):
        m.assert_matches_model("1%")
    with pytest.raises(AssertionError, match=r"^energy regression \+11\.1% \(tolerance 5%\)"):
        m.assert_no_regression("5%")
    m.baseline_rounds = [1.0, 1.0, 1.0]
    assert m.assert_no_regression("5%").status == "pass"


def test_a_failing_run_closes_the_window_it_opened():
    engine = FakeEngine(short_by=1)
    meter = FakeMeter(engine)
    with pytest.raises(WorkloadMismatch):
        measure(engine, meter, Workload(8, 4), warmup=0)
    assert meter._start is None  # end() was called: no window (or sampling thread) left open
