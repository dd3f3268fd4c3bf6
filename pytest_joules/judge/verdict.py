"""Verdicts: how a measurement compares with its baseline.

`judge` takes the per-round J/output-token values of the baseline and of the current run, so
it can weigh a change against the noise, not only compare two numbers.

The rule (tolerance T, per test from the marker; confidence 95% unless told):

- REGRESSION: the median rose by more than T *and* the rise stands out from the noise: the
  confidence interval of the change (a t-test on log rounds, see stats.py) lies above zero.
- IMPROVED: the same, downwards.
- NOISY: not a significant change beyond T, and the rounds cannot resolve a change of size T
  (the interval's half-width, `resolution`, exceeds T). A pass here would claim "no regression
  of T" without the evidence for it; a failure would flag noise.
- PASS: within T, or beyond T but not significant while the rounds could resolve T; `detail`
  says which.
- NEW: no baseline rounds. INVALID: no valid current rounds, or unusable values.
- With 1 round on each side no test is possible: the verdict falls back to T alone (like
  pytest-benchmark's compare-fail) and `detail` says that no significance test was run.

Does NOISY fail a test? Not by default (`noisy_fails=False`). A gate that goes red whenever a
shared runner is busy gets switched off; NOISY is instead reported as its own verdict with the
resolution that was reached and what to change (more rounds, longer windows). A CI owner who
prefers a red build to an unproven pass sets `noisy_fails=True`. A real regression is never hidden
by this choice when the rounds can show it: a significant change beyond T is REGRESSION however
wide the spread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from . import stats
from ..errors import ConfigError
from ..numbers import sig

PASS = "pass"
REGRESSION = "regression"
IMPROVED = "improved"
NEW = "new"
NOISY = "noisy"
INVALID = "invalid"
DRY_RUN = "dry-run"

#: verdicts that fail a test (NOISY too when the verdict was made with noisy_fails=True)
FAILING = frozenset({REGRESSION})

#: every status `judge` can return
STATUSES = frozenset({PASS, REGRESSION, IMPROVED, NEW, NOISY, INVALID})

#: changes closer to the tolerance than this count as equal to it, and a change equal to the
#: tolerance passes: only float noise in the ratio of medians (~1e-16) is absorbed. The plugin and
#: `joules compare` both judge here, on the same full-precision rounds (see baselines.py).
_EPS = 1e-9


@dataclass(frozen=True)
class Verdict:
    status: str
    current: float | None = None
    baseline: float | None = None
    #: (current - baseline) / baseline, of the medians
    delta: float | None = None
    tolerance: float | None = None
    detail: str = ""
    #: confidence interval of the relative change (None when untested)
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    #: the smallest relative change these rounds can tell from noise
    resolution: float | None = None
    #: the statistical test that was used
    method: str = ""
    #: whether a NOISY verdict fails (set from judge's noisy_fails)
    noisy_fails: bool = False
    #: the drift model's (judge/drift.py): the session's common shift this test was judged against
    #: (None before enough tests ran), and the sd of the drift between sessions its interval held
    shift: float | None = None
    drift: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILING or (self.status == NOISY and self.noisy_fails)

    def message(self, what: str = "J/output-token") -> str:
        if self.status in (NEW, INVALID, DRY_RUN):
            return self.detail or self.status
        return (
            f"{self.status}: {what} baseline {self.baseline:.6g}, now {self.current:.6g}, "
            f"delta {self.delta:+.2%}, tolerance {self.tolerance:.2%}"
            + (f" ({self.detail})" if self.detail else "")
        )

    def failure(self, name: str, what: str = "J/output-token", verbose: bool = False) -> str:
        """A failing test's message. The first line leads with the verdict and the change, since
        it is all that pytest's one-line summaries (`-q`, `-rf`, CI annotations) keep, and fits
        `FIRST_LINE` characters (the test's name moves to the second line when it would not); the
        next line says in plain words why; the statistics (`detail`) follow only when `verbose`."""
        head = f"energy {self.status}"
        if self.delta is not None and self.tolerance is not None:
            head += f" {change_text(self.delta, self.tolerance)} (tolerance {percent_text(self.tolerance)})"
        figures = ""
        if self.baseline is not None and self.current is not None:
            figures = f": {what} baseline {sig(self.baseline)}, now {sig(self.current)}"
        lines = [f"{head}: {name}{figures}"]
        if len(lines[0]) > FIRST_LINE:
            lines = [head + figures, f"  test: {name}"]
        why = self.plain()
        if why:
            lines.append(f"  {why}")
        if self.detail and (verbose or not why):
            lines.append(f"  {'statistics: ' if why else ''}{self.detail}")
        return "\n".join(lines)

    def plain(self) -> str:
        """Why, in plain words (the statistics are in `detail`, the JSON and the docs)."""
        if self.status in (REGRESSION, IMPROVED) and self.ci_low is not None and self.ci_high is not None:
            return (f"beyond the noise: the rounds put the change between {self.ci_low:+.1%} and "
                    f"{self.ci_high:+.1%}")
        if self.status in (REGRESSION, IMPROVED) and self.delta is not None:
            return "judged on the tolerance alone: too few rounds to tell the change from noise (use 3 or more)"
        if self.status == NOISY and self.resolution is not None and self.tolerance is not None:
            return (f"too noisy to judge a {percent_text(self.tolerance)} change: these rounds tell apart only "
                    f"changes over {self.resolution:.1%}; measure more rounds (--joules-max-seconds) or quieten "
                    "the engine")
        return ""


#: the longest first line of a failure (pytest's one-line summaries and CI annotations keep only it)
FIRST_LINE = 100


def percent_text(fraction: float) -> str:
    """0.05 as "5%", 0.125 as "12.5%": a tolerance as users write it."""
    return f"{fraction * 100:.4g}%"


def change_text(delta: float, tolerance: float) -> str:
    """A change to one decimal ("+10.2%"), or as many more (up to 4) as it takes not to read as
    the tolerance itself when it is not ("+3.0003%" against 3%)."""
    for digits in range(1, 5):
        text = f"{delta:+.{digits}%}"
        if abs(abs(delta) - tolerance) <= _EPS or f"{abs(delta):.{digits}%}" != f"{tolerance:.{digits}%}":
            return text
    return text


def check_tolerance(tolerance: float) -> float:
    """Raise ConfigError unless `tolerance` is a finite fraction >= 0 (0.05 means 5%)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"tolerance must be a non-negative fraction such as 0.05 (5%), got {tolerance!r}")
    return float(tolerance)


def parse_tolerance(text: str | float) -> float:
    """A tolerance from the command line, an ini key or an assertion: "5%" or 0.05 (both mean 5%);
    a bare number of 1 or more is refused (see tolerance.parse)."""
    from .tolerance import ToleranceError, parse

    try:
        return parse(text)
    except ToleranceError as exc:
        raise ConfigError(f"tolerance {text!r}: {exc}") from None


def _bad(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0]


def _percent(confidence: float) -> str:
    """95% as "95%", 99.62% as "99.62%": never rounded up to a 100% that no interval has."""
    text = f"{confidence * 100:.2f}".rstrip("0").rstrip(".")
    return text + "%"


def _evidence(c: stats.Comparison) -> str:
    level = _percent(c.confidence)
    rounds = f"{c.n_current} vs {c.n_baseline} rounds"
    return f"{level} CI of the change [{c.ci_low:+.2%}, {c.ci_high:+.2%}], p={c.p_value:.2g}; {c.method}, {rounds}"


def judge(
    current: Sequence[float],
    baseline: Sequence[float] | None,
    tolerance: float,
    *,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    noisy_fails: bool = False,
) -> Verdict:
    """Compare two sets of rounds against a relative tolerance (the rule is in the module doc)."""
    tolerance = check_tolerance(tolerance)
    if not current:
        return Verdict(INVALID, tolerance=tolerance, detail="no valid rounds to judge")
    bad = _bad(current)
    if bad:
        return Verdict(INVALID, tolerance=tolerance, detail=f"rounds hold values that are not positive J/token: {bad[:3]}")
    now = statistics.median(current)
    if not baseline:
        return Verdict(NEW, current=now, tolerance=tolerance, detail="no baseline recorded yet")
    bad = _bad(baseline)
    if bad:
        return Verdict(
            INVALID, current=now, tolerance=tolerance,
            detail=f"the baseline holds values that are not positive J/token: {bad[:3]}; record it again",
        )
    c = stats.compare_rounds(current, baseline, confidence)
    up = c.delta - tolerance > _EPS
    down = -c.delta - tolerance > _EPS
    common = dict(
        current=c.current_median, baseline=c.baseline_median, delta=c.delta, tolerance=tolerance,
        ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value, resolution=c.resolution,
        method=c.method, noisy_fails=noisy_fails,
    )
    if not c.tested:
        status = REGRESSION if up else IMPROVED if down else PASS
        detail = "judged on the tolerance alone: " + c.method + "; use 3 or more rounds for a significance test"
        return Verdict(status, detail=detail, **common)  # type: ignore[arg-type]
    if up and c.ci_low > 0:  # type: ignore[operator]
        return Verdict(REGRESSION, detail="significant: " + _evidence(c), **common)  # type: ignore[arg-type]
    if down and c.ci_high < 0:  # type: ignore[operator]
        return Verdict(IMPROVED, detail="significant: " + _evidence(c), **common)  # type: ignore[arg-type]
    if c.resolution > tolerance:  # type: ignore[operator]
        detail = (
            f"too noisy to judge a {tolerance:.2%} change: these rounds resolve only +/-{c.resolution:.2%} "
            f"({_evidence(c)}); measure more rounds (a larger --joules-max-seconds) or make the engine quieter"
        )
        return Verdict(NOISY, detail=detail, **common)  # type: ignore[arg-type]
    if up or down:
        return Verdict(PASS, detail="beyond the tolerance but not significant: " + _evidence(c), **common)  # type: ignore[arg-type]
    return Verdict(PASS, detail="within the tolerance: " + _evidence(c), **common)  # type: ignore[arg-type]
