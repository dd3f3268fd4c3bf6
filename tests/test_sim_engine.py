"""The `sim` engine and meter through their public interfaces: the registry, `measure`, EngineRun."""

from __future__ import annotations

import statistics

import pytest

from pytest_joules import registry
from pytest_joules.engines.base import Engine, EngineSpec
from pytest_joules.errors import ConfigError
from pytest_joules.measure import measure
from pytest_joules.meters.base import Meter, MeterSpec
from pytest_joules.engines.workload import Workload

from .fakes import FakeEngine


def sim(**spec) -> Engine:
    options = spec.pop("options", {})
    return registry.make_engine(EngineSpec("sim", options=options, **spec))


def sim_meter(engine, **options) -> Meter:
    return registry.make_meter(MeterSpec("sim", options), engine)


# -- the engine ------------------------------------------------------------------------------------

def test_defaults_and_identity():
    engine = sim()
    assert isinstance(engine, Engine)
    assert (engine.kind, engine.simulated, engine.default_meter) == ("sim", True, "sim")
    assert engine.identity() == {"kind": "sim", "model": "Llama-3.1-8B", "dtype": "bf16", "version": "sim-3",
                                 "runtime": "graphs"}
    assert engine.max_positions == 131072
    assert engine.devices()[0].name == "SIMULATED H100-SXM"


def test_run_reports_exact_token_counts_simulated_seconds_and_phases():
    w = Workload(n_in=300, n_out=77, requests=5, max_batch_size=2)
    run = sim().run(w)
    run.verify(w, "sim")
    assert run.input_tokens == [300] * 5 and run.output_tokens == [77] * 5
    assert set(run.phases) == {"prefill_s", "decode_s", "prefill_j", "decode_j"}
    assert run.seconds == pytest.approx(run.phases["prefill_s"] + run.phases["decode_s"])
    assert run.info["joules"] == pytest.approx(run.phases["prefill_j"] + run.phases["decode_j"])
    assert run.info["concurrency"] == 2
    assert 1 < run.info["mean_batch"] <= 2


def test_in_flight_batching_runs_every_request_to_the_end():
    """3 waves of at most 2: the step count is what the scheduler must take (prefill steps yield
    the first token, then n_out - 1 decode steps per wave)."""
    run = sim().run(Workload(n_in=64, n_out=10, requests=5, max_batch_size=2))
    assert run.info["steps"] == 3 * 10


def test_same_seed_same_numbers_whatever_ran_before():
    """Each workload has its own noise stream: a test's numbers do not depend on which tests ran
    before it (past the first run after the model loads, which is slower on any engine)."""
    w = Workload(n_in=256, n_out=128, requests=4)
    fresh = sim()
    fresh.run(Workload(n_in=32, n_out=8))  # the slow first run
    fresh = fresh.run(w)
    busy = sim()
    busy.run(Workload(n_in=64, n_out=64))
    busy.run(Workload(n_in=1024, n_out=32, requests=3))
    after_others = busy.run(w)
    assert (after_others.seconds, after_others.info["joules"]) == (fresh.seconds, fresh.info["joules"])


def test_repeats_and_seeds_give_different_but_close_numbers():
    w = Workload(n_in=256, n_out=128, requests=4)
    engine = sim()
    engine.run(w)  # the slow first run after loading
    joules = [engine.run(w).info["joules"] for _ in range(30)]
    assert len(set(joules)) == 30  # seeded noise, not a constant
    # the optimised runtime is GPU-bound: its runs vary by well under 1%
    assert statistics.stdev(joules) / statistics.mean(joules) < 0.01
    other = sim(options={"seed": 7})
    other.run(w)
    other_seed = other.run(w).info["joules"]
    assert other_seed != joules[0]
    assert other_seed == pytest.approx(joules[0], rel=0.02)


def test_slowdown_makes_time_and_energy_grow_by_that_factor():
    w = Workload(n_in=512, n_out=256, requests=8)
    base, slow = sim(), sim(options={"slowdown": 1.1})
    m_base = measure(base, sim_meter(base), w, rounds=3)
    m_slow = measure(slow, sim_meter(slow), w, rounds=3)
    assert m_slow.j_per_out_token / m_base.j_per_out_token == pytest.approx(1.10, abs=0.015)
    assert m_slow.seconds / m_base.seconds == pytest.approx(1.10, abs=0.015)
    assert m_slow.device["slowdown"] == 1.1
    m_slow.baseline_rounds = m_base.round_values
    with pytest.raises(AssertionError, match="energy"):
        m_slow.assert_no_regression(0.05)


def test_point_beyond_max_positions_is_named():
    engine = sim(model="OPT-6.7B")
    with pytest.raises(ConfigError, match=r"2000 \+ 100 = 2100 exceeds .*OPT-6.7B.*2048"):
        engine.run(Workload(n_in=2000, n_out=100))
    with pytest.raises(ConfigError, match="2100"):
        measure(engine, sim_meter(engine), Workload(n_in=2000, n_out=100))


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"model": "GPT-5"}, "unknown simulated model 'GPT-5'; known models: Llama-3.2-1B"),
        ({"gpu": "RTX 4090"}, "unknown simulated GPU 'RTX 4090'; known GPUs: H100-SXM, H100-PCIe, H200, A100-SXM-80GB"),
        ({"dtype": "fp8"}, "16-bit inference only"),
        ({"options": {"slowdwn": 1.1}}, "unknown sim engine option.*'slowdwn'.*slowdown, seed"),
        ({"options": {"slowdown": 0}}, "slowdown must be a positive number"),
        ({"options": {"slowdown": -1.0}}, "slowdown must be a positive number"),
        ({"options": {"slowdown": "fast"}}, "'slowdown' must be a number"),
        ({"options": {"slowdown": True}}, "'slowdown' must be a number"),
        ({"options": {"seed": -1}}, "seed must be a non-negative integer"),
        ({"options": {"seed": 1.5}}, "'seed' must be an integer"),
        ({"options": {"runtime": "cuda"}}, "unknown sim runtime 'cuda'; use graphs .* or eager"),
        ({"options": {"noise": -1}}, "noise must be a number from 0 to 10"),
        ({"options": {"noise": "lots"}}, "'noise' must be a number"),
    ],
)
def test_bad_configuration_is_a_config_error_naming_the_fix(spec, message):
    with pytest.raises(ConfigError, match=message):
        sim(**spec)


def test_options_from_ini_strings_are_accepted():
    engine = sim(options={"slowdown": "1.25", "seed": "3"})
    assert engine.sim_device.slowdown == 1.25 and engine.sim_device.seed == 3


# -- the meter -------------------------------------------------------------------------------------

def test_meter_reads_what_the_engine_spent_to_within_its_tick_bound():
    """The counter moves every 100 ms; windows aligned to its ticks read the work's energy to
    within the recorded bound, a tiny fraction of one tick's energy."""
    engine = sim()
    meter = sim_meter(engine)
    assert isinstance(meter, Meter) and meter.min_window_s == 1.0
    meter.begin()
    runs = [engine.run(Workload(128, 64, requests=2)) for _ in range(3)]
    reading = meter.end()
    assert reading.valid and reading.problems == [] and reading.info["aligned"] is True
    spent = sum(r.info["joules"] for r in runs)
    bound = reading.info["tick_bound_j"]
    assert abs(reading.total_joules - spent) <= bound + 1e-3  # the counter's 1 mJ resolution
    assert bound < 0.05 * 0.1 * 700  # well under a twentieth of a tick at full power
    assert reading.seconds == pytest.approx(sum(r.seconds for r in runs), abs=2e-3)  # poll latency
    assert 0 < reading.info["gpu_util"] <= 1
    info = meter.device_info()
    assert info["simulated"] is True and info["gpu"] == "H100-SXM" and info["board_watts"] == 700


def test_an_empty_window_is_invalid_not_zero():
    engine = sim()
    meter = sim_meter(engine)
    meter.begin()
    reading = meter.end()
    assert not reading.valid and "did not move" in reading.problems[0]


def test_min_window_makes_measure_repeat_the_workload():
    engine = sim(model="Llama-3.2-1B")
    meter = sim_meter(engine, min_window_s=1.0)
    m = measure(engine, meter, Workload(64, 16), rounds=2)
    assert all(r.reps > 1 and r.seconds >= 1.0 for r in m.rounds)
    assert m.valid and m.simulated and m.device["simulated"] is True


def test_meter_refuses_a_real_engine():
    with pytest.raises(ConfigError, match="the sim meter reads the simulated device; use --joules-meter nvml/rapl for engine 'fake'"):
        registry.make_meter(MeterSpec("sim"), FakeEngine())


@pytest.mark.parametrize("options,message", [({"min_window_s": -1}, "non-negative"), ({"window": 1}, "unknown sim meter option"),
                                            ({"align": "maybe"}, "align must be true or false")])
def test_bad_meter_options(options, message):
    with pytest.raises(ConfigError, match=message):
        sim_meter(sim(), **options)
