"""The `none` meter: a dry run. The engine runs the workload (and proves its exact token counts)
but no energy is read, for setting up an engine on a machine without an energy counter."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import MeterReading, MeterSpec

if TYPE_CHECKING:
    from ..engines.base import Engine


def probe() -> tuple[bool, str]:
    """For `joules doctor`."""
    return True, "dry run: checks the engine's token counts, reads no energy"


class NoneMeter:
    name = "none"

    def __init__(self, min_window_s: float = 0.0) -> None:
        # No counter to wait for: one execution of the workload per window is enough.
        self.min_window_s = min_window_s
        self._t0: float | None = None

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def end(self) -> MeterReading:
        if self._t0 is None:
            raise RuntimeError("none meter: end() called without begin()")
        seconds = time.perf_counter() - self._t0
        self._t0 = None
        return MeterReading(joules=None, seconds=seconds, valid=True, info={"dry_run": True})

    def device_info(self) -> dict[str, Any]:
        return {"meter": "none", "dry_run": True, "simulated": False}

    def close(self) -> None:
        self._t0 = None


def create(spec: MeterSpec, engine: Engine) -> NoneMeter:
    try:
        min_window_s = float(spec.options.get("min_window_s", 0.0))
    except (TypeError, ValueError):
        raise ConfigError(
            f"meter 'none': min_window_s must be a number of seconds, got {spec.options['min_window_s']!r}"
        ) from None
    if min_window_s != min_window_s or min_window_s == float("inf"):  # a NaN or endless window never closes
        raise ConfigError(f"meter 'none': min_window_s must be a finite number of seconds, got {spec.options['min_window_s']!r}")
    return NoneMeter(max(min_window_s, 0.0))
