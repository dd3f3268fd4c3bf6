"""The drift between sessions: every test of one session moves together (docs/drift.md).

The model, on the log of J/output-token of test i, round r, in session s:

    y[i, s, r] = level[i] + shift[s] + change[i] + noise[i, s, r]

- noise: the scatter of one session's rounds, what stats.compare_rounds weighs;
- shift[s] ~ N(0, tau^2): the session's offset, the same for every test of the session
  (temperature, clocks, driver state, neighbours; the simulator's per-session power offset).
  A session's rounds cannot see it, so no number of rounds averages it away;
- change[i]: what the verdict is about.

A baseline recorded over K sessions averages K shifts: the drift between a new session and it is
N(0, tau^2 (1 + 1/K)). tau is the device's between-session spread (`Spread`, estimated in
drift_history.py). A test's change is told from drift two ways:

- total: the change against the baseline, with the drift's variance in its interval. It is all a
  test measured alone can use, and the only way to see a shift of the whole session.
- relative: the change minus the session's common shift, the median of the *other* tests'
  changes (`Shift`: robust, so a few real regressions do not move it), with that median's own
  uncertainty. One test's real regression stands out of its session this way, at the precision
  of its rounds.

A test is a regression when either says so (beyond the tolerance and significant). The session's
end adds the session check (drift_session.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from . import stats
from . import verdict as V

#: the between-session spread (sd of log J/token) assumed with no history: the 90th percentile of
#: the 33 configurations of an optimised engine (vLLM with CUDA graphs) run ten times over a day in
#: the public TokenPowerBench data (range / 3.08 of 10 runs each: 0.26-1.15%, median 0.53%): a
#: device nothing is known of is taken to drift like the more drifting ones, not the typical one
PRIOR_SD = 0.010
#: ... weighing as much as 20 sessions of the device's own history: firm enough that a test alone
#: still resolves the default 5% tolerance, and 20 sessions of history outweigh it
PRIOR_WEIGHT = 20.0
#: the fewest other tests of a session whose median makes the session's common shift
MIN_PEERS = 3
#: from this many tests on, their changes' scatter around the median is estimated (MAD) and
#: taken as test-to-test drift when it exceeds what their rounds explain
MIN_SCATTER = 5
#: var(median of m) = MEDIAN_EFFICIENCY * var / m for normal values (pi / 2)
MEDIAN_EFFICIENCY = math.pi / 2
_EPS = 1e-9


@dataclass(frozen=True)
class Spread:
    """The device's between-session spread: sd of log J/token from one session to the next."""

    sd: float
    #: its degrees of freedom (inf for a stated value)
    df: float
    #: sessions of this device's own history behind it (0: the prior, or a stated value)
    sessions: int = 0
    #: "prior", "stated" or "history"
    source: str = "prior"
    #: where it came from, in words ("5 baseline sessions, 12 saved runs")
    detail: str = ""

    def between(self, baseline_sessions: int) -> float:
        """The variance of the drift between a session and a baseline of that many sessions."""
        return self.sd**2 * (1 + 1 / max(1, baseline_sessions))

    def describe(self) -> str:
        if self.source == "stated":
            return f"{self.sd:.2%} (stated with --joules-drift)"
        if self.source == "prior":
            return f"{self.sd:.2%} (prior: no history of this device yet)"
        return f"{self.sd:.2%} (from {self.detail}, with the prior)"

    def to_dict(self) -> dict[str, object]:
        return {"sd": self.sd, "df": None if math.isinf(self.df) else self.df, "sessions": self.sessions,
                "source": self.source, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spread:
        df = data.get("df")
        return cls(float(data["sd"]), math.inf if df is None else float(df), int(data.get("sessions") or 0),
                   str(data.get("source") or "prior"), str(data.get("detail") or ""))


def prior() -> Spread:
    return Spread(PRIOR_SD, PRIOR_WEIGHT)


def stated(sd: float) -> Spread:
    return Spread(float(sd), math.inf, source="stated")


@dataclass(frozen=True)
class Change:
    """One test's change against its baseline (all on the log scale): what the drift model needs,
    and what the session's end judges again (kept in the results JSON as the record's `drift`)."""

    #: log(current median / baseline level): compared with the tolerance (an outlier round moves
    #: a median little; as verdict.judge's delta). The level is the mean over sessions of log(median).
    size: float
    #: mean log of the current rounds - the mean over sessions of each session's mean log: tested
    mean: float
    #: variance of `mean` from the rounds alone, and its degrees of freedom
    var: float
    df: float
    #: sessions the baseline averages
    sessions: int
    n_current: int
    n_baseline: int
    current: float
    baseline: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON's numbers: an infinite df (no noise on either side to weigh) as null."""
        return {k: None if v == math.inf else v for k in self.__dataclass_fields__ for v in [getattr(self, k)]}

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> Change:
        return cls(**{k: math.inf if data[k] is None else data[k] for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def measure_change(current: Sequence[float], sessions: Sequence[Sequence[float]]) -> Change | None:
    """The change of `current` rounds against a baseline of one or more sessions' rounds; None
    when neither side has two rounds of one session (no estimate of the rounds' noise).

    As in stats.compare_rounds, both sides take the larger of their two variances (the baseline's
    is pooled within its sessions: the shifts between them are drift, not round noise)."""
    cur = [math.log(v) for v in stats.check_values(current, "current")]
    base = [[math.log(v) for v in stats.check_values(s, "baseline")] for s in sessions if len(s)]
    if not cur or not base:
        raise ValueError("both sides need at least one round")
    k = len(base)
    ss = sum(sum((x - statistics.fmean(s)) ** 2 for x in s) for s in base)
    df_b = sum(len(s) - 1 for s in base)
    var_c = statistics.variance(cur) if len(cur) > 1 else None
    var_b = ss / df_b if df_b else None
    if var_c is None and var_b is None:
        return None
    var = max(v for v in (var_c, var_b) if v is not None)
    vc = var / len(cur)
    vb = var * sum(1 / len(s) for s in base) / k**2
    if var_c is not None and var_b is not None:
        df = welch_df([(vc, len(cur) - 1), (vb, df_b)], default=len(cur) - 1 + df_b)
    else:
        df = float(len(cur) - 1 if var_c is not None else df_b)
    level = statistics.fmean(math.log(statistics.median(s)) for s in sessions if len(s))
    return Change(
        size=math.log(statistics.median(current)) - level,
        mean=statistics.fmean(cur) - statistics.fmean(statistics.fmean(s) for s in base),
        var=vc + vb, df=df, sessions=k, n_current=len(cur), n_baseline=sum(len(s) for s in base),
        current=float(statistics.median(current)), baseline=math.exp(level),
    )


def welch_df(parts: Sequence[tuple[float, float]], default: float) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variances, each with its own df."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if v > 0 and d > 0 and not math.isinf(d))
    if total <= 0:
        return float(default)
    return total * total / denom if denom > 0 else math.inf


@dataclass(frozen=True)
class Shift:
    """The session's common shift: the median of its tests' changes (log), with its uncertainty."""

    value: float
    #: variance of the median as an estimate of the shift
    var: float
    #: test-to-test scatter beyond the rounds' noise (0 below MIN_SCATTER tests)
    extra: float
    count: int

    @property
    def df(self) -> float:
        return float(max(1, self.count - 1))


def common_shift(changes: Sequence[Change]) -> Shift | None:
    """The median of the changes' sizes; None for fewer than MIN_PEERS.

    Its variance is that of a median of `count` values whose noise is at least their rounds' (a
    median's efficiency, pi/2) and at least their observed scatter (MAD, from MIN_SCATTER on): a
    drift that is not quite common to every test shows as scatter and widens it."""
    if len(changes) < MIN_PEERS:
        return None
    sizes = sorted(c.size for c in changes)
    mid = statistics.median(sizes)
    rounds = statistics.fmean(c.var for c in changes)
    extra = 0.0
    if len(changes) >= MIN_SCATTER:
        mad = 1.4826 * statistics.median(abs(s - mid) for s in sizes)
        extra = max(0.0, mad * mad - rounds)
    return Shift(mid, MEDIAN_EFFICIENCY * (rounds + extra) / len(changes), extra, len(changes))


def quantile(df: float, confidence: float) -> float:
    """Two-sided t quantile (normal for infinite df)."""
    from scipy import stats as _st  # lazy, like stats.py

    p = 1 - (1 - confidence) / 2
    return float(_st.norm.ppf(p) if math.isinf(df) else _st.t.ppf(p, df))


def _p(diff: float, var: float, df: float) -> float:
    from scipy import stats as _st

    if var <= 0:
        return 0.0 if diff != 0 else 1.0
    z = abs(diff) / math.sqrt(var)
    return float(2 * (_st.norm.sf(z) if math.isinf(df) else _st.t.sf(z, df)))


@dataclass(frozen=True)
class Test:
    """One way of judging a change: its centre, size, variance and degrees of freedom."""

    size: float
    mean: float
    var: float
    df: float
    confidence: float

    @property
    def half(self) -> float:
        return quantile(self.df, self.confidence) * math.sqrt(self.var) if self.var > 0 else 0.0

    def up(self, tolerance: float) -> bool:
        return math.expm1(self.size) - tolerance > V._EPS

    def down(self, tolerance: float) -> bool:
        return -math.expm1(self.size) - tolerance > V._EPS

    def regression(self, tolerance: float) -> bool:
        return self.up(tolerance) and self.mean - self.half > 0

    def improvement(self, tolerance: float) -> bool:
        return self.down(tolerance) and self.mean + self.half < 0

    def resolves(self, tolerance: float) -> bool:
        return math.expm1(self.half) <= tolerance + _EPS


def total_test(change: Change, spread: Spread, confidence: float) -> Test:
    """The change against the baseline, the drift between sessions in its variance."""
    drift = spread.between(change.sessions)
    df = welch_df([(change.var, change.df), (drift, spread.df)], default=change.df)
    return Test(change.size, change.mean, change.var + drift, df, confidence)


def relative_test(change: Change, shift: Shift, confidence: float) -> Test:
    """The change beyond the session's common shift (estimated from other tests)."""
    other = shift.var + shift.extra
    df = welch_df([(change.var, change.df), (other, shift.df)], default=change.df)
    return Test(change.size - shift.value, change.mean - shift.value, change.var + other, df, confidence)


def rounds_resolve(change: Change, tolerance: float, confidence: float) -> bool:
    """The rounds resolve the tolerance once the session's shift is known (from MIN_PEERS other
    tests at least, whose median's variance adds to theirs): more rounds cannot narrow what is
    left, the drift, so `--joules-rounds auto` may stop and the session's end will judge."""
    var = change.var * (1 + MEDIAN_EFFICIENCY / MIN_PEERS)
    return Test(change.size, change.mean, var, change.df, confidence).resolves(tolerance)


def _evidence(t: Test, method: str) -> dict[str, object]:
    """The verdict's interval, p-value, resolution and method from the test that decided it."""
    return dict(ci_low=math.expm1(t.mean - t.half), ci_high=math.expm1(t.mean + t.half),
                p_value=_p(t.mean, t.var, t.df), resolution=math.expm1(t.half), method=method)


def _text(t: Test, c: Change, method: str, beyond: str = "") -> str:
    level = V._percent(t.confidence)
    return (f"{level} CI of the change{beyond} [{math.expm1(t.mean - t.half):+.2%}, {math.expm1(t.mean + t.half):+.2%}], "
            f"p={_p(t.mean, t.var, t.df):.2g}; {method}, {c.n_current} vs {c.n_baseline} rounds")


def judge(change: Change, tolerance: float, spread: Spread, shift: Shift | None = None, *,
          confidence: float = stats.DEFAULT_CONFIDENCE, noisy_fails: bool = False) -> V.Verdict:
    """The verdict of one change, told from drift by its total and (with a shift) its relative test.

    REGRESSION when either test finds the change beyond the tolerance and significant; IMPROVED
    likewise downwards; PASS when a test resolves the tolerance (the relative one first); else
    NOISY. A NOISY verdict whose rounds did resolve the tolerance is held back by drift alone: it
    does not fail here (the session's end judges it again, with the session's other tests)."""
    tolerance = V.check_tolerance(tolerance)
    total = total_test(change, spread, confidence)
    rel = relative_test(change, shift, confidence) if shift is not None else None
    drift_sd = math.sqrt(spread.between(change.sessions))
    common: dict[str, object] = dict(
        current=change.current, baseline=change.baseline, delta=math.expm1(change.size), tolerance=tolerance,
        noisy_fails=noisy_fails, shift=None if shift is None else math.expm1(shift.value), drift=math.expm1(drift_sd))
    t_method = (f"t-test on log J/token with the drift between sessions in it (spread {spread.sd:.2%}, {spread.source}; "
                f"baseline of {change.sessions} session{'s' if change.sessions != 1 else ''})")
    r_method = "" if shift is None else (
        f"t-test on log J/token beyond the session's common shift {math.expm1(shift.value):+.2%} "
        f"(the median of {shift.count} other tests)")
    beyond = " beyond the session's shift"
    for status, found in ((V.REGRESSION, "regression"), (V.IMPROVED, "improvement")):
        for test, method, tag in ((rel, r_method, beyond), (total, t_method, "")):
            if test is not None and getattr(test, found)(tolerance):
                lead = "" if test is total else f"{math.expm1(test.size):+.2%} beyond the session's common shift, "
                return V.Verdict(status, detail=lead + "significant: " + _text(test, change, method, tag),
                                 **_evidence(test, method), **common)  # type: ignore[arg-type]
    for test, method, tag in ((rel, r_method, beyond), (total, t_method, "")):
        if test is not None and test.resolves(tolerance):
            within = "beyond the tolerance but not significant: " if test.up(tolerance) or test.down(tolerance) else "within the tolerance: "
            return V.Verdict(V.PASS, detail=within + _text(test, change, method, tag),
                             **_evidence(test, method), **common)  # type: ignore[arg-type]
    test, method, tag = (rel, r_method, beyond) if rel is not None else (total, t_method, "")
    evidence = _evidence(test, method)
    if shift is None and rounds_resolve(change, tolerance, confidence):
        detail = (f"a {tolerance:.2%} change cannot be told from the drift between sessions yet: with it the change is "
                  f"known to +/-{evidence['resolution']:.2%} ({_text(test, change, method, tag)}); the session's "
                  "other tests tell the drift apart (judged again at the session's end)")
        common["noisy_fails"] = False  # held back by drift alone: the session's end decides
        return V.Verdict(V.NOISY, detail=detail, **evidence, **common)  # type: ignore[arg-type]
    detail = (f"too noisy to judge a {tolerance:.2%} change: these rounds resolve only +/-{evidence['resolution']:.2%} "
              f"({_text(test, change, method, tag)}); measure more rounds (a larger --joules-max-seconds) or make "
              "the engine quieter")
    return V.Verdict(V.NOISY, detail=detail, **evidence, **common)  # type: ignore[arg-type]


def judge_rounds(current: Sequence[float], sessions: Sequence[Sequence[float]], tolerance: float, spread: Spread,
                 shift: Shift | None = None, *, confidence: float = stats.DEFAULT_CONFIDENCE,
                 noisy_fails: bool = False) -> tuple[V.Verdict, Change | None]:
    """`judge` from rounds: the verdict and the change (None, and verdict.judge's rule on the
    tolerance alone, when no side has the two rounds of one session a noise estimate needs)."""
    if not current or V._bad(current):
        return V.judge(current, [r for s in sessions for r in s], tolerance, confidence=confidence,
                       noisy_fails=noisy_fails), None
    change = measure_change(current, sessions)
    if change is None:
        return V.judge(current, [r for s in sessions for r in s], tolerance, confidence=confidence,
                       noisy_fails=noisy_fails), None
    return judge(change, tolerance, spread, shift, confidence=confidence, noisy_fails=noisy_fails), change
