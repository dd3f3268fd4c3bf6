"""The `sim` meter: reads the simulated device's energy counter and clock at window edges."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..meters.base import MeterReading, MeterSpec, reject_unknown_options

OPTIONS = ("min_window_s",)


class SimMeter:
    name = "sim"

    def __init__(self, device: Any, min_window_s: float = 0.0):
        self.device = device
        self.min_window_s = min_window_s
        self._start: tuple[float, float] | None = None

    def begin(self) -> None:
        self._start = (self.device.clock_s, self.device.energy_j)

    def end(self) -> MeterReading:
        if self._start is None:
            raise RuntimeError("SimMeter.end() called without begin()")
        t0, e0 = self._start
        self._start = None
        seconds = self.device.clock_s - t0
        joules = self.device.energy_j - e0
        problems = [] if joules > 0 else ["the simulated energy counter did not move (nothing ran in the window)"]
        return MeterReading(
            joules={"sim": joules},
            seconds=seconds,
            valid=not problems,
            problems=problems,
            info={"simulated": True},
        )

    def device_info(self) -> dict[str, Any]:
        return self.device.fingerprint()

    def close(self) -> None:
        """Nothing to release."""


def create(spec: MeterSpec, engine: Any) -> SimMeter:
    from ..sim.device import SimDevice

    device = getattr(engine, "sim_device", None)
    if not isinstance(device, SimDevice):
        kind = getattr(engine, "kind", type(engine).__name__)
        raise ConfigError(
            f"the sim meter reads the simulated device; use --joules-meter nvml/rapl for engine {kind!r}"
        )
    options = dict(spec.options or {})
    reject_unknown_options("sim", options, OPTIONS)
    window = options.get("min_window_s", 0.0)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 <= window < math.inf:  # NaN too
        raise ConfigError(f"sim meter min_window_s must be a non-negative number of seconds, got {window!r}")
    return SimMeter(device, float(window))
