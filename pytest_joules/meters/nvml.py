"""The `nvml` meter: GPU energy from NVML's energy counter, on every GPU the engine uses.

Per window and GPU it reads `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded)
at both edges; where the GPU has no counter (pre-Volta) a thread samples power and integrates
it instead. A delta that is zero, negative (counter reset) or physically implausible makes the
reading invalid with the reason. Everything that can spoil a window is recorded in its info:
temperature, clocks, throttle reasons, other processes on the GPU.

Every pynvml call goes through `NvmlApi`, the one seam tests replace with a fake.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, InvalidMeasurement, MeterUnavailable
from .base import MeterReading, MeterSpec, number_option, reject_unknown_options

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


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal integral of (seconds, watts) samples: joules."""
    total = 0.0
    for (t0, w0), (t1, w1) in zip(samples, samples[1:]):
        total += (t1 - t0) * (w0 + w1) / 2.0
    return total


class PowerSampler:
    """Samples one GPU's power in a thread, for GPUs without an energy counter. The first and
    last samples are taken synchronously at the window edges, so the integral spans the window."""

    def __init__(self, read_watts: Callable[[], float], interval_s: float) -> None:
        self._read = read_watts
        self._interval = interval_s
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.samples.append((time.perf_counter(), self._read()))

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


@dataclass(frozen=True)
class NvmlOptions:
    min_window_s: float = 1.0
    update_period_s: float = 0.1
    sample_interval_s: float = 0.02
    max_power_factor: float = 1.5
    min_watts: float = 5.0
    idle_s: float = 0.0
    all_devices: bool = False

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> NvmlOptions:
        numeric = ("min_window_s", "update_period_s", "sample_interval_s", "max_power_factor", "min_watts", "idle_s")
        reject_unknown_options("nvml", spec.options, (*numeric, "devices"))
        values = {name: number_option("nvml", spec.options, name, 0.0) for name in numeric if name in spec.options}
        if values.get("sample_interval_s", 1.0) <= 0:
            raise ConfigError("nvml meter option sample_interval_s must be positive")
        devices = spec.options.get("devices", "engine")
        if devices not in ("engine", "all"):
            raise ConfigError(f"nvml meter option devices must be 'engine' or 'all', got {devices!r}")
        return cls(**values, all_devices=devices == "all")


class NvmlMeter:
    name = "nvml"

    def __init__(self, api: Any, gpus: list[_Gpu], options: NvmlOptions,
                 pids: Callable[[], set[int]] = own_pids, clock: Callable[[], float] = time.perf_counter) -> None:
        self._api = api
        self._clock = clock
        self._gpus = gpus
        self._opt = options
        self._own_pids = pids
        self.min_window_s = options.min_window_s
        self._t0: float | None = None
        self._closed = False

    # -- window -------------------------------------------------------------------------------
    def begin(self) -> None:
        if self._closed:
            raise MeterUnavailable("the nvml meter was closed")
        for gpu in self._gpus:
            gpu.start = {"temperature_c": self._soft(self._api.temperature_c, gpu), "others": self._others(gpu)}
        # Read the counters last and together, as close to the window edge as possible.
        self._t0 = self._clock()
        for gpu in self._gpus:
            if gpu.counter:
                gpu.start["energy_mj"] = self._hard(self._api.energy_mj, gpu, "read the energy counter")
            else:
                gpu.sampler = PowerSampler(lambda g=gpu: self._api.power_mw(g.handle) / 1000.0, self._opt.sample_interval_s)
                gpu.sampler.start()

    def end(self) -> MeterReading:
        if self._t0 is None:
            raise RuntimeError("nvml meter: end() called without begin()")
        joules: dict[str, float] = {}
        ends: dict[str, Any] = {}
        for gpu in self._gpus:
            if gpu.counter:
                ends[gpu.label] = self._hard(self._api.energy_mj, gpu, "read the energy counter")
            else:
                assert gpu.sampler is not None
                try:
                    ends[gpu.label] = gpu.sampler.stop()
                except NvmlCallError as exc:
                    raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): power sampling failed: {exc}") from None
        seconds = self._clock() - self._t0
        self._t0 = None

        problems: list[str] = []
        info: dict[str, Any] = {"gpus": {}, "window_s": seconds}
        valid = True
        if seconds < self._opt.update_period_s:
            valid = False
            problems.append(
                f"window of {seconds:.3f} s is shorter than the NVML counter's update period "
                f"({self._opt.update_period_s:g} s); raise min_window_s"
            )
        for gpu in self._gpus:
            if gpu.counter:
                delta_j = (ends[gpu.label] - gpu.start["energy_mj"]) / 1000.0
                source = "energy counter"
            else:
                samples = ends[gpu.label]
                delta_j = integrate(samples)
                source = f"power sampling ({len(samples)} samples)"
            gpu_info, gpu_problems, gpu_valid = self._judge(gpu, delta_j, seconds, ends.get(gpu.label))
            gpu_info["source"] = source
            info["gpus"][gpu.label] = gpu_info
            problems.extend(gpu_problems)
            valid = valid and gpu_valid
            joules[gpu.label] = delta_j
        if any(g.idle_w is not None for g in self._gpus):
            idle = sum(g.idle_w or 0.0 for g in self._gpus)
            info["idle_watts"] = idle
            info["joules_above_idle"] = sum(joules.values()) - idle * seconds
        return MeterReading(joules=joules, seconds=seconds, valid=valid, problems=problems, info=info)

    def _judge(self, gpu: _Gpu, delta_j: float, seconds: float, end_raw: Any) -> tuple[dict[str, Any], list[str], bool]:
        """Record what the window was like on one GPU, and whether its delta is believable."""
        problems: list[str] = []
        valid = True
        who = f"GPU {gpu.label} ({gpu.name})"
        watts = delta_j / seconds if seconds > 0 else float("nan")
        if gpu.counter and delta_j < 0:
            valid = False
            problems.append(
                f"{who}: the energy counter went backwards ({gpu.start['energy_mj']} -> {end_raw} mJ): "
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
            if exc.code in (GPU_IS_LOST, RESET_REQUIRED):
                raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): {exc}") from None
            return None

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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for gpu in self._gpus:
            if gpu.sampler is not None:
                try:
                    gpu.sampler.stop()
                except Exception:
                    pass
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
          clock: Callable[[], float] = time.perf_counter) -> NvmlMeter:
    """`create` with its seams open: the NVML API, the environment, our PIDs, the clock."""
    opt = NvmlOptions.from_spec(spec)
    refs = list(engine.devices())
    if not refs and not opt.all_devices:
        raise MeterUnavailable(
            f"engine {engine.kind!r} reports no GPU (it runs on the CPU), so the nvml meter has "
            "nothing to meter; use --joules-meter rapl or none, or meter option devices=all to "
            "meter every visible GPU anyway"
        )
    api = open_api(api_factory)
    try:
        found: list[tuple[Any, str]] = []
        if refs:
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
        for gpu in gpus.values():
            if opt.idle_s > 0:
                gpu.idle_w = _idle_watts(api, gpu, opt.idle_s, opt.sample_interval_s)
    except NvmlCallError as exc:
        _quiet_shutdown(api)
        raise MeterUnavailable(f"NVML failed while setting up the meter: {exc}") from None
    except BaseException:
        _quiet_shutdown(api)
        raise
    return NvmlMeter(api, list(gpus.values()), opt, pids=pids, clock=clock)


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
