"""The `nvml` meter: GPU energy from NVML's energy counter, on every GPU the engine uses.

Per window and GPU it reads `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded).
The counter moves in steps (every 0.1 s), so by default each window starts and ends on a tick of
every GPU's counter (see `ticks`): the work starts right after the opening ticks, and the idle
tail before the closing tick is measured and subtracted. Where the GPU has no counter
(pre-Volta) a thread samples power and integrates it instead, shifted for the reading's own
averaging. A delta that is zero, negative (counter reset) or physically implausible makes the
reading invalid with the reason. Everything that can spoil a window is recorded in its info:
temperature, clocks, throttle reasons, other processes on the GPU, GPU utilisation.

Every pynvml call goes through `NvmlApi`, the one seam tests replace with a fake.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, InvalidMeasurement, MeterUnavailable
from .base import MeterReading, MeterSpec, bool_option, number_option, reject_unknown_options
from .nvml_devices import check_server_gpus, device_list, server_pids, with_server
from .ticks import CounterStuck, Tick, settle, wait_for_ticks

if TYPE_CHECKING:
    from ..engines.base import DeviceRef, Engine

# NVML return codes (nvml.h; the same values pynvml exposes as NVML_ERROR_*).
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
RESET_REQUIRED = 16
LIB_RM_VERSION_MISMATCH = 18

_CAUSES = {
    LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver is "
    "installed here (in a container, run it with the NVIDIA container toolkit)",
    DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded (nvidia-smi fails too); load the kernel "
    "module or reboot",
    NO_PERMISSION: "no permission to query the GPU; run as a user with access to /dev/nvidia*",
    NOT_SUPPORTED: "not supported on this GPU",
    GPU_IS_LOST: "the GPU is lost (fell off the bus); it needs a reset or a reboot",
    RESET_REQUIRED: "the GPU needs a reset (nvidia-smi -r) or a reboot",
    LIB_RM_VERSION_MISMATCH: "the NVML library and the kernel driver versions differ (driver "
    "upgraded without a reboot); reboot or reload the driver",
    NOT_FOUND: "no such GPU",
    FUNCTION_NOT_FOUND: "the driver is too old for this NVML call",
}

# Clock event ("throttle") reason bits, nvml.h nvmlClocksEventReason*.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: reasons that mean the GPU ran slower than it could for reasons outside the workload
SPOILING_REASONS = {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}


class NvmlCallError(Exception):
    """An NVML call failed; `code` is the NVML return code, `call` the function."""

    def __init__(self, code: int, call: str, text: str = "") -> None:
        self.code = code
        self.call = call
        self.text = text
        super().__init__(f"{call}: {describe(code, text)}")


def describe(code: int, text: str = "") -> str:
    cause = _CAUSES.get(code)
    if cause is None:
        return f"NVML error {code}" + (f" ({text})" if text else "")
    return cause


def decode_throttle_reasons(mask: int) -> list[str]:
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"other(0x{unknown:x})")
    return names


class NvmlApi:
    """The narrow seam over pynvml (nvidia-ml-py). Handles are opaque; every failure is an
    `NvmlCallError`. Tests substitute an object with the same methods."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise MeterUnavailable(
                f"the nvml meter needs nvidia-ml-py (import pynvml failed: {exc}); pip install nvidia-ml-py"
            ) from None
        if not hasattr(pynvml, "_nvmlGetFunctionPointer"):
            raise MeterUnavailable(
                "the installed `pynvml` module is an old unofficial fork; "
                "pip uninstall pynvml && pip install nvidia-ml-py"
            )
        self._nv = pynvml

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nv, name)(*args)
        except self._nv.NVMLError as exc:
            raise NvmlCallError(int(getattr(exc, "value", -1)), name, str(exc)) from None

    def init(self) -> None:
        self._call("nvmlInit")

    def shutdown(self) -> None:
        self._call("nvmlShutdown")

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def handle_by_index(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    def handle_by_pci_bus_id(self, bus_id: str) -> Any:
        # pynvml's nvmlDeviceGetHandleByPciBusId calls nvmlDeviceGetHandleByPciBusId_v2.
        return self._call("nvmlDeviceGetHandleByPciBusId", bus_id)

    def name(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetName", handle))

    def uuid(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", handle))

    def driver_version(self) -> str:
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self) -> int:
        return int(self._call("nvmlSystemGetCudaDriverVersion"))

    def power_limit_mw(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetEnforcedPowerLimit", handle))

    def energy_mj(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", handle))

    def power_mw(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetPowerUsage", handle))

    def temperature_c(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetTemperature", handle, self._nv.NVML_TEMPERATURE_GPU))

    def clocks_mhz(self, handle: Any) -> dict[str, int]:
        return {
            "sm": int(self._call("nvmlDeviceGetClockInfo", handle, self._nv.NVML_CLOCK_SM)),
            "mem": int(self._call("nvmlDeviceGetClockInfo", handle, self._nv.NVML_CLOCK_MEM)),
        }

    def throttle_mask(self, handle: Any) -> int:
        # "ThrottleReasons" was renamed "EventReasons" in newer drivers; the bits are the same.
        name = "nvmlDeviceGetCurrentClocksEventReasons"
        if not hasattr(self._nv, name):
            name = "nvmlDeviceGetCurrentClocksThrottleReasons"
        return int(self._call(name, handle))

    def compute_pids(self, handle: Any) -> list[int]:
        return [int(p.pid) for p in self._call("nvmlDeviceGetComputeRunningProcesses", handle)]

    def mig_enabled(self, handle: Any) -> bool:
        current, _pending = self._call("nvmlDeviceGetMigMode", handle)
        return bool(current)

    def utilization_percent(self, handle: Any) -> float:
        """Percent of the driver's last sample period in which a kernel ran."""
        return float(self._call("nvmlDeviceGetUtilizationRates", handle).gpu)

    def utilization_samples(self, handle: Any, last_seen_us: int) -> list[tuple[int, float]]:
        """(timestamp in us, percent) of the GPU utilisation samples newer than `last_seen_us`
        (0: all the driver keeps). NVML answers NOT_FOUND when it has none."""
        value_type, samples = self._call(
            "nvmlDeviceGetSamples", handle, self._nv.NVML_GPU_UTILIZATION_SAMPLES, last_seen_us
        )
        name = _VALUE_FIELDS.get(int(value_type), "uiVal")
        return [(int(s.timeStamp), float(getattr(s.sampleValue, name))) for s in samples]


#: nvmlValueType_t -> the field of the nvmlValue_t union that holds the value
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- which GPUs --------------------------------------------------------------------------------


def visible_devices(env: dict[str, str] | None = None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries, None when unset (all GPUs visible)."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [e.strip() for e in raw.split(",") if e.strip()]


def _mig_error(what: str) -> MeterUnavailable:
    return MeterUnavailable(
        f"{what} is a MIG slice; NVML cannot measure the energy of MIG slices (only the whole GPU, "
        "which includes every tenant); run on a whole GPU"
    )


def resolve_device(api: Any, ref: DeviceRef, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """The NVML handle of one engine device, and how it was found.

    NVML ignores CUDA_VISIBLE_DEVICES and numbers GPUs its own way, so map by UUID, then PCI bus
    id; a bare CUDA index goes through CUDA_VISIBLE_DEVICES.
    """
    if ref.uuid:
        if ref.uuid.startswith("MIG-"):
            raise _mig_error(f"device {ref.uuid}")
        return api.handle_by_uuid(ref.uuid), f"uuid {ref.uuid}"
    if ref.pci_bus_id:
        return api.handle_by_pci_bus_id(ref.pci_bus_id), f"pci bus id {ref.pci_bus_id}"
    if ref.index is None:
        raise ConfigError("the engine reported a GPU without uuid, pci_bus_id or index; the nvml meter cannot find it")
    visible = visible_devices(env)
    if visible is None:
        return api.handle_by_index(ref.index), f"NVML index {ref.index} (CUDA_VISIBLE_DEVICES unset)"
    if ref.index >= len(visible):
        raise ConfigError(
            f"the engine uses CUDA device {ref.index} but CUDA_VISIBLE_DEVICES={','.join(visible)!r} "
            f"lists only {len(visible)}"
        )
    entry = visible[ref.index]
    if entry.startswith("MIG-"):
        raise _mig_error(f"CUDA device {ref.index} ({entry})")
    if entry.startswith("GPU-"):
        return api.handle_by_uuid(entry), f"uuid {entry} from CUDA_VISIBLE_DEVICES"
    try:
        nvml_index = int(entry)
    except ValueError:
        raise ConfigError(
            f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index nor a GPU-/MIG- UUID"
        ) from None
    how = f"NVML index {nvml_index} from CUDA_VISIBLE_DEVICES"
    order = (env if env is not None else os.environ).get("CUDA_DEVICE_ORDER")
    if order != "PCI_BUS_ID":
        # CUDA numbers fastest-first, NVML by PCI bus; they agree only on identical GPUs.
        how += " (set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA and NVML agree on numbering)"
    return api.handle_by_index(nvml_index), how


def own_pids() -> set[int]:
    """This process and its descendants (engines such as TRT-LLM run workers in child processes)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {me}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # the command name may hold spaces; fields after the last ')' are fixed
                fields = fh.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    mine = {me}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return mine


# -- power sampling fallback ----------------------------------------------------------------
#
# NVML's power reading is not instantaneous: on Hopper it is the average over the last second
# (others differ: option `power_average_s`). A reading at t averages [t - tau, t], so it lags a
# load step by tau/2 on average, and integrating the readings over the work [t0, t1] reads low:
# for a step from P_idle to P_load and back, by 0.5 * (P_load - P_idle) * tau (the rising ramp
# is inside the window, the falling one outside). Integrating over [t0 + tau/2, t1 + tau/2]
# centres both ramps on their steps; what remains is 1/8 * dP * tau per edge, 0.25 * dP * tau
# in all. (The H200's first run: counter 4122 J, unshifted integral 3790 J over 6.03 s.)


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal integral of (seconds, watts) samples: joules."""
    total = 0.0
    for (t0, w0), (t1, w1) in zip(samples, samples[1:]):
        total += (t1 - t0) * (w0 + w1) / 2.0
    return total


def _at(samples: list[tuple[float, float]], t: float) -> float:
    """Watts at time t, interpolated linearly between samples (the nearest one outside them)."""
    if t <= samples[0][0]:
        return samples[0][1]
    for (ta, wa), (tb, wb) in zip(samples, samples[1:]):
        if t <= tb:
            return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)
    return samples[-1][1]


def integrate_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Trapezoidal integral of (seconds, watts) samples over [t0, t1], interpolated at the edges."""
    if not samples or t1 <= t0:
        return 0.0
    inside = [(t, w) for t, w in samples if t0 < t < t1]
    return integrate([(t0, _at(samples, t0)), *inside, (t1, _at(samples, t1))])


def shifted_energy(samples: list[tuple[float, float]], t0: float, t1: float, average_s: float) -> float:
    """Joules of the work in [t0, t1] from power readings that each average the last
    `average_s` seconds: their integral over the window shifted by half the averaging."""
    return integrate_between(samples, t0 + average_s / 2.0, t1 + average_s / 2.0)


class PowerSampler:
    """Samples one GPU's power in a thread, for GPUs without an energy counter. The first and
    last samples are taken synchronously, at start and stop; start before the window opens and
    stop after it closes (plus the averaging shift), so the samples span it."""

    def __init__(self, read_watts: Callable[[], float], interval_s: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._read = read_watts
        self._interval = interval_s
        self._clock = clock
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        watts = self._read()
        self.samples.append((self._clock(), watts))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sample()
            except Exception as exc:  # surfaced by stop(); a thread cannot raise to the caller
                self.error = exc
                return

    def start(self) -> None:
        self.samples = []
        self.error = None
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="joules-nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise self.error
        self._sample()
        return list(self.samples)


# -- the meter ---------------------------------------------------------------------------------


@dataclass
class _Gpu:
    label: str  # the GPU's UUID
    handle: Any
    name: str
    how: str
    power_limit_w: float | None
    counter: bool  # True: energy counter; False: power sampling
    idle_w: float | None = None
    sampler: PowerSampler | None = None
    start: dict[str, Any] = field(default_factory=dict)
    util_mark: int | None = None  # newest utilisation sample (us) before the window; None: no samples


@dataclass
class _Energy:
    """One GPU's energy over a window, before it is judged."""

    joules: float  # the work's energy: corrected for the idle head and tail, or the shifted integral
    source: str
    info: dict[str, Any]
    backwards: bool = False  # the counter went backwards (a reset)
    start_raw: Any = None
    end_raw: Any = None


@dataclass(frozen=True)
class NvmlOptions:
    min_window_s: float = 1.0
    update_period_s: float = 0.1
    sample_interval_s: float = 0.02
    max_power_factor: float = 1.5
    min_watts: float = 5.0
    idle_s: float = 0.0
    all_devices: bool = False
    #: devices=0,1 or GPU-uuid,...: these GPUs (NVML indices or UUIDs), whatever the engine says;
    #: how a server the plugin did not start (the openai engine) is metered
    device_list: tuple[str, ...] = ()
    align: bool = True  # start and end each window on a counter tick (see `ticks`)
    poll_s: float = 0.0005  # how often to read the counter while waiting for a tick
    tick_timeout_s: float = 0.5  # a counter that does not move this long is stuck (default 5 update periods)
    min_sampling_window_s: float = 5.0  # the shortest window power sampling can measure
    power_average_s: float = 1.0  # the power reading averages this long (Hopper: 1 s)

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> NvmlOptions:
        numeric = ("min_window_s", "update_period_s", "sample_interval_s", "max_power_factor", "min_watts", "idle_s",
                   "poll_s", "tick_timeout_s", "min_sampling_window_s", "power_average_s")
        positive = ("poll_s", "tick_timeout_s")
        reject_unknown_options("nvml", spec.options, (*numeric, "devices", "align"))
        values: dict[str, Any] = {
            name: number_option("nvml", spec.options, name, 0.0, positive=name in positive)
            for name in numeric if name in spec.options
        }
        if values.get("sample_interval_s", 1.0) <= 0:
            raise ConfigError("nvml meter option sample_interval_s must be positive")
        values.setdefault("tick_timeout_s", max(0.5, 5 * values.get("update_period_s", cls.update_period_s)))
        devices = spec.options.get("devices", "engine")
        listed = device_list(devices)
        if devices not in ("engine", "all") and not listed:
            raise ConfigError(f"nvml meter option devices must be 'engine', 'all' or a list of NVML indices or GPU "
                              f"UUIDs (devices=0,1), got {devices!r}")
        align = bool_option("nvml", spec.options, "align", True)
        return cls(**values, all_devices=devices == "all", device_list=listed, align=align)



class NvmlMeter:
    name = "nvml"

    def __init__(self, api: Any, gpus: list[_Gpu], options: NvmlOptions,
                 pids: Callable[[], set[int]] = own_pids, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._api = api
        self._clock = clock
        self._sleep = sleep
        self._gpus = gpus
        self._opt = options
        self._own_pids = pids
        self.min_window_s = options.min_window_s
        if any(not g.counter for g in gpus):
            # power sampling needs long windows: make the measurement path repeat the workload
            self.min_window_s = max(self.min_window_s, options.min_sampling_window_s)
        self._t0: float | None = None
        self._stuck: str | None = None  # why the window cannot be aligned (a counter did not move)
        self._waited = 0.0  # seconds this window spent waiting for ticks and the sampling shift
        self._closed = False

    def _counters(self) -> list[_Gpu]:
        return [g for g in self._gpus if g.counter]

    def _sampled(self) -> list[_Gpu]:
        return [g for g in self._gpus if not g.counter]

    # -- window -------------------------------------------------------------------------------
    def begin(self) -> None:
        if self._closed:
            raise MeterUnavailable("the nvml meter was closed")
        self._stuck = None
        for gpu in self._gpus:
            gpu.start = {"temperature_c": self._soft(self._api.temperature_c, gpu), "others": self._others(gpu)}
            gpu.util_mark = self._util_mark(gpu)
        for gpu in self._sampled():  # before the tick wait: the samples must span the window
            gpu.sampler = PowerSampler(lambda g=gpu: self._api.power_mw(g.handle) / 1000.0,
                                       self._opt.sample_interval_s, clock=self._clock)
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

    def _open_on_ticks(self, counters: list[_Gpu]) -> None:
        try:
            ticks = self._ticks(counters, count=1)
        except CounterStuck as exc:
            self._stuck = self._stuck_reason(counters, exc, "before the window")
            for gpu in counters:
                gpu.start.update(tick=None, energy_mj=self._read(gpu))
            return
        for gpu, (tick,) in zip(counters, ticks):
            gpu.start.update(tick=tick, energy_mj=tick.value)

    def _ticks(self, counters: list[_Gpu], count: int) -> list[list[Tick]]:
        reads = [lambda g=gpu: self._read(g) for gpu in counters]
        return wait_for_ticks(reads, self._clock, self._sleep, count=count,
                              poll_s=self._opt.poll_s, timeout_s=self._opt.tick_timeout_s)

    def _read(self, gpu: _Gpu) -> int:
        return self._hard(self._api.energy_mj, gpu, "read the energy counter")

    def _stuck_reason(self, counters: list[_Gpu], exc: CounterStuck, where: str) -> str:
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
            utils = {gpu.label: self._utilization(gpu) for gpu in self._gpus}  # before the idle wait
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
            gpu_info, gpu_problems, gpu_valid = self._judge(gpu, energy, seconds)
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
        if any(g.idle_w is not None for g in self._gpus):
            idle = sum(g.idle_w or 0.0 for g in self._gpus)
            info["idle_watts"] = idle
            info["joules_above_idle"] = sum(joules.values()) - idle * seconds
        return MeterReading(joules=joules, seconds=seconds, valid=valid, problems=problems, info=info)

    # -- closing the counters -------------------------------------------------------------------
    def _close_counters(self, t0: float, work_end: float) -> dict[str, _Energy]:
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

    def _aligned(self, gpu: _Gpu, t0: float, work_end: float, end: Tick, after: Tick) -> _Energy:
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
        return _Energy(r.delta / 1000.0, "energy counter", info, backwards=r.raw_delta < 0 or r.tail_rate < 0,
                       start_raw=start.value, end_raw=after.value if r.tail_rate < 0 else end.value)

    def _plain(self, gpu: _Gpu, end_raw: int, seconds: float) -> _Energy:
        delta_j = (end_raw - gpu.start["energy_mj"]) / 1000.0
        # Each read may be up to one update period stale, the two errors of opposite sign: at
        # most one period of the edges' power, the window's average standing in for it.
        bound = self._opt.update_period_s * max(delta_j, 0.0) / seconds if seconds > 0 else None
        info = {"aligned": False, "raw_joules": delta_j, "tick_bound_j": bound, "tail_s": 0.0, "tail_joules": 0.0}
        return _Energy(delta_j, "energy counter", info, backwards=delta_j < 0,
                       start_raw=gpu.start["energy_mj"], end_raw=end_raw)

    # -- closing the power samplers ---------------------------------------------------------------
    def _close_samplers(self, t0: float, work_end: float) -> dict[str, _Energy]:
        sampled = self._sampled()
        if not sampled:
            return {}
        tau = self._opt.power_average_s
        wait = work_end + tau / 2.0 - self._clock()
        if wait > 0:  # the readings of the window's last tau/2 arrive that much later
            self._sleep(wait)
        out: dict[str, _Energy] = {}
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
            out[gpu.label] = _Energy(joules, f"power sampling ({len(samples)} samples, shifted {tau / 2:g} s)", info)
        return out

    # -- utilisation ------------------------------------------------------------------------------
    def _util_mark(self, gpu: _Gpu) -> int | None:
        """The newest utilisation sample before the window: later ones fall inside it."""
        try:
            samples = self._api.utilization_samples(gpu.handle, 0)
        except NvmlCallError as exc:
            self._raise_if_lost(gpu, exc)
            return 0 if exc.code == NOT_FOUND else None  # NOT_FOUND: none kept yet, every later one is new
        return max((ts for ts, _ in samples), default=0)

    def _utilization(self, gpu: _Gpu) -> tuple[float | None, int]:
        """The GPU's busy fraction over the window and how many driver samples it averages; from
        the driver's last sample period (0 samples) where it keeps none; None where unsupported."""
        values: list[float] = []
        if gpu.util_mark is not None:
            try:
                samples = self._api.utilization_samples(gpu.handle, gpu.util_mark)
            except NvmlCallError as exc:
                self._raise_if_lost(gpu, exc)
                samples = []
            # drivers now and then report garbage (values far above 100): leave those out
            values = [v for ts, v in samples if ts > gpu.util_mark and 0.0 <= v <= 100.0]
        if values:
            return sum(values) / len(values) / 100.0, len(values)
        percent = self._soft(self._api.utilization_percent, gpu)
        if percent is None or not 0.0 <= percent <= 100.0:
            return None, 0
        return percent / 100.0, 0

    # -- judging ----------------------------------------------------------------------------------
    def _judge(self, gpu: _Gpu, energy: _Energy, seconds: float) -> tuple[dict[str, Any], list[str], bool]:
        """Record what the window was like on one GPU, and whether its energy is believable."""
        problems: list[str] = []
        valid = True
        who = f"GPU {gpu.label} ({gpu.name})"
        delta_j = energy.joules
        watts = delta_j / seconds if seconds > 0 else float("nan")
        if energy.backwards:
            valid = False
            problems.append(
                f"{who}: the energy counter went backwards ({energy.start_raw} -> {energy.end_raw} mJ): "
                "counter reset (driver reload?); window discarded"
            )
        elif delta_j == 0:
            valid = False
            problems.append(
                f"{who}: zero energy in a {seconds:.3f} s window: the counter did not move "
                "(window shorter than its update period, or the counter is stuck); raise min_window_s"
            )
        elif seconds > 0 and watts < self._opt.min_watts:
            valid = False
            problems.append(f"{who}: implausibly low average power {watts:.2f} W (floor {self._opt.min_watts:g} W)")
        elif gpu.power_limit_w and watts > self._opt.max_power_factor * gpu.power_limit_w:
            valid = False
            problems.append(
                f"{who}: implausible average power {watts:.1f} W, above {self._opt.max_power_factor:g}x "
                f"the enforced power limit of {gpu.power_limit_w:g} W"
            )
        if not gpu.counter and seconds < self._opt.min_sampling_window_s:
            valid = False
            problems.append(
                f"{who}: a {seconds:.3f} s window is too short for power sampling (minimum "
                f"{self._opt.min_sampling_window_s:g} s, meter option min_sampling_window_s): the power "
                f"reading averages over {self._opt.power_average_s:g} s and lags every load change; "
                "run the workload longer"
            )
        others = sorted(set(gpu.start.get("others") or []) | set(self._others(gpu) or []))
        if others:
            problems.append(f"{who}: other processes used the GPU during the window (pids {', '.join(map(str, others))})")
        mask = self._soft(self._api.throttle_mask, gpu)
        reasons = decode_throttle_reasons(mask) if mask is not None else None
        spoiling = sorted(SPOILING_REASONS.intersection(reasons or []))
        if spoiling:
            problems.append(f"{who}: clocks slowed by {', '.join(spoiling)} at the end of the window")
        info = {
            "name": gpu.name,
            "uuid": gpu.label,
            "mapped_by": gpu.how,
            "joules": delta_j,
            "avg_watts": watts,
            "power_limit_w": gpu.power_limit_w,
            "temperature_c_start": gpu.start.get("temperature_c"),
            "temperature_c_end": self._soft(self._api.temperature_c, gpu),
            "clocks_mhz": self._soft(self._api.clocks_mhz, gpu),
            "throttle_reasons": reasons,
            "other_pids": others,
        }
        if gpu.idle_w is not None:
            info["idle_watts"] = gpu.idle_w
            info["joules_above_idle"] = delta_j - gpu.idle_w * seconds
        return info, problems, valid

    def _others(self, gpu: _Gpu) -> list[int] | None:
        pids = self._soft(self._api.compute_pids, gpu)
        if pids is None:
            return None
        mine = self._own_pids()
        return sorted(p for p in pids if p not in mine)

    def _soft(self, fn: Callable[[Any], Any], gpu: _Gpu) -> Any:
        """Auxiliary facts: None when this GPU or driver does not report them."""
        try:
            return fn(gpu.handle)
        except NvmlCallError as exc:
            self._raise_if_lost(gpu, exc)
            return None

    @staticmethod
    def _raise_if_lost(gpu: _Gpu, exc: NvmlCallError) -> None:
        if exc.code in (GPU_IS_LOST, RESET_REQUIRED):
            raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): {exc}") from None

    def _hard(self, fn: Callable[[Any], Any], gpu: _Gpu, what: str) -> Any:
        try:
            return fn(gpu.handle)
        except NvmlCallError as exc:
            raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): could not {what}: {exc}") from None

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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_samplers()
        try:
            self._api.shutdown()
        except NvmlCallError:
            pass


# -- construction ------------------------------------------------------------------------------


def open_api(api_factory: Callable[[], Any] = NvmlApi) -> Any:
    """Initialise NVML; MeterUnavailable with the cause when it cannot be."""
    api = api_factory()
    try:
        api.init()
    except NvmlCallError as exc:
        raise MeterUnavailable(f"NVML is not usable here: {describe(exc.code, exc.text)}") from None
    return api


def _probe_gpu(api: Any, handle: Any, how: str, opt: NvmlOptions) -> _Gpu:
    uuid = api.uuid(handle)
    name = api.name(handle)
    try:
        if api.mig_enabled(handle):
            raise MeterUnavailable(
                f"GPU {uuid} ({name}) has MIG enabled; NVML cannot measure the energy of MIG "
                "slices; disable MIG (nvidia-smi -mig 0) or run on a GPU without it"
            )
    except NvmlCallError:
        pass  # GPUs without MIG support report NotSupported
    try:
        limit_w: float | None = api.power_limit_mw(handle) / 1000.0
    except NvmlCallError:
        limit_w = None
    try:
        api.energy_mj(handle)
        counter = True
    except NvmlCallError as exc:
        if exc.code != NOT_SUPPORTED:
            raise MeterUnavailable(f"GPU {uuid} ({name}): cannot read the energy counter: {exc}") from None
        try:
            api.power_mw(handle)
        except NvmlCallError as exc2:
            raise MeterUnavailable(
                f"GPU {uuid} ({name}) has no energy counter and no power reading ({exc2}); "
                "the nvml meter cannot measure it"
            ) from None
        counter = False
    return _Gpu(label=uuid, handle=handle, name=name, how=how, power_limit_w=limit_w, counter=counter)


def _idle_watts(api: Any, gpu: _Gpu, seconds: float, interval: float) -> float:
    sampler = PowerSampler(lambda: api.power_mw(gpu.handle) / 1000.0, interval)
    sampler.start()
    time.sleep(seconds)
    samples = sampler.stop()
    span = samples[-1][0] - samples[0][0]
    return integrate(samples) / span if span > 0 else samples[-1][1]


def build(spec: MeterSpec, engine: Engine, api_factory: Callable[[], Any] = NvmlApi,
          env: dict[str, str] | None = None, pids: Callable[[], set[int]] = own_pids,
          clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> NvmlMeter:
    """`create` with its seams open: the NVML API, the environment, our PIDs, the clock and the
    sleep used while waiting for counter ticks."""
    opt = NvmlOptions.from_spec(spec)
    refs = list(engine.devices())
    if not refs and not opt.all_devices and not opt.device_list:
        raise MeterUnavailable(
            f"engine {engine.kind!r} reports no GPU (it runs on the CPU, or serves from another process), so the "
            "nvml meter has nothing to meter; name the GPUs with meter option devices=0,1 (NVML indices or UUIDs), "
            "use --joules-meter rapl or none, or meter option devices=all to meter every visible GPU anyway"
        )
    api = open_api(api_factory)
    try:
        found: list[tuple[Any, str]] = []
        if opt.device_list:
            for entry in opt.device_list:
                try:
                    found.append((api.handle_by_uuid(entry), f"uuid {entry} (meter option devices)") if entry.startswith("GPU-")
                                 else (api.handle_by_index(int(entry)), f"NVML index {entry} (meter option devices)"))
                except NvmlCallError as exc:
                    raise MeterUnavailable(f"meter option devices: no GPU {entry} in NVML: {exc}") from None
        elif refs:
            for ref in refs:
                try:
                    found.append(resolve_device(api, ref, env))
                except NvmlCallError as exc:
                    raise MeterUnavailable(f"cannot find the engine's GPU {ref} in NVML: {exc}") from None
        else:
            from ..engines.base import DeviceRef

            visible = visible_devices(env)
            count = len(visible) if visible is not None else api.device_count()
            found = [resolve_device(api, DeviceRef(index=i), env) for i in range(count)]
            if not found:
                raise MeterUnavailable("NVML sees no GPU to meter")
        gpus: dict[str, _Gpu] = {}
        for handle, how in found:
            gpu = _probe_gpu(api, handle, how, opt)
            gpus.setdefault(gpu.label, gpu)  # the same GPU named twice is metered once
        server = server_pids(engine)
        if server:
            check_server_gpus(api, engine, list(gpus.values()), server)
            pids = with_server(pids, server)
        for gpu in gpus.values():
            if opt.idle_s > 0:
                gpu.idle_w = _idle_watts(api, gpu, opt.idle_s, opt.sample_interval_s)
    except NvmlCallError as exc:
        _quiet_shutdown(api)
        raise MeterUnavailable(f"NVML failed while setting up the meter: {exc}") from None
    except BaseException:
        _quiet_shutdown(api)
        raise
    return NvmlMeter(api, list(gpus.values()), opt, pids=pids, clock=clock, sleep=sleep)


def _quiet_shutdown(api: Any) -> None:
    try:
        api.shutdown()
    except NvmlCallError:
        pass


def create(spec: MeterSpec, engine: Engine) -> NvmlMeter:
    return build(spec, engine)


def counter_update_period(api: Any, handle: Any, seconds: float = 2.0) -> float | None:
    """Median interval (s) between changes of one GPU's energy counter, polled in a tight loop
    for `seconds`; None when it did not change at least twice."""
    changes: list[float] = []
    last = api.energy_mj(handle)
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        value = api.energy_mj(handle)
        if value != last:
            changes.append(time.perf_counter())
            last = value
    gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
    return gaps[len(gaps) // 2] if gaps else None


def probe(api_factory: Callable[[], Any] = NvmlApi) -> tuple[bool, str, list[dict[str, Any]]]:
    """For `joules doctor`: whether NVML works, why not, and each GPU it sees."""
    try:
        api = open_api(api_factory)
    except MeterUnavailable as exc:
        return False, str(exc), []
    gpus: list[dict[str, Any]] = []
    try:
        for i in range(api.device_count()):
            entry: dict[str, Any] = {"index": i}
            try:
                handle = api.handle_by_index(i)
                entry.update(name=api.name(handle), uuid=api.uuid(handle))
                try:
                    entry["mig"] = api.mig_enabled(handle)
                except NvmlCallError:
                    entry["mig"] = False
                try:
                    entry["power_limit_w"] = api.power_limit_mw(handle) / 1000.0
                except NvmlCallError:
                    entry["power_limit_w"] = None
                try:
                    api.energy_mj(handle)
                    entry["energy"] = "counter"
                except NvmlCallError as exc:
                    entry["energy"] = "power sampling" if exc.code == NOT_SUPPORTED else None
                    entry["reason"] = f"energy counter: {exc}"
                entry["usable"] = entry["energy"] is not None and not entry["mig"]
                if entry["mig"]:
                    entry["reason"] = "MIG enabled: NVML cannot measure MIG slices"
            except NvmlCallError as exc:
                entry.update(usable=False, reason=str(exc))
            gpus.append(entry)
    except NvmlCallError as exc:
        return False, f"NVML failed: {exc}", gpus
    finally:
        _quiet_shutdown(api)
    if not gpus:
        return False, "NVML works but sees no GPU", gpus
    usable = [g for g in gpus if g.get("usable")]
    if not usable:
        return False, "no GPU here can be metered (see the GPU lines)", gpus
    return True, f"{len(usable)} of {len(gpus)} GPU(s) can be metered", gpus
