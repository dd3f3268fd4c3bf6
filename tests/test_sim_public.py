"""The SIMULATED optimised engine (runtime=graphs) against public measurements of vLLM (data/*.csv).

The bounds are the agreement reached when the graphs runtime was calibrated (docs/simulator.md,
benchmarks/sim_vs_public.py), with a little room: a change to the sim's physics that loses that
agreement fails here. All of it runs the noise-free device, in about two seconds.
"""

from __future__ import annotations

import statistics

import pytest

from pytest_joules import registry
from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError
from pytest_joules.validation import sim_vs_public as public
from pytest_joules.sim.gpus import GPUS
from pytest_joules.engines.workload import Workload

#: MAPE of (J/output-token, latency per request, average power) per data set: at most these
REACHED = {
    "Argonne vLLM A100-SXM-40GB": (0.07, 0.09, 0.10),
    "Argonne vLLM H100-SXM": (0.07, 0.06, 0.095),
    "ML.ENERGY Llama-3.1-8B H100-SXM": (0.035, 0.07, 0.08),
    "ML.ENERGY Qwen3-8B H100-SXM": (0.04, 0.075, 0.07),
    # the goal is not reached for J/token here (docs/simulator.md: power under tensor parallelism
    # and vLLM's on-demand KV allocation are missing); the bound keeps it from getting worse
    "ML.ENERGY Llama-3.1-70B H100-SXM x4": (0.17, 0.06, 0.10),
}


@pytest.fixture(scope="module")
def comparisons():
    return {name: public.compare(rows) for name, rows in public.data_sets().items()}


def test_the_public_data_sets_are_in_the_repository_with_their_source():
    assert len(public.argonne_rows()) == 16  # Llama-2-7B and Llama-3-8B, A100 and H100, batch 1-64
    assert {(r.model, r.gpus) for r in public.mlenergy_rows()} == {
        ("Llama-3.1-8B", 1), ("Qwen3-8B", 1), ("Llama-3.1-70B", 4)}
    assert len(public.tokenpowerbench_spreads()) == 33
    readme = (public.DATA / "README.md").read_text()
    for name in (public.ARGONNE_CSV, public.MLENERGY_CSV, public.TOKENPOWERBENCH_CSV):
        assert name in readme
    for source in ("argonne-lcf/LLM-Inference-Bench", "ml-energy/leaderboard", "TokenPowerBench"):
        assert source in readme


@pytest.mark.parametrize("name", sorted(REACHED))
def test_the_graphs_runtime_stays_as_close_to_the_measurements_as_calibrated(comparisons, name):
    c = comparisons[name]
    got = tuple(round(c.mape(m), 3) for m in public.METRICS)
    assert all(g <= bound for g, bound in zip(got, REACHED[name])), (name, got, REACHED[name])


def test_the_goals_of_10_percent_hold_on_every_single_gpu_data_set(comparisons):
    for name, c in comparisons.items():
        if " x" not in name:  # tensor-parallel sets have their own bound above
            assert max(c.mape(m) for m in public.METRICS) < 0.10, name


def test_argonne_power_is_read_with_the_idle_second_inside_it():
    """Their probe stops a second after the run: the average is below the run's own power."""
    row = public.argonne_rows()[-1]
    engine = public._engine(row, "graphs")
    run = engine.run(Workload(row.n_in, row.n_out, requests=row.batch))
    simulated = public.simulate(row)
    assert simulated.watts < run.info["joules"] / run.seconds
    assert simulated.latency_s == pytest.approx(run.seconds)


def test_the_assumed_input_length_matters_and_is_the_one_the_data_imply():
    """Doubling ML.ENERGY's assumed 300 prompt tokens moves J/token by more than the goal."""
    def llama(n_in):
        return [r for r in public.mlenergy_rows(n_in=n_in) if r.model == "Llama-3.1-8B"]

    at_300 = public.compare(llama(300)).mape("j_per_token")
    at_600 = public.compare(llama(600)).mape("j_per_token")
    assert public.MLENERGY_N_IN == 300 and at_300 < 0.05 < 0.10 < at_600


def test_run_to_run_noise_is_the_size_of_tokenpowerbench_ten_runs():
    """TokenPowerBench: J/token min-max spread over ten runs 0.8-3.5% (median 1.6%); the sim's ten
    sessions of Qwen3-14B spread by about as much (its outputs do not vary in length, theirs do)."""
    real = statistics.median(s.j_per_token for s in public.tokenpowerbench_spreads())
    sim = [public.simulated_spread("Qwen3-14B", "H100-SXM", n_in=64, n_out=500, batch=128,
                                   seeds=range(10 * g, 10 * g + 10)).j_per_token for g in range(4)]
    assert real == pytest.approx(1.62)
    assert 0.6 < statistics.median(sim) < real


# -- GPUs the data cover, tensor parallelism, the host's time --------------------------------------

def test_b200_and_gh200_are_their_datasheets():
    b200, gh200 = GPUS["B200"], GPUS["GH200"]
    assert (b200.bf16_tflops, b200.bandwidth_tbs, b200.memory_gb, b200.board_watts) == (2250.0, 8.0, 180, 1000)
    assert (gh200.bf16_tflops, gh200.bandwidth_tbs, gh200.memory_gb, gh200.board_watts) == (989.4, 4.0, 96, 1000)
    assert GPUS["A100-SXM-40GB"].bandwidth_tbs == 1.555


def sim(**options):
    model = options.pop("model", "Llama-3.1-8B")
    gpu = options.pop("gpu", "H100-SXM")
    return registry.make_engine(EngineSpec("sim", model=model, gpu=gpu, options={"noise": 0, **options}))


def test_a_70b_model_needs_tensor_parallelism_on_an_h100():
    with pytest.raises(ConfigError, match="does not fit.*more GPUs \\(tp\\)"):
        sim(model="Llama-3.1-70B")
    engine = sim(model="Llama-3.1-70B", tp=4)
    assert len(engine.devices()) == 4
    assert engine.sim_device.fingerprint()["name"] == "SIMULATED 4x H100-SXM"
    run = engine.run(Workload(300, 64, requests=8))
    assert run.info["joules"] / run.seconds > 1000  # four boards' power, not one


def test_tensor_parallelism_is_faster_at_batch_one_and_costs_more_energy():
    w = Workload(512, 256)
    one, two = sim().run(w), sim(tp=2).run(w)
    assert two.seconds < one.seconds
    assert two.info["joules"] > one.info["joules"]


def test_a_slower_host_makes_steps_longer_and_the_gpu_wait():
    w = Workload(512, 256, requests=16)
    default, slow = sim(), sim(host_ms=5, host_seq_us=50)
    d, s = default.run(w), slow.run(w)
    assert s.seconds > d.seconds and s.info["joules"] / s.seconds < d.info["joules"] / d.seconds
    assert slow.identity()["host_ms"] == "5" and "host_ms" not in default.identity()


@pytest.mark.parametrize("options,message", [
    ({"tp": 0}, "tp .* must be 1 to 64"),
    ({"tp": "two"}, "'tp' must be a number"),
    ({"tp": 3}, "32 attention heads, which 3 GPUs cannot share evenly"),
    ({"host_ms": -1}, "host_ms .* must be a non-negative number"),
    ({"host_seq_us": "slow"}, "'host_seq_us' must be a number"),
])
def test_bad_parallelism_or_host_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        sim(**options)
