"""The NVML API seam: the only code that imports or calls pynvml (nvidia-ml-py).

Every call goes through `NvmlApi`, which tests replace with a fake; every failure is an
`NvmlCallError` carrying NVML's return code, described in words by `describe`. pynvml is imported
when an `NvmlApi` is made, never at import time.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import MeterUnavailable

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

    def lock_sm_clocks(self, handle: Any, mhz: int) -> None:
        """Hold the SM clock at `mhz` (min = max; needs root, Volta or newer)."""
        self._call("nvmlDeviceSetGpuLockedClocks", handle, mhz, mhz)

    def reset_sm_clocks(self, handle: Any) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks", handle)

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


def open_api(api_factory: Callable[[], Any] = NvmlApi) -> Any:
    """Initialise NVML; MeterUnavailable with the cause when it cannot be."""
    api = api_factory()
    try:
        api.init()
    except NvmlCallError as exc:
        raise MeterUnavailable(f"NVML is not usable here: {describe(exc.code, exc.text)}") from None
    return api


def quiet_shutdown(api: Any) -> None:
    try:
        api.shutdown()
    except NvmlCallError:
        pass
