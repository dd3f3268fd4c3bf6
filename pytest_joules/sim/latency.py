"""Per-request latency on the simulated device, from the same step model that gives its energy.

The scheduler (device.py) runs a workload as a sequence of steps; a request's first token comes
out of the step that prefills it, its last out of the step in which it reaches n_out. Replaying
the scheduler's admissions with integers gives, for every request, the index of those two steps;
the step times of a run (each step lasts max(GPU time, host time), as device.run adds them up,
scaled to the run's noisy total) then give its time to first token, from the run's start, and its
time per output token. The replay must take the steps the scheduler takes: `request_steps`
returns their count too, and device.run checks it against the profile.
"""

from __future__ import annotations

import numpy as np

from ..engines.workload import Workload


def request_steps(workload: Workload, static: bool, slots: int, max_batch: int, max_num_tokens: int
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(first step, last step) of every request, in admission order, and the number of steps."""
    if static:
        return _static(workload)
    n, m = workload.n_in, workload.n_out
    batch = min(workload.max_batch_size or max_batch, workload.requests, slots)
    max_tokens = max(max_num_tokens, n)
    first = np.zeros(workload.requests, dtype=np.int64)
    last = np.zeros(workload.requests, dtype=np.int64)
    running: list[int] = []  # request ids
    gen: list[int] = []  # tokens each running request has
    admitted = step = 0
    pending = workload.requests
    while pending or running:
        admit = min(batch - len(running), pending, max((max_tokens - len(running)) // n, 0))
        if admit == 0 and not running:
            admit = 1
        if admit:
            new = list(range(admitted, admitted + admit))
            first[new] = step
            running += new
            gen = [g + 1 for g in gen] + [1] * admit
            admitted += admit
            pending -= admit
            step += 1
        else:
            n_steps = m - max(gen)
            gen = [g + n_steps for g in gen]
            step += n_steps
        keep = [i for i, g in enumerate(gen) if g < m]
        for i, g in enumerate(gen):
            if g >= m:
                last[running[i]] = step - 1
        running = [running[i] for i in keep]
        gen = [gen[i] for i in keep]
    return first, last, step


def _static(workload: Workload) -> tuple[np.ndarray, np.ndarray, int]:
    """transformers-style static batches: each batch is one prefill step then n_out - 1 decode steps."""
    m = workload.n_out
    size = min(workload.max_batch_size or workload.requests, workload.requests)
    index = np.arange(workload.requests)
    first = (index // size) * m
    return first, first + m - 1, int(-(-workload.requests // size) * m)


def request_times(step_gpu_s: np.ndarray, host_s: float, gpu_factor: float, seconds: float,
                  first: np.ndarray, last: np.ndarray, n_out: int) -> tuple[list[float], list[float]]:
    """Each request's TTFT and TPOT for a run of `seconds` whose steps took max(k g, host) each."""
    steps = np.maximum(gpu_factor * np.asarray(step_gpu_s, dtype=float), host_s)
    total = float(steps.sum())
    ends = np.cumsum(steps) * (seconds / total if total > 0 else 1.0)  # hiccups and slow hosts spread evenly
    ttft = ends[first]
    tpot = (ends[last] - ends[first]) / (n_out - 1) if n_out > 1 else np.zeros(0)
    return [float(t) for t in ttft], [float(t) for t in tpot]
