"""The nvml meter: one window over the energy counters (or power samplers) of every GPU it meters.

The counter moves in steps (every 0.1 s), so by default each window starts and ends on a tick of
every GPU's counter (see `ticks`): the work starts right after the opening ticks, and the idle
tail before the closing tick is measured and subtracted. GPUs without a counter are power-sampled
(`sampling`), the integral shifted for the reading's own averaging.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ...errors import InvalidMeasurement, MeterUnavailable
from ..base import MeterReading
from ..ticks import CounterStuck, Tick, settle, wait_for_ticks
from .api import NvmlCallError
from .conditions import precondition, reset_clocks, start_state, window_state
from .devices import own_pids
from .validity import WindowJudge
from .options import GpuEnergy, MeteredGpu, NvmlOptions
from .sampling import PowerSampler, integrate_between, shifted_energy


class NvmlMeter:
    name = "nvml"

    def __init__(self, api: Any, gpus: list[MeteredGpu], options: NvmlOptions,
                 pids: Callable[[], set[int]] = own_pids, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._api = api
        self._clock = clock
        self._sleep = sleep
        self._gpus = gpus
        self._opt = options
        self._judge = WindowJudge(api, options, pids)
        self.min_window_s = options.min_window_s
        if any(not g.counter for g in gpus):
            # power sampling needs long windows: make the measurement path repeat the workload
            self.min_window_s = max(self.min_window_s, options.min_sampling_window_s)
        self._t0: float | None = None
        self._stuck: str | None = None  # why the window cannot be aligned (a counter did not move)
        self._waited = 0.0  # seconds this window spent waiting for ticks and the sampling shift
        self._closed = False
        #: GPUs whose SM clock the meter locked (meter option lock_sm_clock_mhz), reset at close
        self.locked: list[MeteredGpu] = []
        #: what preconditioning did, recorded in the next window's info (once)
        self._preconditioned: dict[str, Any] | None = None
        self._precondition_done = options.precondition_s <= 0

    def _counters(self) -> list[MeteredGpu]:
        return [g for g in self._gpus if g.counter]

    def _watts_of(self, gpu: MeteredGpu) -> Callable[[], float]:
        """This GPU's power draw now (W), for its sampling thread."""
        return lambda: self._api.power_mw(gpu.handle) / 1000.0

    def _sampled(self) -> list[MeteredGpu]:
        return [g for g in self._gpus if not g.counter]

    # -- window -------------------------------------------------------------------------------
    def begin(self) -> None:
        if self._closed:
            raise MeterUnavailable("the nvml meter was closed")
        self._stuck = None
        for gpu in self._gpus:
            gpu.start = {**start_state(self._api, gpu, self._judge.soft), "others": self._judge.others(gpu)}
            gpu.util_mark = self._judge.util_mark(gpu)
        for gpu in self._sampled():  # before the tick wait: the samples must span the window
            gpu.sampler = PowerSampler(self._watts_of(gpu), self._opt.sample_interval_s, clock=self._clock)
            gpu.sampler.start()
        # The counters last and together, as close to the window edge as possible.
        before = self._clock()
        counters = self._counters()
        try:
            if self._opt.align and counters:
                self._open_on_ticks(counters)
            else:
                for gpu in counters:
                    gpu.start["energy_mj"] = self._read(gpu)
        except BaseException:
            self._stop_samplers()  # no window opened: leave no thread behind
            raise
        self._t0 = self._clock()  # the work starts now: right after the last GPU's tick
        self._waited = self._t0 - before

    def _open_on_ticks(self, counters: list[MeteredGpu]) -> None:
        try:
            ticks = self._ticks(counters, count=1)
        except CounterStuck as exc:
            self._stuck = self._stuck_reason(counters, exc, "before the window")
            for gpu in counters:
                gpu.start.update(tick=None, energy_mj=self._read(gpu))
            return
        for gpu, (tick,) in zip(counters, ticks):
            gpu.start.update(tick=tick, energy_mj=tick.value)

    def _ticks(self, counters: list[MeteredGpu], count: int) -> list[list[Tick]]:
        reads = [lambda g=gpu: self._read(g) for gpu in counters]
        return wait_for_ticks(reads, self._clock, self._sleep, count=count,
                              poll_s=self._opt.poll_s, timeout_s=self._opt.tick_timeout_s)

    def _read(self, gpu: MeteredGpu) -> int:
        return self._judge.hard(self._api.energy_mj, gpu, "read the energy counter")

    def _stuck_reason(self, counters: list[MeteredGpu], exc: CounterStuck, where: str) -> str:
        names = ", ".join(f"GPU {counters[i].label} ({counters[i].name})" for i in exc.stuck)
        return (
            f"{names}: the energy counter did not move for {self._opt.tick_timeout_s:g} s {where} (it should "
            f"every {self._opt.update_period_s:g} s): stuck, or not updated on this GPU; window discarded. "
            "If this GPU's counter never moves, use meter option align=false"
        )

    def end(self) -> MeterReading:
        if self._t0 is None:
            raise RuntimeError("nvml meter: end() called without begin()")
        work_end = self._clock()  # the caller synced the device: the work is done
        t0, self._t0 = self._t0, None
        try:
            utils = {gpu.label: self._judge.utilization(gpu) for gpu in self._gpus}  # before the idle wait
            energies = self._close_counters(t0, work_end)
        except BaseException:
            self._stop_samplers()
            raise
        energies.update(self._close_samplers(t0, work_end))
        self._waited += self._clock() - work_end
        seconds = work_end - t0

        problems: list[str] = []
        info: dict[str, Any] = {"gpus": {}, "window_s": seconds, "tick_wait_s": self._waited}
        valid = True
        if seconds < self._opt.update_period_s:
            valid = False
            problems.append(
                f"window of {seconds:.3f} s is shorter than the NVML counter's update period "
                f"({self._opt.update_period_s:g} s); raise min_window_s"
            )
        if self._stuck is not None:
            valid = False
            problems.append(self._stuck)
        joules: dict[str, float] = {}
        for gpu in self._gpus:
            energy = energies[gpu.label]
            gpu_info, gpu_problems, gpu_valid = self._judge.judge(gpu, energy, seconds)
            gpu_info.update(energy.info, source=energy.source)
            gpu_info["gpu_util"], gpu_info["gpu_util_samples"] = utils[gpu.label]
            info["gpus"][gpu.label] = gpu_info
            problems.extend(gpu_problems)
            valid = valid and gpu_valid
            joules[gpu.label] = energy.joules
        bounds = [g["tick_bound_j"] for g in info["gpus"].values() if g["tick_bound_j"] is not None]
        info["tick_bound_j"] = sum(bounds) if bounds else None
        known = [g["gpu_util"] for g in info["gpus"].values() if g["gpu_util"] is not None]
        info["gpu_util"] = sum(known) / len(known) if known else None
        info["state"] = window_state(info["gpus"], self._opt.lock_sm_clock_mhz if self.locked else 0.0)
        if self._preconditioned is not None:
            info["preconditioned"], self._preconditioned = self._preconditioned, None
        if any(g.idle_w is not None for g in self._gpus):
            idle = sum(g.idle_w or 0.0 for g in self._gpus)
            info["idle_watts"] = idle
            info["joules_above_idle"] = sum(joules.values()) - idle * seconds
        return MeterReading(joules=joules, seconds=seconds, valid=valid, problems=problems, info=info)

    # -- closing the counters -------------------------------------------------------------------
    def _close_counters(self, t0: float, work_end: float) -> dict[str, GpuEnergy]:
        counters = self._counters()
        if self._opt.align and counters and self._stuck is None:
            try:
                ticks = self._ticks(counters, count=2)  # the closing tick and the one after it
            except CounterStuck as exc:
                self._stuck = self._stuck_reason(counters, exc, "after the window")
            else:
                return {gpu.label: self._aligned(gpu, t0, work_end, end, after)
                        for gpu, (end, after) in zip(counters, ticks)}
        return {gpu.label: self._plain(gpu, self._read(gpu), work_end - t0) for gpu in counters}

    def _aligned(self, gpu: MeteredGpu, t0: float, work_end: float, end: Tick, after: Tick) -> GpuEnergy:
        start: Tick = gpu.start["tick"]
        r = settle(start, work_end, end, after, work_start=t0)
        idle_w = r.tail_rate / 1000.0  # mJ/s -> W
        info = {
            "aligned": True,
            "raw_joules": r.raw_delta / 1000.0,
            "tick_bound_j": r.bound / 1000.0,
            "tail_s": r.tail_s,
            "tail_joules": idle_w * r.tail_s,
            "head_s": r.head_s,  # this GPU ticked before the last one: it idled until the work began
            "head_joules": idle_w * r.head_s,
            "tail_watts": idle_w,
            "tick_latency_s": max(start.latency_s, end.latency_s, after.latency_s),
        }
        return GpuEnergy(r.delta / 1000.0, "energy counter", info, backwards=r.raw_delta < 0 or r.tail_rate < 0,
                       start_raw=start.value, end_raw=after.value if r.tail_rate < 0 else end.value)

    def _plain(self, gpu: MeteredGpu, end_raw: int, seconds: float) -> GpuEnergy:
        delta_j = (end_raw - gpu.start["energy_mj"]) / 1000.0
        # Each read may be up to one update period stale, the two errors of opposite sign: at
        # most one period of the edges' power, the window's average standing in for it.
        bound = self._opt.update_period_s * max(delta_j, 0.0) / seconds if seconds > 0 else None
        info = {"aligned": False, "raw_joules": delta_j, "tick_bound_j": bound, "tail_s": 0.0, "tail_joules": 0.0}
        return GpuEnergy(delta_j, "energy counter", info, backwards=delta_j < 0,
                       start_raw=gpu.start["energy_mj"], end_raw=end_raw)

    # -- closing the power samplers ---------------------------------------------------------------
    def _close_samplers(self, t0: float, work_end: float) -> dict[str, GpuEnergy]:
        sampled = self._sampled()
        if not sampled:
            return {}
        tau = self._opt.power_average_s
        wait = work_end + tau / 2.0 - self._clock()
        if wait > 0:  # the readings of the window's last tau/2 arrive that much later
            self._sleep(wait)
        out: dict[str, GpuEnergy] = {}
        for gpu in sampled:
            assert gpu.sampler is not None
            try:
                samples = gpu.sampler.stop()
            except NvmlCallError as exc:
                raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): power sampling failed: {exc}") from None
            finally:
                gpu.sampler = None
            joules = shifted_energy(samples, t0, work_end, tau)
            info = {
                "aligned": False, "tick_bound_j": None, "tail_s": None, "tail_joules": None,
                "power_average_s": tau, "unshifted_joules": integrate_between(samples, t0, work_end),
            }
            out[gpu.label] = GpuEnergy(joules, f"power sampling ({len(samples)} samples, shifted {tau / 2:g} s)", info)
        return out

    # -- fingerprint ---------------------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        names = sorted({g.name for g in self._gpus})
        limits = sorted({g.power_limit_w for g in self._gpus if g.power_limit_w is not None})
        try:
            driver: str | None = self._api.driver_version()
        except NvmlCallError:
            driver = None
        try:
            cuda = self._api.cuda_driver_version()
            cuda_text: str | None = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except NvmlCallError:
            cuda_text = None
        return {
            "meter": "nvml",
            "simulated": False,
            "gpu": " + ".join(names),
            "gpu_count": len(self._gpus),
            "power_limit_w": limits[0] if len(limits) == 1 else limits,
            "driver": driver,
            "cuda_driver_version": cuda_text,
            "energy_source": "counter" if all(g.counter for g in self._gpus) else "power sampling",
        }

    def _stop_samplers(self) -> None:
        for gpu in self._gpus:
            if gpu.sampler is not None:
                try:
                    gpu.sampler.stop()
                except Exception:  # the window is abandoned: its samples are not used
                    pass
                gpu.sampler = None

    def precondition(self, run_once: Callable[[], None]) -> None:
        """Meter option precondition_s: once per session, before the first window, run the
        workload until the GPU temperature settles (conditions.py)."""
        if self._precondition_done:
            return
        self._precondition_done = True
        self._preconditioned = precondition(self._api, self._gpus, self._opt, run_once, self._clock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reset_clocks(self._api, self.locked)
        self._stop_samplers()
        try:
            self._api.shutdown()
        except NvmlCallError:
            pass
