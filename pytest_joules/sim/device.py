"""The simulated GPU: a virtual clock and an energy counter advanced by in-flight batching.

Scheduling follows TensorRT-LLM's in-flight batching with its default capacity policy
(GUARANTEED_NO_EVICT): a request is admitted only when a batch slot is free and the KV cache can
hold its full n_in + n_out; a step's context (prefill) tokens plus decode tokens stay within
max_num_tokens. Admitted prompts are prefilled in the next step, together with one decode token
for every running request; the prefill step produces each request's first output token. When a
request finishes, its slot frees and the next request's prefill joins the following step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..workload import Workload
from .architectures import Architecture
from .gpus import GPU
from .physics import StepModel

SIM_VERSION = "sim-1"
#: TensorRT-LLM's default max_batch_size for built engines / the LLM API
DEFAULT_MAX_BATCH = 256
#: TensorRT-LLM's default max_num_tokens (tokens per engine step)
DEFAULT_MAX_NUM_TOKENS = 8192
#: TensorRT-LLM's default KvCacheConfig.free_gpu_memory_fraction
KV_CACHE_FRACTION = 0.90
#: activation workspace, CUDA context and runtime buffers kept out of the KV cache
WORKSPACE_BYTES = 3e9
#: sigma of the multiplicative lognormal noise on each run's time and energy (0.3%)
NOISE_SIGMA = 0.003


@dataclass
class RunCost:
    """Noise-free cost of one workload: what the physics says."""

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


@dataclass
class SimRun:
    """One noisy execution, as it advanced the device."""

    seconds: float
    joules: float
    phases: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


class SimDevice:
    """A simulated GPU running one architecture. `run(workload)` advances `clock_s` and
    `energy_j` like real time and NVML's energy counter would."""

    def __init__(self, arch: Architecture, gpu: GPU, *, dtype_bytes: int = 2, slowdown: float = 1.0, seed: int = 0):
        self.arch = arch
        self.gpu = gpu
        self.dtype_bytes = dtype_bytes
        self.slowdown = float(slowdown)
        self.seed = int(seed)
        self.model = StepModel(arch, gpu, dtype_bytes, slowdown)
        self.clock_s = 0.0
        self.energy_j = 0.0
        self._costs: dict[tuple, RunCost] = {}
        self._counters: dict[tuple, int] = {}
        weights = arch.params * dtype_bytes
        self.kv_pool_bytes = KV_CACHE_FRACTION * (gpu.memory_bytes - weights - WORKSPACE_BYTES)
        if self.kv_pool_bytes <= 0:
            raise ConfigError(
                f"{arch.name} ({weights / 1e9:.1f} GB of weights) does not fit in the "
                f"{gpu.memory_gb:g} GB of a {gpu.name}; pick a bigger GPU or a smaller model"
            )

    # -- counters, as a meter sees them --------------------------------------------------------
    @property
    def energy_mj(self) -> int:
        """The cumulative energy counter in millijoules, like nvmlDeviceGetTotalEnergyConsumption."""
        return int(self.energy_j * 1000.0)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.name,
            "name": f"SIMULATED {self.gpu.name}",
            "board_watts": self.gpu.board_watts,
            "power_limit_w": self.gpu.board_watts,
            "memory_gb": self.gpu.memory_gb,
            "simulated": True,
            "sim_version": SIM_VERSION,
            "slowdown": self.slowdown,
        }

    # -- running ---------------------------------------------------------------------------------
    def kv_slots(self, workload: Workload) -> int:
        """How many requests of this length the KV cache can hold at once."""
        return int(self.kv_pool_bytes // ((workload.n_in + workload.n_out) * self.model.kv_bytes_per_token))

    def run(self, workload: Workload) -> SimRun:
        workload.check_positions(self.arch.max_positions, f"simulated {self.arch.name}")
        key = (workload.n_in, workload.n_out, workload.requests, workload.max_batch_size, workload.seed)
        cost = self._costs.get(key)
        if cost is None:
            cost = self._costs[key] = self.schedule(workload)
        count = self._counters.get(key, 0)
        self._counters[key] = count + 1
        # One stream per (device seed, workload, how many times this workload ran): the same
        # test gets the same numbers whatever ran before it in the process.
        rng = np.random.default_rng([self.seed, *(k or 0 for k in key), count])
        t_noise, e_noise = np.exp(rng.normal(0.0, NOISE_SIGMA, size=2))
        seconds, joules = cost.seconds * t_noise, cost.joules * e_noise
        self.clock_s += seconds
        self.energy_j += joules
        return SimRun(
            seconds=seconds,
            joules=joules,
            phases={
                "prefill_s": cost.prefill_s * t_noise,
                "decode_s": cost.decode_s * t_noise,
                "prefill_j": cost.prefill_j * e_noise,
                "decode_j": cost.decode_j * e_noise,
            },
            info={"steps": cost.steps, "mean_batch": round(cost.mean_batch, 3), "concurrency": cost.concurrency},
        )

    def schedule(self, workload: Workload) -> RunCost:
        """Step through in-flight batching and add up the physics of every step (no noise)."""
        n, m = workload.n_in, workload.n_out
        slots = self.kv_slots(workload)
        if slots < 1:
            raise ConfigError(
                f"{workload.label()}: one request needs {(n + m) * self.model.kv_bytes_per_token / 1e9:.1f} GB "
                f"of KV cache, more than the {self.kv_pool_bytes / 1e9:.1f} GB left on a {self.gpu.name} "
                f"after {self.arch.name}'s weights; use shorter lengths"
            )
        batch = min(workload.max_batch_size or DEFAULT_MAX_BATCH, workload.requests, slots)
        max_tokens = max(DEFAULT_MAX_NUM_TOKENS, n)  # a longer prompt is chunked; same work
        out = RunCost(concurrency=batch)
        pending = workload.requests
        gen = np.zeros(0, dtype=np.int64)  # tokens generated so far by each running request

        while pending or gen.size:
            running = gen.size
            admit = min(batch - running, pending, max((max_tokens - running) // n, 0))
            if admit == 0 and running == 0:
                admit = 1
            if admit:
                # one mixed step: new prompts prefill (each yields its first token), the rest decode
                ctx = n + gen
                cost = self.model.cost(
                    tokens=admit * n + running,
                    logits=admit + running,
                    pairs=admit * n * (n + 1) / 2 + ctx.sum(),
                    kv_read=admit * n + (ctx - 1).sum(),
                    kv_write=admit * n + running,
                )
                out.prefill_s += cost.total_seconds
                out.prefill_j += cost.total_joules
                out.steps += 1
                out.sequences_stepped += admit + running
                gen = np.concatenate([gen + 1, np.ones(admit, dtype=np.int64)])
                pending -= admit
            else:
                # pure decode until the next request finishes: every step has the same batch
                steps = int(m - gen.max())
                s = np.arange(steps, dtype=float)
                ctx_sum = float((n + gen).sum()) + running * s
                cost = self.model.cost(
                    tokens=running,
                    logits=running,
                    pairs=ctx_sum,
                    kv_read=ctx_sum - running,
                    kv_write=running,
                )
                out.decode_s += cost.total_seconds
                out.decode_j += cost.total_joules
                out.steps += steps
                out.sequences_stepped += steps * running
                gen = gen + steps
            gen = gen[gen < m]
        out.seconds = out.prefill_s + out.decode_s
        out.joules = out.prefill_j + out.decode_j
        return out
