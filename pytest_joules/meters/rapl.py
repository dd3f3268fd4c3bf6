"""The `rapl` meter: CPU package energy from the Linux powercap sysfs (Intel RAPL, also recent AMD).

Each package zone `intel-rapl:<N>` has `energy_uj` (cumulative microjoules) that wraps at
`max_energy_range_uj`; a window's delta adds that range back once when the counter wrapped.
More than one wrap inside a window cannot be seen, so windows must stay shorter than the wrap
period (minutes at full load).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, InvalidMeasurement, MeterUnavailable
from .base import MeterReading, MeterSpec, number_option, reject_unknown_options

if TYPE_CHECKING:
    from ..engines.base import Engine

DEFAULT_ROOT = "/sys/class/powercap"
_PACKAGE_ZONE = re.compile(r"^intel-rapl:(\d+)$")

PERMISSION_FIX = (
    "since Linux 5.10 energy_uj is readable only by root, because of the PLATYPUS power side "
    "channel (CVE-2020-8694); run as root, or grant read access with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (lost at reboot) or a udev rule "
    "that does the same; in a container also mount /sys/class/powercap"
)


@dataclass(frozen=True)
class Zone:
    label: str  # e.g. "package-0"
    path: str
    max_range_uj: int


def find_zones(root: str) -> list[Zone]:
    """The package zones under a powercap root, in package order."""
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        raise MeterUnavailable(
            f"no powercap tree at {root}: this kernel or machine exposes no RAPL energy counters "
            "(virtual machines and some containers hide them); use --joules-meter none"
        ) from None
    except PermissionError:
        raise MeterUnavailable(f"cannot list {root}: permission denied; {PERMISSION_FIX}") from None
    zones = []
    for entry in entries:
        match = _PACKAGE_ZONE.match(entry)
        if not match:
            continue
        path = os.path.join(root, entry)
        name = _read_text(os.path.join(path, "name"), default=entry)
        if not name.startswith("package"):
            continue  # e.g. "psys" platform zones overlap the packages
        max_range = int(_read_text(os.path.join(path, "max_energy_range_uj"), default="0") or 0)
        zones.append((int(match.group(1)), Zone(label=name, path=path, max_range_uj=max_range)))
    if not zones:
        raise MeterUnavailable(
            f"no RAPL package zones (intel-rapl:N with name package-N) under {root}; "
            "this CPU or kernel does not expose package energy; use --joules-meter none"
        )
    return [zone for _, zone in sorted(zones)]


def _read_text(path: str, default: str | None = None) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except PermissionError:
        raise MeterUnavailable(f"cannot read {path}: permission denied; {PERMISSION_FIX}") from None
    except OSError:
        if default is not None:
            return default
        raise


def read_energy_uj(zone: Zone) -> int:
    path = os.path.join(zone.path, "energy_uj")
    try:
        return int(_read_text(path))
    except OSError as exc:
        raise MeterUnavailable(f"cannot read {path}: {exc}") from None
    except ValueError:
        raise InvalidMeasurement(f"{path} does not hold an integer") from None


def delta_uj(start: int, end: int, max_range_uj: int) -> int | None:
    """Energy between two readings, through one wraparound; None when it cannot be known."""
    if end >= start:
        return end - start
    if max_range_uj <= 0:
        return None
    return end + max_range_uj - start


#: per package: above any shipping server CPU's TDP (about 500 W in 2026) with margin
MAX_PACKAGE_WATTS = 1000.0


class RaplMeter:
    name = "rapl"

    def __init__(self, zones: list[Zone], min_window_s: float, clock: Callable[[], float] = time.perf_counter,
                 max_watts: float = MAX_PACKAGE_WATTS) -> None:
        self._zones = zones
        self._clock = clock
        self.min_window_s = min_window_s
        self.max_watts = max_watts
        self._start: dict[str, int] | None = None
        self._t0 = 0.0

    def begin(self) -> None:
        self._start = {z.label: read_energy_uj(z) for z in self._zones}
        self._t0 = self._clock()

    def end(self) -> MeterReading:
        if self._start is None:
            raise RuntimeError("rapl meter: end() called without begin()")
        ends = {z.label: read_energy_uj(z) for z in self._zones}
        seconds = self._clock() - self._t0
        joules: dict[str, float] = {}
        problems: list[str] = []
        wrapped: list[str] = []
        for zone in self._zones:
            start, end = self._start[zone.label], ends[zone.label]
            d = delta_uj(start, end, zone.max_range_uj)
            if d is None:
                problems.append(f"{zone.label}: counter went backwards and max_energy_range_uj is unknown")
                continue
            if end < start:
                wrapped.append(zone.label)
            if d == 0:
                problems.append(
                    f"{zone.label}: zero energy in a {seconds:.3f} s window; the counter did not move"
                )
            elif seconds > 0 and d / 1e6 / seconds > self.max_watts:
                # a counter reset (or a second wrap) reads like one wraparound: a huge delta
                problems.append(
                    f"{zone.label}: implausible {d / 1e6 / seconds:.0f} W average over {seconds:.3f} s "
                    f"(above max_watts={self.max_watts:g}); the counter was probably reset"
                )
            joules[zone.label] = d / 1e6
        self._start = None
        info = {"zones": {z.label: z.path for z in self._zones}, "wrapped": wrapped, "window_s": seconds}
        return MeterReading(joules=joules, seconds=seconds, valid=not problems, problems=problems, info=info)

    def device_info(self) -> dict[str, Any]:
        return {
            "meter": "rapl",
            "simulated": False,
            "cpu": cpu_model(),
            "packages": len(self._zones),
        }

    def close(self) -> None:
        self._start = None


def cpu_model(path: str = "/proc/cpuinfo") -> str | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def build(spec: MeterSpec, clock: Callable[[], float] = time.perf_counter) -> RaplMeter:
    root = str(spec.options.get("root", DEFAULT_ROOT))
    reject_unknown_options("rapl", spec.options, ("root", "min_window_s", "max_watts"))
    min_window_s = number_option("rapl", spec.options, "min_window_s", 0.5)
    max_watts = number_option("rapl", spec.options, "max_watts", MAX_PACKAGE_WATTS, positive=True)
    zones = find_zones(root)
    for zone in zones:
        read_energy_uj(zone)  # fail now, with the fix, rather than in the first window
    return RaplMeter(zones, min_window_s, clock, max_watts)


def create(spec: MeterSpec, engine: Engine) -> RaplMeter:
    return build(spec)


def probe(root: str = DEFAULT_ROOT) -> tuple[bool, str]:
    """For `joules doctor` and engines choosing a default meter: is package energy readable?"""
    try:
        zones = find_zones(root)
        for zone in zones:
            read_energy_uj(zone)
    except MeterUnavailable as exc:
        return False, str(exc)
    return True, f"{len(zones)} CPU package zone(s) readable under {root}"
