"""The meter protocol: a measurement window over an energy counter.

A meter is built by a factory registered through the `joules_meters` hook:
``factory(spec: MeterSpec, engine: Engine) -> Meter``. It is bound to the engine so it can meter
exactly the devices the engine uses (and, for the sim, read the simulated device's counter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

from .. import values

if TYPE_CHECKING:
    from ..engines.base import Engine


@dataclass(frozen=True)
class MeterSpec:
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class MeterReading:
    """One closed window.

    `joules` maps a device label (e.g. "gpu0", "GPU-1234..", "package-0", "sim") to the energy it
    used in the window; None for the `none` meter (a dry run). `valid` is False when the reading
    must not be used as a result (zero delta, counter reset, window shorter than the counter's
    update period); `problems` says why. `info` holds what was recorded about the device during
    the window (temperature, clocks, throttle reasons, other processes...).
    """

    joules: dict[str, float] | None
    seconds: float
    valid: bool = True
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def total_joules(self) -> float | None:
        return None if self.joules is None else float(sum(self.joules.values()))


@runtime_checkable
class Meter(Protocol):
    name: str
    #: the shortest window that gives a trustworthy reading (seconds); the measurement path
    #: repeats the workload inside one window until it lasts at least this long
    min_window_s: float

    def begin(self) -> None:
        """Open a window (read the counters)."""

    def end(self) -> MeterReading:
        """Close the window opened by `begin` and return what was used in between."""

    def device_info(self) -> dict[str, Any]:
        """The device fingerprint: GPU name, power limit, driver, ...; `simulated: True` for the sim."""

    def close(self) -> None:
        """Release the meter's resources (NVML handles, sampling threads)."""


#: what an engine's or meter's `probe` answers for `joules doctor` (pytest_joules/probes.py):
#: usable (None: cannot tell) and why, in one line
ProbeResult = tuple[bool | None, str]


class GpuSurvey(NamedTuple):
    """What NVML sees here, taken once per `joules doctor`: whether a GPU can be metered, why (not),
    and one dict per GPU. A probe that depends on a GPU takes it as ``probe(gpus=...)``."""

    usable: bool
    reason: str
    gpus: list[dict[str, Any]]


def parse_options(items: list[str] | None, option: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` strings (``--joules-meter-option min_window_s=2``) -> the meter's options."""
    return values.key_values(items, option)


def reject_unknown_options(meter: str, options: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """ConfigError naming every option `meter` does not take: a typo must not fall back silently."""
    values.reject_unknown(f"{meter} meter", options, accepted, "it")


def bool_option(meter: str, options: Mapping[str, Any], name: str, default: bool) -> bool:
    """A true/false meter option (a bool, or one of values.TRUE_WORDS / FALSE_WORDS)."""
    return values.bool_option(f"{meter} meter", options, name, default)


def number_option(meter: str, options: Mapping[str, Any], name: str, default: float, positive: bool = False) -> float:
    """A finite number meter option, >= 0 (> 0 with `positive`)."""
    return values.number_option(f"{meter} meter", options, name, default, positive)
