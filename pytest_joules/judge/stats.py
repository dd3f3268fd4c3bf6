"""Statistics of measurement rounds: one set of rounds (`summarize`) and two sets (`compare_rounds`).

Users run 3 to 10 rounds per workload, so every choice here is made for small samples:

- Summary of one set: median, quartiles (linear interpolation, numpy's default), IQR, and
  (max - min) / median. The confidence interval of the median is the exact, distribution-free
  order-statistic interval [x_(k), x_(n+1-k)]: its coverage is 1 - 2 P(Binomial(n, 1/2) < k),
  computed exactly, with no random numbers, so the same rounds always give the same interval.
  Below 6 rounds no pair of order statistics reaches 95% (for n = 5, [min, max] covers 93.75%), so
  the interval is then [min, max] and `ci_coverage` says how much it really covers.

- Two sets (the regression test): a two-sample t-test on the logarithms of the per-round
  J/token, which gives a confidence interval for the ratio current/baseline. Unlike Welch's test
  it does not trust the smaller of the two spreads: both sides use the larger variance, and the
  Welch-Satterthwaite degrees of freedom follow (see `compare_rounds`: rounds close in time are
  correlated on real hardware, so a few rounds can agree far better than the device does). With
  equal spreads it is Welch's test; for independent rounds its intervals cover a little more than
  their nominal level (97% for a nominal 95% at 3 rounds a side, tests/test_stats.py). Why a
  t-test:
    * Energy noise is relative (a few percent of the value), so logs make it additive and the
      result is independent of the unit and of the workload's size.
    * It has power with 2 to 3 rounds a side, where rank tests have none: the exact Mann-Whitney
      U test of 3 rounds against 3 cannot go below p = 0.1 two-sided whatever the data, so it
      could never flag a regression at the default of 3 rounds; a bootstrap of 3 values can only
      resample 3 distinct medians, so its interval is coarse and its coverage unknown.
    * An outlier round inflates the variance, which widens the interval: it can make a verdict
      "noisy", never a false regression. The size of a change is judged on the ratio of medians
      (`delta`), which one outlier cannot move much, and the verdict needs both (see verdict.py).
  With 1 round on one side, that side has no spread of its own; the other side's spread stands
  in for it (the t-test of a single value against a sample, df = n_other - 1). With 1 round on
  both sides there is no noise estimate at all: no test is run (`tested` is False) and the caller
  must say so. With 2 rounds a side the test runs but its interval is wide (t quantile 12.7 at
  df = 1), so small changes come out as "cannot resolve".

The module imports only the standard library at import time; scipy (for the t distribution) is
imported on first use.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

DEFAULT_CONFIDENCE = 0.95

TEST_WELCH = "t-test on log J/token (each side's variance at least the other's)"
TEST_ONE_SIDED_SPREAD = "t-test of the single {single} round against the {other}'s spread"
TEST_NONE = "no test: 1 round each side, no estimate of the noise"


def check_values(values: Sequence[float], what: str = "rounds") -> list[float]:
    """Return `values` as floats, or raise ValueError naming the first one that is not a
    positive finite number (energy per token can be nothing else)."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{what}[{i}] = {v!r}: every round must be a positive finite number")
        out.append(float(v))
    return out


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1):
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default method)."""
    n = len(sorted_values)
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _binom_half_cdf(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k), exactly."""
    return float(sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def median_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float] | None:
    """Order-statistic confidence interval of the median: (low, high, actual coverage).

    The narrowest symmetric pair of order statistics whose coverage is at least `confidence`;
    when even [min, max] covers less (n < 6 at 95%), [min, max] with its true coverage. None for
    fewer than 2 values, where no interval exists.
    """
    _check_confidence(confidence)
    xs = sorted(values)
    n = len(xs)
    if n < 2:
        return None
    best = 1  # k = 1 is [min, max]
    for k in range(1, n // 2 + 1):
        if 1 - 2 * _binom_half_cdf(n, k - 1) >= confidence:
            best = k
        else:
            break
    coverage = 1 - 2 * _binom_half_cdf(n, best - 1)
    return xs[best - 1], xs[n - best], coverage


@dataclass(frozen=True)
class Summary:
    """The statistics of one set of rounds (per-round J/output-token)."""

    n: int
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    #: order-statistic confidence interval of the median; None with a single round
    ci_low: float | None
    ci_high: float | None
    #: the probability that [ci_low, ci_high] holds the true median (exact, may be < confidence)
    ci_coverage: float | None

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        return self.iqr / self.median

    @property
    def rel_range(self) -> float:
        """(max - min) / median: the same figure as `Measurement.spread`."""
        return (self.maximum - self.minimum) / self.median


def summarize(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Summary:
    """Median, quartiles, spread and the median's confidence interval of a set of rounds."""
    xs = sorted(check_values(values))
    if not xs:
        raise ValueError("no rounds to summarize")
    ci = median_ci(xs, confidence)
    return Summary(
        n=len(xs),
        median=statistics.median(xs),
        q1=quantile(xs, 0.25),
        q3=quantile(xs, 0.75),
        minimum=xs[0],
        maximum=xs[-1],
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        ci_coverage=ci[2] if ci else None,
    )


def _expm1(x: float) -> float:
    """exp(x) - 1 that saturates at inf instead of raising OverflowError."""
    return math.inf if x > 700 else math.expm1(x)


@dataclass(frozen=True)
class Comparison:
    """Current rounds against baseline rounds.

    `delta` is the relative change of the medians (what tables show). `change`, `ci_low`,
    `ci_high` are the relative change of the geometric means and its confidence interval from
    the t-test on logs (what decides significance). `resolution` is the half-width of that
    interval as a relative change: the smallest change these rounds can tell from noise.
    """

    n_current: int
    n_baseline: int
    current_median: float
    baseline_median: float
    delta: float
    change: float
    confidence: float
    method: str
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    df: float | None = None
    resolution: float | None = None

    @property
    def tested(self) -> bool:
        return self.p_value is not None

    @property
    def significant(self) -> bool:
        """The interval excludes "no change" (equivalent to p < 1 - confidence)."""
        return self.tested and (self.ci_low > 0 or self.ci_high < 0)  # type: ignore[operator]


def compare_rounds(
    current: Sequence[float], baseline: Sequence[float], confidence: float = DEFAULT_CONFIDENCE
) -> Comparison:
    """Compare two sets of rounds (see the module docstring for the test and why)."""
    _check_confidence(confidence)
    cur = check_values(current, "current")
    base = check_values(baseline, "baseline")
    if not cur or not base:
        raise ValueError("both sets need at least one round")
    cur_med, base_med = statistics.median(cur), statistics.median(base)
    log_c = [math.log(v) for v in cur]
    log_b = [math.log(v) for v in base]
    diff = statistics.fmean(log_c) - statistics.fmean(log_b)
    common = dict(
        n_current=len(cur),
        n_baseline=len(base),
        current_median=cur_med,
        baseline_median=base_med,
        delta=cur_med / base_med - 1,
        change=_expm1(diff),
        confidence=confidence,
    )
    nc, nb = len(cur), len(base)
    if nc >= 2 and nb >= 2:
        # Each side's variance is at least the other's: both sides ran the same engine on the
        # same device, so its noise is what the noisier side saw. A few rounds taken close
        # together can agree far better than the device does (a host that stays in one speed
        # state through them, data/h200-hf-llama): taken at face value, their small spread
        # makes a chance offset look significant.
        var = max(statistics.variance(log_c), statistics.variance(log_b))
        vc, vb = var / nc, var / nb
        se = math.sqrt(vc + vb)
        # Welch-Satterthwaite on the floored variances; with no variance at all the df does not
        # matter (se = 0). By hand, not scipy.stats.ttest_ind(equal_var=False): scipy takes each
        # side's own variance, so it answers a different question once the floor applies
        denom = vc * vc / (nc - 1) + vb * vb / (nb - 1)
        df = (vc + vb) ** 2 / denom if denom > 0 else float(nc + nb - 2)
        method = TEST_WELCH
    elif nc >= 2 or nb >= 2:
        spread_side = log_c if nc >= 2 else log_b
        se = statistics.stdev(spread_side) * math.sqrt(1 / nc + 1 / nb)
        df = float(len(spread_side) - 1)
        single, other = ("current", "baseline") if nc == 1 else ("baseline", "current")
        method = TEST_ONE_SIDED_SPREAD.format(single=single, other=other)
    else:
        return Comparison(method=TEST_NONE, **common)  # type: ignore[arg-type]

    from scipy import stats as _st  # lazy: keep `import pytest_joules.judge.stats` light

    if se > 0:
        p = float(2 * _st.t.sf(abs(diff) / se, df))
        half = float(_st.t.ppf(1 - (1 - confidence) / 2, df)) * se
    else:  # identical rounds on both sides: any difference is exact
        p = 0.0 if diff != 0 else 1.0
        half = 0.0
    return Comparison(
        method=method,
        ci_low=_expm1(diff - half),
        ci_high=_expm1(diff + half),
        p_value=p,
        df=df,
        resolution=_expm1(half),
        **common,  # type: ignore[arg-type]
    )
