import math
import random
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from pytest_joules.judge import stats
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.engines.workload import Workload


def _lognormal(rng: random.Random, n: int, center: float, sd: float) -> list[float]:
    return [center * math.exp(rng.gauss(0.0, sd)) for _ in range(n)]


# -- one set of rounds -----------------------------------------------------------------------------
def test_summary_quartiles_match_numpy_and_spread_matches_measurement():
    values = [1.02, 0.98, 1.10, 1.00, 0.97, 1.04, 1.01]
    s = stats.summarize(values)
    assert s.n == 7
    assert s.median == pytest.approx(1.01)
    assert s.q1 == pytest.approx(np.percentile(values, 25))
    assert s.q3 == pytest.approx(np.percentile(values, 75))
    assert s.iqr == pytest.approx(np.percentile(values, 75) - np.percentile(values, 25))
    assert s.rel_iqr == pytest.approx(s.iqr / 1.01)
    m = Measurement(
        workload=Workload(8, 10),
        rounds=[Round(joules=v * 10, seconds=1.0, reps=1, output_tokens=10, input_tokens=8) for v in values],
        engine={}, device={}, meter="fake", simulated=True,
    )
    assert s.rel_range == pytest.approx(m.spread)


@pytest.mark.parametrize(
    "n, k, coverage",
    [
        (2, 1, 0.5),  # [min, max] of 2 rounds covers the median half the time
        (3, 1, 0.75),
        (5, 1, 0.9375),  # still short of 95%: stated, not hidden
        (6, 1, 0.96875),  # the first n where [min, max] reaches 95%
        (10, 2, 1 - 2 * 11 / 1024),  # [x_(2), x_(9)]; [x_(3), x_(8)] would cover only 89%
    ],
)
def test_median_interval_is_the_exact_order_statistic_interval(n, k, coverage):
    values = list(range(1, n + 1))
    random.Random(n).shuffle(values)
    lo, hi, cov = stats.median_ci(values)
    assert (lo, hi) == (k, n + 1 - k)
    assert cov == pytest.approx(coverage)


def test_median_interval_coverage_is_what_it_claims():
    # 10 rounds of a skewed distribution: the interval should hold the true median ~97.9% of the time
    rng = random.Random(7)
    true_median = 1.0  # lognormal(0, s) has median exp(0) = 1
    hits = 0
    trials = 2000
    for _ in range(trials):
        lo, hi, cov = stats.median_ci(_lognormal(rng, 10, 1.0, 0.3))
        hits += lo <= true_median <= hi
    assert abs(hits / trials - cov) < 0.015


def test_a_single_round_has_no_interval_and_no_spread():
    s = stats.summarize([2.5])
    assert (s.median, s.q1, s.q3, s.rel_range) == (2.5, 2.5, 2.5, 0.0)
    assert s.ci_low is None and s.ci_high is None and s.ci_coverage is None


def test_summary_is_deterministic():
    values = _lognormal(random.Random(3), 7, 2.0, 0.05)
    assert stats.summarize(values) == stats.summarize(list(values))


@pytest.mark.parametrize("bad", [[1.0, 0.0], [1.0, -2.0], [float("nan")], [math.inf], [True], ["1.0"]])
def test_values_that_are_not_energies_are_refused_by_position(bad):
    with pytest.raises(ValueError, match=r"rounds\[\d\] = .*positive finite"):
        stats.summarize(bad)


def test_empty_rounds_are_refused():
    with pytest.raises(ValueError, match="no rounds"):
        stats.summarize([])


@pytest.mark.parametrize("confidence", [0.3, 1.0, 1.5])
def test_confidence_outside_its_range_is_refused(confidence):
    with pytest.raises(ValueError, match="confidence must be in"):
        stats.median_ci([1.0, 2.0], confidence)


# -- two sets of rounds ----------------------------------------------------------------------------
def test_a_tight_side_does_not_narrow_the_interval():
    """Three rounds that agree to 0.1% against a baseline spread over 5%: the interval is as
    wide as the baseline's spread says, not as narrow as Welch's test would make it."""
    base = [1.00, 1.06, 0.95, 1.03, 0.97, 1.05]
    cur = [1.060, 1.061, 1.059]
    ours = stats.compare_rounds(cur, base)
    welch = sps.ttest_ind(np.log(cur), np.log(base), equal_var=False)
    assert welch.pvalue < 0.2 and ours.p_value > welch.pvalue
    assert not ours.significant


def test_comparison_is_a_t_test_on_logs_with_the_larger_spread():
    base = [1.00, 1.01, 0.99, 1.02]
    cur = [1.10, 1.12, 1.09]
    c = stats.compare_rounds(cur, base)
    # both sides take the larger variance (here the baseline's), with its degrees of freedom
    var = max(np.var(np.log(cur), ddof=1), np.var(np.log(base), ddof=1))
    vc, vb = var / 3, var / 4
    se = math.sqrt(vc + vb)
    df = (vc + vb) ** 2 / (vc**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite on the floored variances
    diff = np.mean(np.log(cur)) - np.mean(np.log(base))
    assert c.p_value == pytest.approx(2 * sps.t.sf(abs(diff) / se, df))
    assert c.df == pytest.approx(df)
    # equal spreads: exactly Welch's test
    same = stats.compare_rounds([1.1 * b for b in base], base)
    ref = sps.ttest_ind(np.log([1.1 * b for b in base]), np.log(base), equal_var=False)
    assert same.p_value == pytest.approx(ref.pvalue) and same.df == pytest.approx(ref.df)
    assert c.method == stats.TEST_WELCH
    assert c.delta == pytest.approx(1.10 / 1.005 - 1)
    assert c.significant
    # the interval holds the estimate and excludes no-change
    assert 0 < c.ci_low < c.change < c.ci_high
    # resolution is the half-width in log space, as a relative change
    half = math.log1p(c.ci_high) - math.log(1 + c.change)
    assert c.resolution == pytest.approx(math.expm1(half))


def test_comparison_does_not_depend_on_the_unit():
    cur, base = [1.1, 1.2, 1.15], [1.0, 1.05, 0.98]
    a = stats.compare_rounds(cur, base)
    b = stats.compare_rounds([v * 1000 for v in cur], [v * 1000 for v in base])
    assert (b.delta, b.p_value, b.ci_low, b.ci_high) == pytest.approx((a.delta, a.p_value, a.ci_low, a.ci_high))


def test_interval_of_the_change_covers_the_true_ratio_at_its_level():
    # 3 rounds a side, 2% lognormal noise, a true 7% rise: 95% of intervals should hold it
    rng = random.Random(11)
    trials, hits = 1500, 0
    for _ in range(trials):
        c = stats.compare_rounds(_lognormal(rng, 3, 1.07, 0.02), _lognormal(rng, 3, 1.0, 0.02))
        hits += c.ci_low <= 0.07 <= c.ci_high
    assert 0.93 <= hits / trials <= 0.97


def test_one_round_against_many_uses_the_other_sides_spread():
    base = [1.0, 1.02, 0.98, 1.01, 0.99]
    c = stats.compare_rounds([1.2], base)
    assert c.tested and c.df == 4
    assert "single current round" in c.method
    # the t-test of one value against a sample: se = s * sqrt(1 + 1/n)
    s = np.std(np.log(base), ddof=1)
    t = (math.log(1.2) - np.mean(np.log(base))) / (s * math.sqrt(1 + 1 / 5))
    assert c.p_value == pytest.approx(2 * sps.t.sf(abs(t), 4))
    rev = stats.compare_rounds(base, [1.2])
    assert "single baseline round" in rev.method and rev.df == 4


def test_one_round_each_cannot_be_tested():
    c = stats.compare_rounds([1.2], [1.0])
    assert not c.tested and not c.significant
    assert c.p_value is None and c.ci_low is None and c.resolution is None
    assert c.delta == pytest.approx(0.2)
    assert c.method == stats.TEST_NONE


def test_two_rounds_a_side_test_but_resolve_little():
    c = stats.compare_rounds([1.01, 0.99], [1.005, 0.995])
    assert c.tested
    assert c.resolution > 0.05  # a t quantile of ~12.7 at df=1 swamps 1% noise


def test_identical_rounds_are_exact():
    same = stats.compare_rounds([2.0, 2.0, 2.0], [2.0, 2.0])
    assert same.p_value == 1.0 and not same.significant and same.resolution == 0.0
    shifted = stats.compare_rounds([2.2, 2.2, 2.2], [2.0, 2.0])
    assert shifted.p_value == 0.0 and shifted.significant
    assert shifted.ci_low == pytest.approx(0.1) and shifted.ci_high == pytest.approx(0.1)


def test_extreme_ratios_saturate_instead_of_overflowing():
    c = stats.compare_rounds([1e300, 2e300], [1e-300, 2e-300])
    assert c.delta == math.inf and c.significant


def test_comparison_refuses_bad_values():
    with pytest.raises(ValueError, match=r"baseline\[1\]"):
        stats.compare_rounds([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="at least one round"):
        stats.compare_rounds([], [1.0])


def test_importing_stats_and_verdict_stays_light():
    code = (
        "import sys, pytest_joules.judge.stats, pytest_joules.judge.verdict, pytest_joules.measure.measurement\n"
        "heavy = [m for m in ('numpy', 'scipy', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
