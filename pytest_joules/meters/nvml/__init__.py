"""The `nvml` meter: GPU energy from NVML's energy counter, on every GPU the engine uses.

Per window and GPU it reads `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded).
The counter moves in steps (every 0.1 s), so by default each window starts and ends on a tick of
every GPU's counter (see `ticks`): the work starts right after the opening ticks, and the idle
tail before the closing tick is measured and subtracted. Where the GPU has no counter
(pre-Volta) a thread samples power and integrates it instead, shifted for the reading's own
averaging. A delta that is zero, negative (counter reset) or physically implausible makes the
reading invalid with the reason. Everything that can spoil a window is recorded in its info:
temperature, clocks, throttle reasons, other processes on the GPU, GPU utilisation.

The modules, by concern: `api` (the seam: the only code that calls pynvml, which tests replace
with a fake), `devices` (CUDA_VISIBLE_DEVICES, indices and UUIDs to NVML handles), `sampling`
(the power-sampling fallback), `options`, `validity` and `meter` (the meter), `construction` (the
factory), `probes` (`joules doctor`). This package re-exports what the registry, the validation
steps and the tests use.
"""

from __future__ import annotations

from .api import (
    DRIVER_NOT_LOADED,
    FUNCTION_NOT_FOUND,
    GPU_IS_LOST,
    LIB_RM_VERSION_MISMATCH,
    LIBRARY_NOT_FOUND,
    NO_PERMISSION,
    NOT_FOUND,
    NOT_SUPPORTED,
    RESET_REQUIRED,
    NvmlApi,
    NvmlCallError,
    decode_throttle_reasons,
    describe,
    open_api,
)
from .construction import build, create
from .devices import resolve_device, visible_devices
from .meter import NvmlMeter
from .options import NvmlOptions
from .probes import probe
from .sampling import PowerSampler, counter_update_period, integrate, integrate_between, shifted_energy

__all__ = [
    "DRIVER_NOT_LOADED", "FUNCTION_NOT_FOUND", "GPU_IS_LOST", "LIB_RM_VERSION_MISMATCH", "LIBRARY_NOT_FOUND",
    "NO_PERMISSION", "NOT_FOUND", "NOT_SUPPORTED", "RESET_REQUIRED", "NvmlApi", "NvmlCallError", "NvmlMeter",
    "NvmlOptions", "PowerSampler", "build", "counter_update_period", "create", "decode_throttle_reasons",
    "describe", "integrate", "integrate_between", "open_api", "probe", "resolve_device", "shifted_energy",
    "visible_devices",
]
