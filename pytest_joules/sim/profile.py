"""What a schedule costs: `RunCost` (noise-free totals) and `StepProfile` (every step's GPU time),
shared by the device's own schedules (sim/device.py) and serving over time (sim/serving.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: TensorRT-LLM's default max_batch_size for built engines / the LLM API
DEFAULT_MAX_BATCH = 256
#: TensorRT-LLM's default max_num_tokens (tokens per engine step)
DEFAULT_MAX_NUM_TOKENS = 8192


@dataclass
class RunCost:
    """Noise-free cost of one workload: what the physics says, with no host time."""

    seconds: float = 0.0
    joules: float = 0.0
    prefill_s: float = 0.0
    prefill_j: float = 0.0
    decode_s: float = 0.0
    decode_j: float = 0.0
    steps: int = 0
    sequences_stepped: int = 0  # sum over steps of the sequences in the step
    concurrency: int = 0  # the most requests the scheduler could hold at once

    @property
    def mean_batch(self) -> float:
        return self.sequences_stepped / self.steps if self.steps else 0.0


class StepProfile:
    """The GPU time of every step of one workload, sorted, so that the time of a run whose host
    needs `c` seconds per step, sum(max(gpu_i, c)), costs a binary search instead of a loop."""

    def __init__(self, cost: RunCost, step_seconds: np.ndarray, idle_s: float = 0.0,
                 latency: dict[str, float] | None = None) -> None:
        self.cost = cost
        self.ordered = np.asarray(step_seconds)  # in the order they run: per-request latency (sim/latency.py)
        #: each request's first and last step (sim/latency.py), or, for a schedule over time, each
        #: request's (time to first token, time per output token) in seconds (sim/serving.py)
        self.requests: tuple[np.ndarray, np.ndarray] | None = None
        self.request_times: tuple[list[float], list[float]] | None = None
        #: seconds with nothing to run, waiting for requests to arrive (sim/serving.py)
        self.idle_s = idle_s
        #: latency percentiles of a schedule over time (sim/serving.py)
        self.latency = latency or {}
        self._sorted = np.sort(step_seconds)
        self._prefix = np.concatenate([[0.0], np.cumsum(self._sorted)])
        self.gpu_seconds = float(self._prefix[-1])

    @property
    def steps(self) -> int:
        return int(self._sorted.size)

    def seconds(self, host_s: float) -> float:
        """sum over steps of max(GPU time, host time)."""
        k = int(np.searchsorted(self._sorted, host_s, side="right"))  # steps the host outlasts
        return float(self._prefix[-1] - self._prefix[k]) + host_s * k
