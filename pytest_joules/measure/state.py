"""The device's state in each measurement window, and the readings it makes doubtful.

Meters record it in each round's `info["state"]`: the GPU temperature when the window opened, the
SM clock, the clock-event ("throttle") reasons that slow the work and the enforced power limit
(the nvml meter from NVML, meters/nvml/conditions.py; the simulator its own, sim/thermal.py). At
the session's end each measurement gets a `device_state` summary, and a flag for a reading a GPU
cannot be trusted to repeat:

- throttled: a window ran with a reason that slows the work (thermal slowdown, power brake,
  hardware slowdown); a power cap (`sw_power_cap`) is the board working at its limit, recorded
  but not flagged;
- far from the usual temperature: a window opened more than TEMPERATURE_BAND_C from the median
  start temperature of that device's windows over the session (at least MIN_WINDOWS of them): a
  cold GPU draws less power for the same work than a warm one. The nvml meter's
  `precondition_s` option warms the GPU up before the first window.

Flags are reported, never failed: the verdict stays what the rounds say.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping

TEMPERATURE_BAND_C = 10.0
MIN_WINDOWS = 3


def window_states(record: Any) -> list[Mapping[str, Any]]:
    """The state of each of a measurement's windows that recorded one (`ResultRecord.rounds`)."""
    out = []
    for r in record.rounds or []:
        info = r.get("info") if isinstance(r, Mapping) else None
        state = info.get("state") if isinstance(info, Mapping) else None
        if isinstance(state, Mapping):
            out.append(state)
    return out


def _device(record: Any) -> str:
    """Which device a record's windows ran on: its GPUs' ids where the meter names them."""
    for r in record.rounds or []:
        gpus = (r.get("info") or {}).get("gpus") if isinstance(r, Mapping) else None
        if isinstance(gpus, Mapping) and gpus:
            return ",".join(sorted(gpus))
    device = record.device or {}
    return f"{record.meter}:{device.get('gpu') or device.get('name') or '?'}"


def _numbers(states: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    """The states' `key` values that are numbers."""
    return [float(v) for v in (s.get(key) for s in states) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def annotate(records: Iterable[Any]) -> None:
    """Set each record's `device_state`: medians of its windows and the flags (module doc)."""
    records = list(records)
    usual: dict[str, list[float]] = {}
    for record in records:
        usual.setdefault(_device(record), []).extend(_numbers(window_states(record), "temperature_c"))
    for record in records:
        states = window_states(record)
        if not states:
            continue
        temps = _numbers(states, "temperature_c")
        clocks = _numbers(states, "sm_clock_mhz")
        throttled = [s for s in states if s.get("throttled")]
        summary: dict[str, Any] = {
            "temperature_c": statistics.median(temps) if temps else None,
            "sm_clock_mhz": statistics.median(clocks) if clocks else None,
            "power_limit_w": states[-1].get("power_limit_w"),
            "throttled_windows": len(throttled),
            "windows": len(states),
            "flags": [],
        }
        if throttled:
            reasons = sorted({reason for s in throttled for reason in s.get("throttled") or []})
            summary["flags"].append(f"{len(throttled)} of {len(states)} windows throttled ({', '.join(reasons)})")
        session = usual.get(_device(record), [])
        if len(session) >= MIN_WINDOWS and temps:
            middle = statistics.median(session)
            far = [t for t in temps if abs(t - middle) > TEMPERATURE_BAND_C]
            if far:
                shown = f"{min(far):.0f}" if min(far) == max(far) else f"{min(far):.0f}-{max(far):.0f}"
                summary["flags"].append(
                    f"{len(far)} of {len(states)} windows opened at {shown} °C, more than {TEMPERATURE_BAND_C:g} °C "
                    f"from the session's usual {middle:.0f} °C")
        record.device_state = summary
