"""`--joules-rounds auto`: the stopping rules, their error rate under repeated looks, the budget."""

from __future__ import annotations

import math
import random

import pytest

from pytest_joules.measure import stopping as R
from pytest_joules.judge import verdict as V


def lognormal(rng, center, sigma):
    return center * math.exp(rng.gauss(0.0, sigma))


def run(rule, rng, center, sigma, seconds_per_round=1.0):
    """Feed `rule` rounds until it stops; returns the values it saw."""
    values = []
    while True:
        values.append(lognormal(rng, center, sigma))
        if rule.stop(values, len(values), seconds_per_round * len(values)):
            return values


def test_looks_start_at_three_and_grow_geometrically():
    assert R.LOOKS == [3, 4, 6, 9, 14, 21, 32, 48, 72, 100]
    assert R.looks(60) == [3, 4, 6, 9, 14, 21, 32, 48, 60]


def test_the_looks_share_alpha_evenly():
    assert sum(R.alpha_at(j) for j in range(len(R.LOOKS))) == pytest.approx(R.ALPHA)
    assert R.alpha_at(0) == R.ALPHA / 10
    with pytest.raises(ValueError):
        R.alpha_at(len(R.LOOKS))


def test_a_clear_regression_stops_at_the_first_look():
    rng = random.Random(1)
    base = [lognormal(rng, 1.0, 0.01) for _ in range(5)]
    rule = R.Compare(tolerance=0.05, baseline=base)
    values = run(rule, rng, 1.10, 0.01)
    assert len(values) == 3 and rule.reason == "resolved"
    assert V.judge(values, base, 0.05, confidence=rule.confidence).status == V.REGRESSION
    assert rule.confidence == pytest.approx(1 - R.alpha_at(0))


def test_moderate_noise_takes_more_rounds_and_then_passes():
    rng = random.Random(2)
    base = [lognormal(rng, 1.0, 0.04) for _ in range(20)]
    rule = R.Compare(tolerance=0.05, baseline=base)
    values = run(rule, rng, 1.0, 0.04)
    assert len(values) > 3 and rule.reason == "resolved"
    assert V.judge(values, base, 0.05, confidence=rule.confidence).status == V.PASS


def test_the_budget_ends_an_unresolvable_comparison_as_noisy():
    rng = random.Random(3)
    base = [lognormal(rng, 1.0, 0.3) for _ in range(5)]
    rule = R.Compare(tolerance=0.05, baseline=base, max_seconds=12)
    values = run(rule, rng, 1.0, 0.3, seconds_per_round=2.0)
    assert rule.reason == "budget"
    assert len(values) * 2.0 <= 12  # never starts a round that would overrun
    assert V.judge(values, base, 0.05, confidence=rule.confidence).status == V.NOISY


def test_the_budget_never_cuts_below_three_rounds():
    rule = R.Precise(tolerance=0.05, max_seconds=1)
    values = run(rule, random.Random(4), 1.0, 0.3, seconds_per_round=5.0)
    assert len(values) == 3 and rule.reason == "budget"


def test_a_baseline_is_recorded_until_its_median_is_known_to_half_the_tolerance():
    rule = R.Precise(tolerance=0.05)
    values = run(rule, random.Random(5), 1.0, 0.03)
    assert rule.reason == "resolved" and len(values) > 3
    assert R.half_width(values) <= 0.025
    earlier = [n for n in R.LOOKS if n < len(values)]
    assert all(R.half_width(values[:n]) > 0.025 for n in earlier)  # it stopped at the first look that could


def test_quiet_rounds_stop_at_three():
    rule = R.Precise(tolerance=0.05)
    assert len(run(rule, random.Random(6), 1.0, 0.002)) == 3


def test_rounds_without_energy_stop_at_three():
    rule = R.Compare(tolerance=0.05, baseline=[1.0, 1.0, 1.0])
    assert not rule.stop([], 2, 2.0)
    assert rule.stop([], 3, 3.0) and rule.reason == "no valid rounds"


def test_repeated_looks_keep_the_false_failure_rate_below_alpha_half():
    """No change, 3% noise, the rule looking after 3, 4, 5, 6, 8, ... rounds: at most alpha / 2 of
    the runs end as a regression. Peeking at a plain 95% test after every round (what the rule
    must not do) fails more often than alpha / 2: the check can fail."""
    rng = random.Random(7)
    runs, tolerance = 400, 0.0  # tolerance 0: every significant rise is a regression (the worst case)
    spent_alpha = peeking = 0
    for _ in range(runs):
        base = [lognormal(rng, 1.0, 0.03) for _ in range(10)]
        rule = R.Compare(tolerance=tolerance, baseline=base, max_rounds=40, max_seconds=1e9)
        values = run(rule, rng, 1.0, 0.03)
        spent_alpha += V.judge(values, base, tolerance, confidence=rule.confidence).status == V.REGRESSION
        naive = []
        for _ in range(40):
            naive.append(lognormal(rng, 1.0, 0.03))
            if len(naive) >= 3 and V.judge(naive, base, tolerance).status == V.REGRESSION:
                peeking += 1
                break
    assert spent_alpha / runs <= R.ALPHA / 2
    assert peeking / runs > R.ALPHA / 2 and peeking > 3 * spent_alpha


@pytest.mark.parametrize("text,expected", [("auto", "auto"), (" AUTO ", "auto"), ("5", 5), (3, 3)])
def test_parse_rounds(text, expected):
    assert R.parse_rounds(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "many", "2.5", True])
def test_parse_rounds_refuses(text):
    with pytest.raises(ValueError):
        R.parse_rounds(text)
