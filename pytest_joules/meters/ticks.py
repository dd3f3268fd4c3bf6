"""Measurement windows aligned to the ticks of a slowly updating energy counter.

NVML's energy counter moves in steps (every 0.100 s on an H200, idle and busy). A plain read
returns the value of the last step, up to one update period stale, so a window read at both
edges misses up to a period of energy at one edge and includes up to a period of idle energy
at the other: its error spans about one to two update periods' worth of energy.

The window protocol this module serves removes most of that:

1. begin: wait for a tick (`wait_for_tick`) and start the work at once, so the counter's value
   and the clock start together (the energy and the time of the window cover the same interval);
2. after the work and a device sync: ``work_end = now()``, then wait for the next tick (`end`,
   which includes an idle tail of 0 to one period after the work) and one more (`after`, to
   measure the tail's power);
3. `settle`: subtract ``tail_rate * tail_s`` from the raw delta.

What remains is the tick-detection latency (the poll interval, 0.5 ms by default) and the error
of the tail power estimate (the power over the tick after the tail stands in for the tail's).

Cost: up to one update period at begin and one to two at the end: two periods per window on
average (0.2 s for NVML), three at most.

Stdlib only: the simulated meter uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Tick:
    value: float  # the counter's new value (counter units, mJ for NVML)
    time: float  # clock time of the first read that saw the new value
    latency_s: float  # time since the previous read, which still saw the old value: the tick happened within this


class CounterStuck(Exception):
    """The counter did not change within timeout_s. `stuck` lists the indices of the counters
    that did not move (0 for `wait_for_tick`)."""

    def __init__(self, message: str, stuck: Sequence[int] = (0,)) -> None:
        super().__init__(message)
        self.stuck = list(stuck)


def wait_for_ticks(reads: Sequence[Callable[[], float]], now: Callable[[], float], sleep: Callable[[float], None],
                   *, count: int = 1, poll_s: float = 0.0005, timeout_s: float = 1.0) -> list[list[Tick]]:
    """Poll several counters together until each has changed `count` times; their ticks, in order.

    Each counter must change within `timeout_s` of its previous change (or of the start);
    otherwise CounterStuck names the ones that did not. Polling them in one loop keeps every
    counter's detection latency at one poll interval, whatever their phases.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    last = [read() for read in reads]
    t = now()
    seen = [t] * len(reads)  # time of each counter's last read
    since = [t] * len(reads)  # time of each counter's last change (or the start)
    ticks: list[list[Tick]] = [[] for _ in reads]
    while True:
        waiting = [i for i in range(len(reads)) if len(ticks[i]) < count]
        if not waiting:
            return ticks
        sleep(poll_s)
        for i in waiting:
            value = reads[i]()
            t = now()
            if value != last[i]:
                ticks[i].append(Tick(value=value, time=t, latency_s=t - seen[i]))
                last[i] = value
                since[i] = t
            seen[i] = t
        stuck = [i for i in waiting if len(ticks[i]) < count and seen[i] - since[i] >= timeout_s]
        if stuck:
            raise CounterStuck(
                f"the energy counter did not change within {timeout_s:g} s (it should move every "
                "update period): the counter is stuck or not updated on this device",
                stuck,
            )


def wait_for_tick(read: Callable[[], float], now: Callable[[], float], sleep: Callable[[float], None],
                  *, poll_s: float = 0.0005, timeout_s: float = 1.0) -> Tick:
    """Poll `read` (sleeping poll_s between reads) until its value differs from the first read."""
    return wait_for_ticks([read], now, sleep, poll_s=poll_s, timeout_s=timeout_s)[0][0]


@dataclass(frozen=True)
class AlignedReading:
    delta: float  # counter units over [work start, work_end]: raw delta minus the estimated idle head and tail
    seconds: float  # work_end - work start (start.time unless settle got work_start)
    raw_delta: float  # end.value - start.value
    tail_s: float  # end.time - work_end: the idle wait for the closing tick
    tail_rate: float  # counter units per second during the tail, measured over the tick after it
    bound: float  # worst-case error of `delta` from tick timing, in counter units (see `settle`)
    head_s: float = 0.0  # work start - start.time: idle time between the opening tick and the work


def settle(start: Tick, work_end: float, end: Tick, after: Tick, *, work_start: float | None = None,
           idle_edges: bool = False) -> AlignedReading:
    """The energy of the work between `start` and `work_end`, from the ticks around it.

    ``tail_rate = (after.value - end.value) / (after.time - end.time)`` is the power of the tick
    after the closing one; the GPU idles through both (it waits for ticks after a device sync),
    so it stands in for the tail's power: ``delta = raw - tail_rate * (tail_s + head_s)``.
    `work_start` (default ``start.time``) is when the work began: with several counters polled
    together, one that ticked earlier idles until the last one ticks (its head, corrected like
    the tail).

    `bound`, from where the ticks really happened (each within its `latency_s` before the read
    that saw it), is the sum of:

    - ``start.latency_s * max(tail_rate, work rate)``: energy between the real opening tick and
      its detection, counted but not subtracted (power unknown, so the larger rate);
    - ``end.latency_s * tail_rate``: the real tail is up to that much shorter than `tail_s`;
    - ``(tail_s + head_s) * tail_rate * L / (period - L)``, with ``L = max(end.latency_s,
      after.latency_s)`` and ``period = after.time - end.time``: the error of the measured rate,
      whose interval is off by up to L.

    With `idle_edges` the caller guarantees that the device idled through the opening tick's
    uncertainty (it waited at least `start.latency_s` after the previous work), so that term uses
    the idle rate alone (the fleet meters, whose ticks are uncertain by a whole refresh interval).

    The counter's own resolution (1 mJ for NVML) and a tail whose power differs from the tick
    after it are not in the bound.
    """
    work_start = start.time if work_start is None else work_start
    raw = end.value - start.value
    tail_s = max(0.0, end.time - work_end)
    head_s = max(0.0, work_start - start.time)
    period = after.time - end.time
    tail_rate = (after.value - end.value) / period if period > 0 else 0.0
    delta = raw - tail_rate * (tail_s + head_s)
    seconds = work_end - work_start
    rate = abs(tail_rate)
    work_rate = abs(delta) / seconds if seconds > 0 else 0.0
    late = max(end.latency_s, after.latency_s)
    rate_error = rate * late / (period - late) if period > late else rate
    head_rate = rate if idle_edges else max(rate, work_rate)
    bound = start.latency_s * head_rate + end.latency_s * rate + (tail_s + head_s) * rate_error
    return AlignedReading(delta=delta, seconds=seconds, raw_delta=raw, tail_s=tail_s, tail_rate=tail_rate,
                          bound=bound, head_s=head_s)
