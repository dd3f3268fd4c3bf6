"""Tick-aligned windows (pytest_joules.meters.ticks) against a fake counter on a fake clock."""

from __future__ import annotations

import math
import random

import pytest

from pytest_joules.meters.ticks import AlignedReading, CounterStuck, Tick, settle, wait_for_tick, wait_for_ticks

PERIOD = 0.1
BUSY_W = 400.0
IDLE_W = 120.0
TICK_J = BUSY_W * PERIOD  # one tick's energy at busy power


class Counter:
    """An energy counter (mJ) that publishes the energy used so far every `period` seconds, at
    `phase` past the whole period, like NVML's. Power is BUSY_W during work, IDLE_W otherwise;
    `sleep` advances the fake clock."""

    def __init__(self, phase: float = 0.0, period: float = PERIOD, t: float = 50.0) -> None:
        self.phase = phase
        self.period = period
        self.t = t
        self.busy: list[tuple[float, float]] = []
        self.reads = 0

    def energy_j(self, t: float) -> float:
        busy = sum(max(0.0, min(b, t) - a) for a, b in self.busy)
        return IDLE_W * t + (BUSY_W - IDLE_W) * busy

    def read(self) -> int:
        self.reads += 1
        last_tick = math.floor((self.t - self.phase) / self.period) * self.period + self.phase
        return int(round(self.energy_j(last_tick) * 1000))

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def work(self, seconds: float) -> None:
        self.busy.append((self.t, self.t + seconds))
        self.t += seconds


def plain_window(c: Counter, seconds: float) -> float:
    """Today's align=false window: read, work, read; the error in joules."""
    v0 = c.read()
    c.work(seconds)
    return (c.read() - v0) / 1000.0 - BUSY_W * seconds


def aligned_window(c: Counter, seconds: float) -> tuple[float, AlignedReading]:
    """The aligned protocol; the error in joules and the reading."""
    start = wait_for_tick(c.read, c.now, c.sleep)
    c.work(seconds)
    work_end = c.now()
    end = wait_for_tick(c.read, c.now, c.sleep)
    after = wait_for_tick(c.read, c.now, c.sleep)
    r = settle(start, work_end, end, after)
    assert r.seconds == pytest.approx(seconds)
    return r.delta / 1000.0 - BUSY_W * seconds, r


# -- wait_for_tick -------------------------------------------------------------------------------


def test_wait_for_tick_returns_the_first_changed_value_and_its_latency():
    c = Counter(phase=0.03, t=50.0)  # next tick at 50.03
    tick = wait_for_tick(c.read, c.now, c.sleep, poll_s=0.001)
    assert isinstance(tick, Tick)
    assert tick.value == int(round(IDLE_W * 50.03 * 1000))
    assert 50.03 <= tick.time < 50.03 + 0.001 + 1e-9
    assert tick.latency_s == pytest.approx(0.001)
    assert tick.time - tick.latency_s <= 50.03  # the tick happened within the latency


def test_a_stuck_counter_raises_within_the_timeout():
    t = [0.0]
    with pytest.raises(CounterStuck, match="did not change within 0.3 s") as exc:
        wait_for_tick(lambda: 42, lambda: t[0], lambda s: t.__setitem__(0, t[0] + s), poll_s=0.01, timeout_s=0.3)
    assert exc.value.stuck == [0]
    assert 0.3 <= t[0] <= 0.3 + 0.01 + 1e-9


def test_several_counters_are_polled_together_each_with_its_own_phase():
    clock = Counter(t=50.0)
    a, b = Counter(phase=0.07), Counter(phase=0.02)
    for c in (a, b):  # share the clock
        c.now = clock.now  # type: ignore[method-assign]
    a.t = b.t = clock.t

    def sleep(s: float) -> None:
        clock.t += s
        a.t = b.t = clock.t

    ticks = wait_for_ticks([a.read, b.read], clock.now, sleep, count=2, poll_s=0.001)
    assert [t.time for t in ticks[0]] == pytest.approx([50.07, 50.17], abs=0.0011)
    assert [t.time for t in ticks[1]] == pytest.approx([50.02, 50.12], abs=0.0011)
    assert all(t.latency_s == pytest.approx(0.001) for ts in ticks for t in ts)


def test_one_stuck_counter_among_several_is_named():
    t = [0.0]
    moving = lambda: int(t[0] * 10)  # noqa: E731 - ticks every 0.1 s
    with pytest.raises(CounterStuck) as exc:
        wait_for_ticks([moving, lambda: 7], lambda: t[0], lambda s: t.__setitem__(0, t[0] + s), timeout_s=0.5)
    assert exc.value.stuck == [1]


# -- settle ----------------------------------------------------------------------------------------


def test_settle_subtracts_the_idle_tail_measured_over_the_tick_after():
    start = Tick(value=1000.0, time=10.0, latency_s=0.0)
    end = Tick(value=1000.0 + 400 * 1.0 + 100 * 0.06, time=11.06, latency_s=0.0)  # 1 s busy, 60 ms idle tail
    after = Tick(value=end.value + 100 * 0.1, time=11.16, latency_s=0.0)
    r = settle(start, 11.0, end, after)
    assert r.raw_delta == pytest.approx(406.0)
    assert r.tail_s == pytest.approx(0.06) and r.tail_rate == pytest.approx(100.0)
    assert r.delta == pytest.approx(400.0) and r.seconds == pytest.approx(1.0)
    assert r.bound == 0.0  # exact tick times: nothing left to bound


def test_settle_bound_grows_with_the_detection_latency():
    start = Tick(value=0.0, time=10.0, latency_s=0.002)
    end = Tick(value=406.0, time=11.06, latency_s=0.002)
    after = Tick(value=416.0, time=11.16, latency_s=0.002)
    r = settle(start, 11.0, end, after)
    # 2 ms at the larger of 400 (work) and 100 (tail), 2 ms of tail, and the rate's 2 % on 60 ms
    assert r.bound == pytest.approx(0.002 * 400 + 0.002 * 100 + 0.06 * 100 * 0.002 / 0.098)


def test_settle_subtracts_a_head_before_the_work_start():
    start = Tick(value=0.0, time=10.0, latency_s=0.0)
    end = Tick(value=100 * 0.04 + 400.0, time=11.04, latency_s=0.0)  # 40 ms idle head, 1 s busy, no tail
    after = Tick(value=end.value + 10.0, time=11.14, latency_s=0.0)
    r = settle(start, 11.04, end, after, work_start=10.04)
    assert r.head_s == pytest.approx(0.04) and r.tail_s == 0.0
    assert r.delta == pytest.approx(400.0) and r.seconds == pytest.approx(1.0)


# -- the point: error with and without alignment over random phases -------------------------------------


def test_alignment_cuts_the_window_error_from_about_a_tick_to_a_small_fraction_of_one():
    rng = random.Random(1)
    plain: list[float] = []
    aligned: list[float] = []
    for _ in range(400):
        phase = rng.uniform(0, PERIOD)
        seconds = rng.uniform(1.0, 2.0)
        start_t = 50.0 + rng.uniform(0, 1.0)
        plain.append(plain_window(Counter(phase=phase, t=start_t), seconds) / TICK_J)
        err, r = aligned_window(Counter(phase=phase, t=start_t), seconds)
        aligned.append(err / TICK_J)
        assert abs(err) * 1000 <= r.bound + 2  # the bound holds (+2 mJ: the counter's integer rounding)
    # plain reads: errors from -1 busy tick (the end read misses a period of work) to +IDLE/BUSY tick
    assert min(plain) < -0.9 and max(plain) > 0.25
    assert max(plain) - min(plain) > 1.1  # the spread is (1 + IDLE/BUSY) ticks
    assert max(abs(e) for e in aligned) < 0.01


def test_alignment_costs_about_two_update_periods_per_window():
    rng = random.Random(2)
    waits = []
    for _ in range(200):
        c = Counter(phase=rng.uniform(0, PERIOD), t=50.0 + rng.uniform(0, 1))
        t0 = c.now()
        seconds = rng.uniform(1.0, 2.0)
        aligned_window(c, seconds)
        waits.append(c.now() - t0 - seconds)
    assert max(waits) <= 3 * PERIOD + 0.002
    assert sum(waits) / len(waits) == pytest.approx(2 * PERIOD, abs=0.015)
