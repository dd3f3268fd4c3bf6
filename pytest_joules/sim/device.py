"""The simulated GPU: a virtual clock and an energy counter advanced by the engine's batching.

The `graphs` runtime (sim/runtime.py) schedules like TensorRT-LLM, the `eager` one like
transformers' generate (static batches, `schedule_static`). In-flight scheduling follows TensorRT-LLM's in-flight batching with its default capacity policy
(GUARANTEED_NO_EVICT): a request is admitted only when a batch slot is free and the KV cache can
hold its full n_in + n_out; a step's context (prefill) tokens plus decode tokens stay within
max_num_tokens. Admitted prompts are prefilled in the next step, together with one decode token
for every running request; the prefill step produces each request's first output token. When a
request finishes, its slot frees and the next request's prefill joins the following step.

A run lasts, step by step, max(GPU time, host time) (eager: the host launches ahead of the GPU) or
GPU time + host time (graphs: the host works between the GPU's steps), plus the host's hiccups;
the noise comes from the mechanisms in sim/noise.py, and the energy counter moves in 100 ms ticks
like NVML's. With `tp` GPUs (tensor parallelism) the device is the group: its counter is their sum.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..engines.workload import Workload
from .architectures import Architecture
from .gpus import GPU
from .noise import HostState, draw_run, hiccups, session_power
from .thermal import BOOST_CLOCK_MHZ, Thermal
from .physics import StepModel
from .profile import DEFAULT_MAX_BATCH, DEFAULT_MAX_NUM_TOKENS, RunCost, StepProfile
from .runtime import DEFAULT_RUNTIME, get_runtime

SIM_VERSION = "sim-3"
#: TensorRT-LLM's default KvCacheConfig.free_gpu_memory_fraction
KV_CACHE_FRACTION = 0.90
#: activation workspace, CUDA context and runtime buffers kept out of the KV cache
WORKSPACE_BYTES = 3e9
#: the energy counter moves every 100 ms, idle and busy (measured on the H200, data/h200-hf-llama)
COUNTER_PERIOD_S = 0.1


@dataclass
class SimRun:
    """One noisy execution, as it advanced the device."""

    seconds: float
    joules: float
    phases: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)


class _Stream:
    """The random state of one workload (of one measurement, when labelled): its own generator and
    host state, so a test's numbers do not depend on which tests ran before it, while its own
    rounds are correlated like a real host's."""

    def __init__(self, seed: int, key: tuple, noise: float, variability: float) -> None:
        self.rng = np.random.default_rng([seed, *(k or 0 for k in key)])
        self.host = HostState(self.rng, noise, variability)


#: beyond these the simulation is no device (noise 1 is realistic; a 1000x slower step takes
#: minutes) and its hiccup draws and counter waits grow without bound: a run never ended
MAX_NOISE = 10.0
MAX_SLOWDOWN = 1000.0


class SimDevice:
    """A simulated GPU running one architecture. `run(workload)` advances `clock_s` and
    `energy_j` like real time and the GPU's energy would; `energy_mj` is the counter a meter reads,
    which, like NVML's, moves only every COUNTER_PERIOD_S."""

    def __init__(self, arch: Architecture, gpu: GPU, *, dtype_bytes: int = 2, slowdown: float = 1.0, seed: int = 0,
                 runtime: str = DEFAULT_RUNTIME, noise: float = 1.0, tp: int = 1,
                 host_s: float | None = None, host_seq_s: float | None = None):
        if not 0 <= noise <= MAX_NOISE:
            raise ConfigError(f"sim noise must be a number from 0 to {MAX_NOISE:g} (0 = exact, 1 = realistic), got {noise!r}")
        if not 0 < slowdown <= MAX_SLOWDOWN:
            raise ConfigError(f"sim slowdown must be a number above 0 and at most {MAX_SLOWDOWN:g} (1.0 = normal, "
                              f"1.1 = 10% slower), got {slowdown!r}")
        if arch.heads % tp:
            raise ConfigError(f"{arch.name} has {arch.heads} attention heads, which {tp} GPUs cannot share evenly; "
                              "use a tp that divides them")
        self.arch = arch
        self.gpu = gpu
        self.tp = int(tp)
        self.dtype_bytes = dtype_bytes
        self.slowdown = float(slowdown)
        self.seed = int(seed)
        self.runtime = get_runtime(runtime)
        self.noise = float(noise)
        self.model = StepModel(arch, gpu, dtype_bytes, slowdown, efficiency=self.runtime.kernel_efficiency,
                               kv_traffic=self.runtime.kv_traffic(arch.heads, arch.kv_heads), tp=self.tp)
        # a slower build does more host work per step too, so a slowdown shows in host-bound runs;
        # host_s / host_seq_s replace the runtime's figures (a slower or faster serving stack)
        host = self.runtime.host_seconds(arch.layers) if host_s is None else host_s
        self.host_step_s = host * self.slowdown
        self.host_seq_s = (self.runtime.host_seq_s if host_seq_s is None else host_seq_s) * self.slowdown
        self.clock_s = 0.0
        self.energy_j = 0.0
        self.busy_s = 0.0  # seconds the GPU ran kernels (NVML's utilisation counts these)
        self.thermal = Thermal(gpu.board_watts, gpu.idle_watts)  # reported in each window's state only
        self.runs = 0
        self.power_factor = session_power(self.seed, self.noise)
        self.counter_phase_s = float(np.random.default_rng([self.seed, 7919]).uniform(0, COUNTER_PERIOD_S))
        self._segments: list[tuple[float, float, float, float]] = []  # (t0, t1, e0, e1)
        self._idle_tail = False  # the last segment is idle time
        self._profiles: dict[tuple, StepProfile] = {}
        self._streams: dict[tuple, _Stream] = {}
        #: the measurement now running (see `label`): two tests of one workload draw apart
        self._label = 0
        self._current: _Stream | None = None
        weights = arch.params * dtype_bytes / self.tp  # per GPU, as the KV pool below
        self.kv_pool_bytes = KV_CACHE_FRACTION * (gpu.memory_bytes - weights - WORKSPACE_BYTES)
        if self.kv_pool_bytes <= 0:
            where = f"a {gpu.name}" if self.tp == 1 else f"each of {self.tp} {gpu.name}s"
            raise ConfigError(
                f"{arch.name} ({weights / 1e9:.1f} GB of weights per GPU) does not fit in the "
                f"{gpu.memory_gb:g} GB of {where}; pick a bigger GPU, more GPUs (tp) or a smaller model"
            )

    # -- counters, as a meter sees them --------------------------------------------------------
    @property
    def energy_mj(self) -> int:
        """The cumulative energy counter in millijoules, like nvmlDeviceGetTotalEnergyConsumption:
        the energy at the last counter update, not at this instant."""
        ticks = np.floor((self.clock_s - self.counter_phase_s) / COUNTER_PERIOD_S)
        return int(self.energy_at(self.counter_phase_s + ticks * COUNTER_PERIOD_S) * 1000.0)

    def energy_at(self, t: float) -> float:
        """The cumulative energy at time `t` (<= now), power taken as constant within each run."""
        if t >= self.clock_s:
            return self.energy_j
        for t0, t1, e0, e1 in reversed(self._segments):
            if t >= t0:
                return e0 + (e1 - e0) * (min(t, t1) - t0) / (t1 - t0) if t1 > t0 else e1
        return self._segments[0][2] if self._segments else 0.0

    def label(self, name: str) -> None:
        """Runs from now on belong to the measurement `name` (a test's key): each has its own noise
        stream, so a test measures the same alone as after another test of the same workload."""
        self._label = zlib.crc32(name.encode()) if name else 0

    def wait(self, seconds: float) -> None:
        """Idle time: the GPU waits with its clocks up (a meter polling its counter, a host pause)."""
        if seconds <= 0:
            return
        self._advance(seconds, self.model.waiting_watts * self.power_factor * seconds, 0.0, idle=True)
        if self._current is not None:
            self._current.host.wait(seconds)

    def _advance(self, seconds: float, joules: float, busy: float, idle: bool = False) -> None:
        t0, e0 = self.clock_s, self.energy_j
        self.clock_s += seconds
        self.energy_j += joules
        self.thermal.advance(seconds, joules)
        self.busy_s += busy
        if idle and self._idle_tail and self._segments:  # one segment per stretch of idle polling
            t0, e0 = self._segments.pop()[::2]
        self._idle_tail = idle
        self._segments.append((t0, self.clock_s, e0, self.energy_j))
        # the counter looks back at most one period: keep a few
        while len(self._segments) > 2 and self._segments[1][1] < self.clock_s - 2 * COUNTER_PERIOD_S:
            self._segments.pop(0)

    def state(self) -> dict[str, Any]:
        """What a window records of the device besides its energy (SIMULATED; sim/thermal.py)."""
        return {"temperature_c": round(self.thermal.temperature_c, 1), "sm_clock_mhz": BOOST_CLOCK_MHZ.get(self.gpu.name),
                "throttle_reasons": [], "throttled": [], "power_limit_w": self.gpu.board_watts, "simulated": True}

    def fingerprint(self) -> dict[str, Any]:
        out = {
            "gpu": self.gpu.name,
            "name": f"SIMULATED {self.gpu.name}" if self.tp == 1 else f"SIMULATED {self.tp}x {self.gpu.name}",
            "board_watts": self.gpu.board_watts,
            "power_limit_w": self.gpu.board_watts,
            "memory_gb": self.gpu.memory_gb,
            "simulated": True,
            "sim_version": SIM_VERSION,
            "slowdown": self.slowdown,
        }
        if self.tp > 1:
            out["gpus"] = self.tp
        return out

    # -- running ---------------------------------------------------------------------------------
    def kv_slots(self, workload: Workload) -> int:
        """How many requests of this length the KV cache can hold at once."""
        return int(self.kv_pool_bytes // ((workload.n_in + workload.n_out) * self.model.kv_bytes_per_token))

    @staticmethod
    def _key(workload: Workload) -> tuple:
        # a mix or an arrival schedule is served by sim/serving.py; prompt text does not change the work
        arrival = workload.arrival.label() if workload.arrival is not None else ""
        over_time = (zlib.crc32(f"{workload.schedule_key()}|{arrival}".encode()),) if workload.mix or arrival else ()
        return (workload.n_in, workload.n_out, workload.requests, workload.max_batch_size, *over_time)

    def profile(self, workload: Workload) -> StepProfile:
        key = self._key(workload)
        found = self._profiles.get(key)
        if found is None:
            if workload.mix is not None or workload.arrival is not None:
                from .serving import schedule

                found = self._profiles[key] = schedule(self, workload)
            else:
                cost, steps = (self.schedule_static if self.runtime.static_batching else self.schedule_steps)(workload)
                found = self._profiles[key] = StepProfile(cost, steps)
        return found

    def schedule(self, workload: Workload) -> RunCost:
        """The noise-free GPU cost of the workload under this runtime's batching."""
        return self.profile(workload).cost

    def run(self, workload: Workload) -> SimRun:
        workload.check_positions(self.arch.max_positions, f"simulated {self.arch.name}")
        profile = self.profile(workload)
        cost = profile.cost
        # The seed picks the noise stream; the prompt seed does not change the work.
        key = (*self._key(workload), self._label)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(self.seed, key, self.noise, self.runtime.host_variability)
        self._current = stream
        rt, noise = self.runtime, self.noise
        first = self.runs == 0 and noise > 0
        self.runs += 1

        draw = draw_run(stream.rng, noise, noise * rt.host_variability)
        scale = draw.host * (rt.first_run_host_factor if first else 1.0)
        host, per_seq = self.host_step_s * scale, self.host_seq_s * scale
        k = draw.gpu_time  # kernels k times slower: sum(max(k g, c)) = k sum(max(g, c / k))
        busy = k * profile.gpu_seconds
        if rt.host_overlap:  # per-sequence host work taken at the run's mean batch
            host += per_seq * cost.mean_batch
            fast = k * profile.seconds(host / k)
            slow = k * profile.seconds(host * stream.host.slow_factor / k)
        else:  # the host's work sits between the GPU's steps
            work = host * cost.steps + per_seq * cost.sequences_stepped
            fast, slow = busy + work, busy + work * stream.host.slow_factor
        slow_share, seconds = stream.host.run(fast, slow)
        stall = hiccups(stream.rng, noise, seconds, rt.hiccups_per_s, rt.hiccup_mean_s)
        if first:
            stall += rt.first_run_extra_s
        seconds += stall + profile.idle_s  # waiting for requests to arrive: the GPU has nothing to do
        # kernels: the physics' energy, stretched by k at a power varied by the draw; waiting:
        # every other second of the run at the power of a GPU with nothing to do
        joules = (cost.joules * k * draw.gpu_power + self.model.waiting_watts * (seconds - busy)) * self.power_factor
        self._advance(seconds, joules, busy)
        t_scale = seconds / cost.seconds if cost.seconds else 1.0
        e_scale = joules / cost.joules if cost.joules else 1.0
        ttft, tpot = self._latency(workload, profile, host, k, seconds)
        return SimRun(
            ttft_s=ttft,
            tpot_s=tpot,
            seconds=seconds,
            joules=joules,
            phases={
                "prefill_s": cost.prefill_s * t_scale,
                "decode_s": cost.decode_s * t_scale,
                "prefill_j": cost.prefill_j * e_scale,
                "decode_j": cost.decode_j * e_scale,
            },
            info={
                "steps": cost.steps,
                "mean_batch": round(cost.mean_batch, 3),
                "concurrency": cost.concurrency,
                "runtime": rt.name,
                "gpu_busy_s": busy,
                "host_slow_share": round(slow_share, 3),
                **({"idle_s": profile.idle_s} if profile.idle_s else {}),
                **({"latency_percentiles": dict(profile.latency)} if profile.latency else {}),
            },
        )

    def _latency(self, workload: Workload, profile: StepProfile, host: float, k: float,
                 seconds: float) -> tuple[list[float], list[float]]:
        from .latency import request_steps, request_times

        if profile.request_times is not None:  # a schedule over time: its own per-request times, stretched
            scale = seconds / profile.cost.seconds if profile.cost.seconds else 1.0
            ttft, tpot = profile.request_times
            return [t * scale for t in ttft], [t * scale for t in tpot]
        if profile.requests is None:
            first, last, steps = request_steps(workload, self.runtime.static_batching, self.kv_slots(workload),
                                               DEFAULT_MAX_BATCH, DEFAULT_MAX_NUM_TOKENS)
            assert steps == profile.ordered.size, "the latency replay must take the scheduler's steps"
            profile.requests = (first, last)
        return request_times(profile.ordered, host, k, seconds, *profile.requests, workload.n_out)

    def _kv_slots_or_error(self, workload: Workload) -> int:
        slots = self.kv_slots(workload)
        if slots < 1:
            n, m = workload.n_in, workload.n_out
            raise ConfigError(
                f"{workload.label()}: one request needs {(n + m) * self.model.kv_bytes_per_token / 1e9:.1f} GB "
                f"of KV cache, more than the {self.kv_pool_bytes / 1e9:.1f} GB left on a {self.gpu.name} "
                f"after {self.arch.name}'s weights; use shorter lengths"
            )
        return slots

    def schedule_static(self, workload: Workload) -> tuple[RunCost, np.ndarray]:
        """Static batches, as transformers' generate runs them: prefill a batch (its first token),
        decode it n_out - 1 steps, then the next batch."""
        n, m = workload.n_in, workload.n_out
        slots = self._kv_slots_or_error(workload)
        size = min(workload.max_batch_size or workload.requests, workload.requests)
        if size > slots:
            raise ConfigError(
                f"{workload.label()}: a batch of {size} needs "
                f"{size * (n + m) * self.model.kv_bytes_per_token / 1e9:.1f} GB of KV cache, more than the "
                f"{self.kv_pool_bytes / 1e9:.1f} GB left on a {self.gpu.name}; set max_batch_size to {slots} or less"
            )
        out = RunCost(concurrency=size)
        steps: list[np.ndarray] = []
        left = workload.requests
        while left:
            b = min(size, left)
            left -= b
            pre = self.model.cost(tokens=b * n, logits=b, pairs=b * n * (n + 1) / 2, kv_read=b * n, kv_write=b * n)
            out.prefill_s += pre.total_seconds
            out.prefill_j += pre.total_joules
            steps.append(pre.seconds)
            if m > 1:
                ctx = n + np.arange(1, m, dtype=float)  # the tokens each sequence attends to
                dec = self.model.cost(tokens=b, logits=b, pairs=b * ctx, kv_read=b * (ctx - 1), kv_write=b)
                out.decode_s += dec.total_seconds
                out.decode_j += dec.total_joules
                steps.append(dec.seconds)
            out.steps += m
            out.sequences_stepped += b * m
        out.seconds = out.prefill_s + out.decode_s
        out.joules = out.prefill_j + out.decode_j
        return out, np.concatenate(steps)

    def schedule_steps(self, workload: Workload) -> tuple[RunCost, np.ndarray]:
        """Step through in-flight batching and add up the physics of every step (no noise)."""
        n, m = workload.n_in, workload.n_out
        slots = self._kv_slots_or_error(workload)
        batch = min(workload.max_batch_size or DEFAULT_MAX_BATCH, workload.requests, slots)
        max_tokens = max(DEFAULT_MAX_NUM_TOKENS, n)  # a longer prompt is chunked; same work
        out = RunCost(concurrency=batch)
        steps: list[np.ndarray] = []
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
                steps.append(cost.seconds)
                out.steps += 1
                out.sequences_stepped += admit + running
                gen = np.concatenate([gen + 1, np.ones(admit, dtype=np.int64)])
                pending -= admit
            else:
                # pure decode until the next request finishes: every step has the same batch
                n_steps = int(m - gen.max())
                s = np.arange(n_steps, dtype=float)
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
                steps.append(np.broadcast_to(cost.seconds, (n_steps,)))
                out.steps += n_steps
                out.sequences_stepped += n_steps * running
                gen = gen + n_steps
            gen = gen[gen < m]
        out.seconds = out.prefill_s + out.decode_s
        out.joules = out.prefill_j + out.decode_j
        return out, np.concatenate(steps)
