"""Serving over time on the simulated device: requests of mixed lengths, arriving as they come.

The same in-flight batching as `SimDevice.schedule_steps` (sim/device.py: TensorRT-LLM's
GUARANTEED_NO_EVICT capacity policy, max_batch_size slots, max_num_tokens per step), generalised
to requests that differ in length and arrive over time:

- requests are admitted first come, first served at a step boundary, while a batch slot is free,
  the KV cache can hold the request's full n_in + n_out, and the step's tokens (the new prompts
  plus one per running request) stay within max_num_tokens; the first request that does not fit
  waits, and so does everything behind it (no overtaking);
- an admitted prompt is prefilled in the next step together with one decode token of every running
  request; that step yields its first output token (time to first token = end of that step minus
  its arrival);
- between admissions, decode steps run until the next request finishes or the next one arrives
  (it joins at the following step boundary);
- with nothing to run and nobody waiting, the GPU idles until the next arrival, at the power of a
  GPU with nothing to do (`StepModel.waiting_watts`).

Arrivals: all at once (time 0), Poisson at `rate` (engines/mix.py draws the times), or a closed
loop of `concurrency` users, each sending its next request when its last one finishes.

The schedule is noise-free; `SimDevice.run` applies the noise model to its steps as to any other
workload and adds the idle time as it is (a slower step would shorten the idle after it a little:
a second-order effect that is left out). Latencies are the noise-free schedule's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..engines.workload import Workload
from .profile import DEFAULT_MAX_BATCH, DEFAULT_MAX_NUM_TOKENS, RunCost, StepProfile

#: the device is sim/device.py's SimDevice (not imported: it imports this module)
SimDevice = Any

#: latency percentiles reported
PERCENTILES = (50, 90, 99)


def schedule(device: SimDevice, workload: Workload) -> StepProfile:
    """The step profile of a mix or an arrival schedule (uniform workloads keep device.py's path)."""
    lengths = workload.lengths()
    biggest = max(set(lengths), key=sum)
    capacity = device.kv_pool_bytes / device.model.kv_bytes_per_token
    if sum(biggest) > capacity:
        n, m = biggest
        raise ConfigError(
            f"{workload.label()}: a request of n_in={n}, n_out={m} needs "
            f"{(n + m) * device.model.kv_bytes_per_token / 1e9:.1f} GB of KV cache, more than the "
            f"{device.kv_pool_bytes / 1e9:.1f} GB left on a {device.gpu.name}; drop or truncate such requests"
        )
    if device.runtime.static_batching:
        if workload.arrival is not None:
            raise ConfigError(f"{workload.arrival.label()}: the sim's eager runtime runs static batches like "
                              "transformers' generate and cannot serve over time; use runtime=graphs")
        return _static(device, workload, lengths)
    arrive = np.zeros(len(lengths))
    concurrency = None
    if workload.arrival is not None and workload.arrival.rate is not None:
        arrive = np.asarray(workload.arrival.times(len(lengths), workload.schedule_key()))
    elif workload.arrival is not None:
        concurrency = workload.arrival.concurrency
    return _inflight(device, lengths, arrive, concurrency, workload.max_batch_size)


def _static(device: SimDevice, workload: Workload, lengths: Sequence[tuple[int, int]]) -> StepProfile:
    """Eager (transformers-like) runtime: each distinct length in static batches, one after another,
    as the hf engine runs a mix."""
    from ..engines.mix import groups

    total = RunCost()
    steps = []
    for n, m, idx in groups(lengths):
        cost, s = device.schedule_static(Workload(n, m, requests=len(idx), max_batch_size=workload.max_batch_size))
        for name in ("prefill_s", "prefill_j", "decode_s", "decode_j", "steps", "sequences_stepped"):
            setattr(total, name, getattr(total, name) + getattr(cost, name))
        total.concurrency = max(total.concurrency, cost.concurrency)
        steps.append(s)
    total.seconds = total.prefill_s + total.decode_s
    total.joules = total.prefill_j + total.decode_j
    return StepProfile(total, np.concatenate(steps))


def _inflight(device: SimDevice, lengths: Sequence[tuple[int, int]], arrive: np.ndarray,
              concurrency: int | None, max_batch_size: int | None) -> StepProfile:
    """Step through in-flight batching as the module's docstring says."""
    model = device.model
    total = len(lengths)
    n_in = np.array([n for n, _ in lengths], dtype=np.int64)
    n_out = np.array([m for _, m in lengths], dtype=np.int64)
    capacity = device.kv_pool_bytes / model.kv_bytes_per_token
    max_batch = max_batch_size or DEFAULT_MAX_BATCH
    if concurrency is not None:  # a closed loop: the first users send at 0, the rest on completions
        arrive = np.full(total, np.inf)
        arrive[:concurrency] = 0.0
    released = min(concurrency, total) if concurrency is not None else total
    first = np.zeros(total)
    finish = np.zeros(total)
    out = RunCost()
    steps: list[np.ndarray] = []
    running = np.zeros(0, dtype=np.int64)  # request indices
    gen = np.zeros(0, dtype=np.int64)  # tokens generated so far by each running request
    t = idle = kv_used = 0.0
    nxt = 0  # the next request to admit (first come, first served)

    while nxt < total or running.size:
        arrived = int(np.searchsorted(arrive, t, side="right"))
        if not running.size and nxt >= arrived:
            idle += arrive[nxt] - t  # nothing to run: wait for the next request
            t = float(arrive[nxt])
            continue
        admit: list[int] = []
        tokens = running.size
        while nxt < arrived and running.size + len(admit) < max_batch:
            need = n_in[nxt] + n_out[nxt]
            alone = not admit and not running.size  # a prompt over the step budget still runs alone (chunked)
            if kv_used + need > capacity or (tokens + n_in[nxt] > DEFAULT_MAX_NUM_TOKENS and not alone):
                break
            admit.append(nxt)
            kv_used += need
            tokens += int(n_in[nxt])
            nxt += 1
        if admit:
            new = np.array(admit, dtype=np.int64)
            ctx = n_in[running] + gen
            p = n_in[new].astype(float)
            cost = model.cost(tokens=p.sum() + running.size, logits=new.size + running.size,
                              pairs=(p * (p + 1) / 2).sum() + ctx.sum(), kv_read=p.sum() + (ctx - 1).sum(),
                              kv_write=p.sum() + running.size)
            t += cost.total_seconds
            out.prefill_s += cost.total_seconds
            out.prefill_j += cost.total_joules
            steps.append(cost.seconds)
            out.steps += 1
            out.sequences_stepped += new.size + running.size
            first[new] = t
            running = np.concatenate([running, new])
            gen = np.concatenate([gen + 1, np.ones(new.size, dtype=np.int64)])
        else:
            b = running.size
            k = int((n_out[running] - gen).min())  # decode until the next request finishes ...
            s = np.arange(k, dtype=float)
            ctx_sum = float((n_in[running] + gen).sum()) + b * s
            cost = model.cost(tokens=b, logits=b, pairs=ctx_sum, kv_read=ctx_sum - b, kv_write=b)
            seconds = np.broadcast_to(cost.seconds, (k,))
            joules = np.broadcast_to(cost.joules, (k,))
            if nxt == arrived and arrived < total and np.isfinite(arrive[arrived]) and b < max_batch:
                # ... or the next request arrives: it joins at the following step boundary
                ends = np.cumsum(seconds)
                k = min(k, int(np.searchsorted(ends, arrive[arrived] - t, side="left")) + 1)
                seconds, joules = seconds[:k], joules[:k]
            t += float(seconds.sum())
            out.decode_s += float(seconds.sum())
            out.decode_j += float(joules.sum())
            steps.append(seconds)
            out.steps += k
            out.sequences_stepped += k * b
            gen = gen + k
        out.concurrency = max(out.concurrency, int(running.size))
        done = gen >= n_out[running]
        if done.any():
            ended = running[done]
            finish[ended] = t
            kv_used -= float((n_in[ended] + n_out[ended]).sum())
            for _ in range(ended.size):  # a closed loop: each finished user sends its next request now
                if released < total:
                    arrive[released] = t
                    released += 1
            running, gen = running[~done], gen[~done]
    out.seconds = out.prefill_s + out.decode_s
    out.joules = out.prefill_j + out.decode_j
    profile = StepProfile(out, np.concatenate(steps), idle_s=idle, latency=latency(arrive, first, finish, n_out))
    many = n_out > 1
    tpot = np.where(many, (finish - first) / np.maximum(n_out - 1, 1), 0.0)
    profile.request_times = ([float(x) for x in first - arrive], [float(x) for x, m in zip(tpot, many) if m])
    return profile


def latency(arrive: np.ndarray, first: np.ndarray, finish: np.ndarray, n_out: np.ndarray) -> dict[str, float]:
    """Percentiles of time to first token, time per output token after the first, and end to end."""
    series = {"ttft": first - arrive, "e2e": finish - arrive}
    many = n_out > 1
    if many.any():
        series["tpot"] = (finish[many] - first[many]) / (n_out[many] - 1)
    return {f"{name}_p{q}_s": float(np.percentile(values, q)) for name, values in series.items() for q in PERCENTILES}
