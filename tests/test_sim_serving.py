"""The simulated device serving mixes and arrivals by mechanism (sim/serving.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_joules.engines import mix as M
from pytest_joules.engines.base import EngineSpec
from pytest_joules.engines.sim import create
from pytest_joules.engines.workload import Workload
from pytest_joules.errors import ConfigError
from pytest_joules.sim.architectures import get_architecture
from pytest_joules.sim.device import SimDevice
from pytest_joules.sim.gpus import get_gpu

CHAT = M.from_list([(128, 256, 3), (512, 512, 2), (1024, 128, 1)])


def device(noise=0.0, runtime="graphs"):
    return SimDevice(get_architecture("Llama-3.1-8B"), get_gpu("H100-SXM"), noise=noise, runtime=runtime)


@pytest.mark.parametrize("n_in, n_out, requests, max_batch", [(512, 256, 16, None), (128, 1024, 300, None),
                                                               (4096, 64, 16, 4)])
def test_a_mix_of_one_length_costs_what_that_workload_costs(n_in, n_out, requests, max_batch):
    d = device()
    point, steps = d.schedule_steps(Workload(n_in, n_out, requests=requests, max_batch_size=max_batch))
    served = d.profile(Workload.of_mix(M.from_list([(n_in, n_out)]), requests, max_batch_size=max_batch))
    assert served.cost.joules == pytest.approx(point.joules, rel=1e-12)
    assert served.cost.seconds == pytest.approx(point.seconds, rel=1e-12)
    assert served.steps == steps.size and served.idle_s == 0


def test_requests_arriving_over_time_run_in_smaller_batches_and_the_gpu_idles_between():
    d = device()
    at_once = d.profile(Workload.of_mix(CHAT, 64))
    slow = d.profile(Workload.of_mix(CHAT, 64, arrival=M.Arrival(rate=0.5)))
    fast = d.profile(Workload.of_mix(CHAT, 64, arrival=M.Arrival(rate=50.0)))
    assert slow.cost.mean_batch < fast.cost.mean_batch < at_once.cost.mean_batch
    assert slow.idle_s > 30 and at_once.idle_s == 0  # 64 requests over ~128 s: much of it waiting
    # the same tokens cost more in small batches: decode reads all weights every step
    assert at_once.cost.joules < fast.cost.joules < slow.cost.joules
    # a request arriving alone to an idle GPU waits only for its own prefill
    assert slow.latency["ttft_p50_s"] < 0.05 < at_once.latency["ttft_p50_s"]
    assert set(slow.latency) == {f"{k}_p{q}_s" for k in ("ttft", "tpot", "e2e") for q in (50, 90, 99)}


def test_a_closed_loop_never_has_more_users_in_flight_than_it_has():
    d = device()
    loop = d.profile(Workload.of_mix(CHAT, 64, arrival=M.Arrival(concurrency=4)))
    assert loop.cost.concurrency == 4 and loop.idle_s == 0
    everyone = d.profile(Workload.of_mix(CHAT, 64, arrival=M.Arrival(concurrency=64)))
    assert everyone.cost.joules == pytest.approx(d.profile(Workload.of_mix(CHAT, 64)).cost.joules)


def test_a_run_over_time_lasts_its_idle_time_too_at_the_power_of_a_waiting_gpu():
    d = device()
    w = Workload.of_mix(CHAT, 16, arrival=M.Arrival(rate=0.2))
    profile = d.profile(w)
    run = d.run(w)
    # the schedule's time, its idle time, and the host's time between steps (at most 10 ms a step)
    assert profile.cost.seconds + profile.idle_s <= run.seconds <= profile.cost.seconds + profile.idle_s + 0.01 * profile.steps
    idle_j = run.joules - profile.cost.joules
    assert idle_j == pytest.approx(d.model.waiting_watts * (run.seconds - run.info["gpu_busy_s"]), rel=0.01)
    assert run.info["idle_s"] == profile.idle_s and run.info["latency_percentiles"] == profile.latency


def test_the_noise_of_a_mix_has_its_own_stream_and_a_uniform_workloads_is_unchanged():
    a, b = device(noise=1.0), device(noise=1.0)
    w = Workload(512, 128, requests=16)
    assert a.run(w).joules == b.run(w).joules  # same seed, same stream
    mixed = Workload.of_mix(M.from_list([(512, 128)]), 16)
    c = device(noise=1.0)
    c.run(w)  # the first run pays the warm-up; compare second runs
    a.run(w)
    assert c.run(mixed).joules != a.run(w).joules  # another workload key, another noise draw


def test_the_eager_runtime_runs_a_mix_in_static_batches_and_refuses_arrivals():
    d = device(runtime="eager")
    cost = d.profile(Workload.of_mix(CHAT, 6)).cost
    parts = [d.schedule_static(Workload(n, m, requests=k))[0].joules for n, m, k in ((128, 256, 3), (512, 512, 2), (1024, 128, 1))]
    assert cost.joules == pytest.approx(sum(parts))
    with pytest.raises(ConfigError, match="eager runtime runs static batches .* cannot serve over time; use runtime=graphs"):
        d.profile(Workload.of_mix(CHAT, 6, arrival=M.Arrival(rate=1.0)))


def test_a_request_the_kv_cache_cannot_hold_is_named():
    d = SimDevice(get_architecture("Llama-2-7B"), get_gpu("H100-SXM"), noise=0)  # MHA: 0.5 MB of KV per token
    huge = M.from_list([(128, 64, 9), (120000, 8000, 1)])
    with pytest.raises(ConfigError, match=r"a request of n_in=120000, n_out=8000 needs \d+\.\d GB of KV cache, more than"):
        d.profile(Workload.of_mix(huge, 10))


def test_the_sim_engine_reports_each_requests_counts_and_serves_over_time_only_with_graphs(tmp_path):
    engine = create(EngineSpec("sim", options={"noise": 0}))
    assert engine.serves_over_time
    w = Workload.of_mix(CHAT, 12, arrival=M.Arrival(concurrency=3))
    run = engine.run(w)
    run.verify(w, "sim")
    assert list(zip(run.input_tokens, run.output_tokens)) == list(w.lengths())
    assert not create(EngineSpec("sim", options={"runtime": "eager"})).serves_over_time


def test_the_sim_cuts_text_prompts_with_its_four_characters_rule(tmp_path):
    from pytest_joules.engines import prompt_text

    (tmp_path / "p.jsonl").write_text('"' + "x" * 4000 + '"\n')
    engine = create(EngineSpec("sim", options={"noise": 0}))
    w = Workload.of_mix(CHAT, 6, prompts=prompt_text.load(tmp_path / "p.jsonl"))
    run = engine.run(w)
    run.verify(w, "sim")
    assert run.input_tokens == [n for n, _ in w.lengths()]
    short = Workload(8000, 8, prompts=prompt_text.load(tmp_path / "p.jsonl"))  # 1000 tokens, 8 repeats at most
    with pytest.raises(ConfigError, match="would repeat it 9 times"):
        engine.run(Workload(8001, 8, prompts=short.prompts))
    engine.run(short).verify(short, "sim")
    assert np.isfinite(engine.run(short).seconds)
