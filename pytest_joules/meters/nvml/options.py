"""The nvml meter's options, and what it holds about each GPU it meters and each window's energy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ..base import MeterSpec, bool_option, number_option, reject_unknown_options
from .sampling import PowerSampler


@dataclass
class MeteredGpu:
    """One GPU the meter reads: how it was found, and what it recorded when the window opened."""

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
class GpuEnergy:
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
    # optional, off by default (meters/nvml/conditions.py): hold the SM clock (needs root) and warm
    # the GPU up until its temperature settles before the first window
    lock_sm_clock_mhz: float = 0.0
    precondition_s: float = 0.0  # at most this long; 0: off
    settle_c: float = 1.0  # settled: the temperature rose less than this over settle_window_s
    settle_window_s: float = 30.0

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> NvmlOptions:
        numeric = ("min_window_s", "update_period_s", "sample_interval_s", "max_power_factor", "min_watts", "idle_s",
                   "poll_s", "tick_timeout_s", "min_sampling_window_s", "power_average_s",
                   "lock_sm_clock_mhz", "precondition_s", "settle_c", "settle_window_s")
        positive = ("poll_s", "tick_timeout_s", "settle_c", "settle_window_s")
        reject_unknown_options("nvml", spec.options, (*numeric, "devices", "align"))
        values: dict[str, Any] = {
            name: number_option("nvml", spec.options, name, 0.0, positive=name in positive)
            for name in numeric if name in spec.options
        }
        if values.get("sample_interval_s", 1.0) <= 0:
            raise ConfigError("nvml meter option sample_interval_s must be positive")
        values.setdefault("tick_timeout_s", max(0.5, 5 * values.get("update_period_s", cls.update_period_s)))
        devices = spec.options.get("devices", "engine")
        from .server import device_list

        listed = device_list(devices)
        if devices not in ("engine", "all") and not listed:
            raise ConfigError(f"nvml meter option devices must be 'engine', 'all' or a list of NVML indices or GPU "
                              f"UUIDs (devices=0,1), got {devices!r}")
        align = bool_option("nvml", spec.options, "align", True)
        return cls(**values, all_devices=devices == "all", device_list=listed, align=align)
