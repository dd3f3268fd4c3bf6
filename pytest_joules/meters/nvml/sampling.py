"""Power sampling, for GPUs without an energy counter, and the integrals over its samples; how
often a GPU's energy counter moves.

Stdlib only: the validation steps (validation/counter.py) use these on a real GPU too.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

# NVML's power reading is not instantaneous: on Hopper it is the average over the last second
# (others differ: option `power_average_s`). A reading at t averages [t - tau, t], so it lags a
# load step by tau/2 on average, and integrating the readings over the work [t0, t1] reads low:
# for a step from P_idle to P_load and back, by 0.5 * (P_load - P_idle) * tau (the rising ramp
# is inside the window, the falling one outside). Integrating over [t0 + tau/2, t1 + tau/2]
# centres both ramps on their steps; what remains is 1/8 * dP * tau per edge, 0.25 * dP * tau
# in all. (The H200's first run: counter 4122 J, unshifted integral 3790 J over 6.03 s.)


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal integral of (seconds, watts) samples: joules."""
    total = 0.0
    for (t0, w0), (t1, w1) in zip(samples, samples[1:]):
        total += (t1 - t0) * (w0 + w1) / 2.0
    return total


def _at(samples: list[tuple[float, float]], t: float) -> float:
    """Watts at time t, interpolated linearly between samples (the nearest one outside them)."""
    if t <= samples[0][0]:
        return samples[0][1]
    for (ta, wa), (tb, wb) in zip(samples, samples[1:]):
        if t <= tb:
            return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)
    return samples[-1][1]


def integrate_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Trapezoidal integral of (seconds, watts) samples over [t0, t1], interpolated at the edges."""
    if not samples or t1 <= t0:
        return 0.0
    inside = [(t, w) for t, w in samples if t0 < t < t1]
    return integrate([(t0, _at(samples, t0)), *inside, (t1, _at(samples, t1))])


def shifted_energy(samples: list[tuple[float, float]], t0: float, t1: float, average_s: float) -> float:
    """Joules of the work in [t0, t1] from power readings that each average the last
    `average_s` seconds: their integral over the window shifted by half the averaging."""
    return integrate_between(samples, t0 + average_s / 2.0, t1 + average_s / 2.0)


class PowerSampler:
    """Samples one GPU's power in a thread, for GPUs without an energy counter. The first and
    last samples are taken synchronously, at start and stop; start before the window opens and
    stop after it closes (plus the averaging shift), so the samples span it."""

    def __init__(self, read_watts: Callable[[], float], interval_s: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._read = read_watts
        self._interval = interval_s
        self._clock = clock
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        watts = self._read()
        self.samples.append((self._clock(), watts))

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
