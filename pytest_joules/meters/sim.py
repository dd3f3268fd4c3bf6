"""The `sim` meter: reads the simulated device's energy counter like the nvml meter reads NVML's.

The simulated counter moves every 100 ms, as the H200's does, so the meter opens and closes each
window on a counter tick with the same code as the nvml meter (meters/ticks.py): waiting for a
tick advances the simulated clock at the idle GPU's power, exactly as polling costs real time.
`align=false` reads the counter plainly at both edges, to show what alignment removes.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from .base import MeterReading, MeterSpec, bool_option, reject_unknown_options
from . import ticks

OPTIONS = ("min_window_s", "align")
#: like the nvml meter: a window must span many counter updates
DEFAULT_MIN_WINDOW_S = 1.0
#: the simulated poll interval: the tick's time is known to within this
POLL_S = 0.001


def probe() -> tuple[bool, str]:
    """For `joules doctor`."""
    return True, "the SIMULATED H100 (a physical model); always available"


class SimMeter:
    name = "sim"

    def __init__(self, device: Any, min_window_s: float = DEFAULT_MIN_WINDOW_S, align: bool = True):
        self.device = device
        self.min_window_s = min_window_s
        self.align = align
        self._start: ticks.Tick | None = None
        self._busy0 = 0.0
        self._state0: dict[str, Any] = {}

    def _read(self) -> float:
        return float(self.device.energy_mj)

    def _now(self) -> float:
        return float(self.device.clock_s)

    def _ticks(self, count: int) -> list[ticks.Tick]:
        return ticks.wait_for_ticks([self._read], self._now, self.device.wait, count=count, poll_s=POLL_S)[0]

    def begin(self) -> None:
        if self.align:
            self._start = self._ticks(1)[0]
        else:
            self._start = ticks.Tick(value=self._read(), time=self._now(), latency_s=0.0)
        self._busy0 = self.device.busy_s
        self._state0 = self.device.state()  # the device as the window opens

    def end(self) -> MeterReading:
        if self._start is None:
            raise RuntimeError("SimMeter.end() called without begin()")
        start, self._start = self._start, None
        work_end = self._now()
        busy = self.device.busy_s - self._busy0
        info: dict[str, Any] = {"simulated": True, "aligned": self.align}
        if self.align:
            end, after = self._ticks(2)
            r = ticks.settle(start, work_end, end, after)
            joules, seconds = r.delta / 1000.0, r.seconds
            info.update(tick_bound_j=r.bound / 1000.0, tail_s=r.tail_s, tail_joules=r.tail_rate * r.tail_s / 1000.0)
        else:
            joules, seconds = (self._read() - start.value) / 1000.0, work_end - start.time
        # the share of the window in which the GPU ran kernels, as NVML's utilisation counts it
        info["gpu_util"] = busy / seconds if seconds > 0 else None
        info["state"] = self._state0
        problems = [] if joules > 0 else ["the simulated energy counter did not move (nothing ran in the window)"]
        return MeterReading(joules={"sim": joules}, seconds=seconds, valid=not problems, problems=problems, info=info)

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
    window = options.get("min_window_s", DEFAULT_MIN_WINDOW_S)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 <= window < math.inf:  # NaN too
        raise ConfigError(f"sim meter min_window_s must be a non-negative number of seconds, got {window!r}")
    return SimMeter(device, float(window), bool_option("sim", options, "align", True))
