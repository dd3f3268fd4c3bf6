"""The session's end: its common shift against the drift between sessions, every test again.

While tests run, a test knows only the tests that ran before it (drift.judge with the median of
theirs). When the session ends every test is judged once more (`finish`):

- against the median of all the *other* tests of its frame (the tests whose baselines were
  recorded in the same sessions: only they share the baseline's offset too), at the test's own
  confidence: one more look, at the stopping rule's per-look level;
- the session check: the common shift of all the frame's tests against the drift band, at
  SESSION_CONFIDENCE (a whole-session shift is one event per session, judged once). When the whole
  session moved beyond the band and the tolerance, each test whose own change is beyond the
  tolerance in that direction is a regression (an improvement) with it.

The end only adds what the tests could not see while they ran: a regression or an improvement, or
a verdict for a test left NOISY. A verdict reached while the test ran (a regression, a pass the
rounds vouched for) stands. A regression found here was not failed while its test ran (its test
passed): the session fails instead, naming it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from . import drift as D
from . import verdict as V

#: the session check's confidence (two-sided): at most 0.5% of unchanged sessions are called a
#: whole-session regression, and as many an improvement
SESSION_CONFIDENCE = 0.99


@dataclass(frozen=True)
class Item:
    """One test's change as its verdict was reached while it ran."""

    key: str
    frame: str
    change: D.Change
    verdict: V.Verdict
    tolerance: float
    confidence: float
    noisy_fails: bool = False


@dataclass(frozen=True)
class FrameCheck:
    """The session check of one frame: its tests' common shift against the drift band."""

    frame: str
    tests: int
    sessions: int
    #: "regression", "improved", "within drift", "too few tests"
    status: str
    shift: float | None = None
    low: float | None = None
    high: float | None = None
    #: half-width of the shift's interval with drift (relative): the whole-session change that
    #: cannot be told from drift
    band: float | None = None
    confidence: float = SESSION_CONFIDENCE
    #: the shift's own variance (log) from its tests' rounds: saved runs' spread takes it off
    noise: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SessionResult:
    spread: D.Spread
    frames: list[FrameCheck] = field(default_factory=list)
    #: every item's final verdict
    verdicts: dict[str, V.Verdict] = field(default_factory=dict)
    #: keys whose failure was found only at the session's end
    found: list[str] = field(default_factory=list)

    @property
    def main(self) -> FrameCheck | None:
        """The frame with the most tests (the one the summary leads with)."""
        return max(self.frames, key=lambda f: f.tests, default=None)

    def to_dict(self) -> dict[str, Any]:
        main = self.main
        return {"spread": self.spread.to_dict(), "shift": main.shift if main else None,
                "status": main.status if main else None, "frames": [f.to_dict() for f in self.frames],
                "found_at_end": list(self.found)}


def check(changes: Sequence[D.Change], spread: D.Spread, tolerance: float, frame: str = "",
          confidence: float = SESSION_CONFIDENCE) -> tuple[FrameCheck, D.Test | None]:
    """The session check of one frame's changes."""
    sessions = max((c.sessions for c in changes), default=1)
    shift = D.common_shift(changes)
    if shift is None:
        return FrameCheck(frame, len(changes), sessions, "too few tests", confidence=confidence), None
    drift = spread.between(sessions)
    df = D.welch_df([(shift.var, shift.df), (drift, spread.df)], default=shift.df)
    test = D.Test(shift.value, shift.value, shift.var + drift, df, confidence)
    status = "regression" if test.regression(tolerance) else "improved" if test.improvement(tolerance) else "within drift"
    half = test.half
    return FrameCheck(frame, len(changes), sessions, status, math.expm1(shift.value), math.expm1(shift.value - half),
                      math.expm1(shift.value + half), math.expm1(half), confidence, shift.var), test


def finish(items: Sequence[Item], spread: D.Spread, tolerance: float,
           confidence: float = SESSION_CONFIDENCE) -> SessionResult:
    """Every item's final verdict and each frame's session check (see the module doc)."""
    result = SessionResult(spread)
    frames: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        frames[item.frame].append(item)
    for frame, group in frames.items():
        fc, test = check([i.change for i in group], spread, tolerance, frame, confidence)
        result.frames.append(fc)
        for item in group:
            final = _final(item, [i.change for i in group if i is not item], spread, fc, test)
            result.verdicts[item.key] = final
            if final.failed and not item.verdict.failed:
                result.found.append(item.key)
    return result


def _final(item: Item, others: list[D.Change], spread: D.Spread, fc: FrameCheck, test: D.Test | None) -> V.Verdict:
    if item.verdict.status == V.REGRESSION:
        return item.verdict  # failed while it ran: that stands
    shift = D.common_shift(others)
    v = D.judge(item.change, item.tolerance, spread, shift, confidence=item.confidence, noisy_fails=item.noisy_fails)
    if v.status in (V.REGRESSION, V.IMPROVED):
        return v
    if test is None:
        return _kept(item, v, shift, len(others))
    size = math.expm1(item.change.size)
    up = test.mean - test.half > 0 and size - item.tolerance > V._EPS
    down = test.mean + test.half < 0 and -size - item.tolerance > V._EPS
    if up or down:
        detail = (f"the whole session moved {fc.shift:+.2%} (the median of its {fc.tests} tests' changes), beyond the "
                  f"drift between sessions ({V._percent(fc.confidence)} CI [{fc.low:+.2%}, {fc.high:+.2%}] with the "
                  f"spread {spread.sd:.2%} in it); this test's {size:+.2%} is part of it")
        return replace(v, status=V.REGRESSION if up else V.IMPROVED, detail=detail, ci_low=fc.low, ci_high=fc.high,
                       resolution=fc.band, method="session check: the common shift against the drift between sessions")
    return _kept(item, v, shift, len(others))


def _kept(item: Item, v: V.Verdict, shift: D.Shift | None, others: int) -> V.Verdict:
    """Nothing new found: a pass reached while the test ran stands; anything else takes the end's verdict."""
    if item.verdict.status == V.PASS:
        return item.verdict
    return _closed(v, shift, others, item.noisy_fails)


def _closed(v: V.Verdict, shift: D.Shift | None, others: int, noisy_fails: bool) -> V.Verdict:
    """A verdict that is final: a NOISY one held back by drift now fails as NOISY does."""
    if v.status != V.NOISY or "cannot be told from the drift" not in v.detail:
        return v
    why = ("the session's shift is not known: fewer than "
           f"{D.MIN_PEERS} other tests were compared with baselines of the same sessions ({others})" if shift is None else
           "the session's shift is known too roughly")
    detail = (v.detail.split("; the session's other tests", 1)[0] + f"; {why}: record the baselines over several "
              "sessions (--joules-baseline-sessions) so the drift is known better, or judge more tests together")
    return replace(v, detail=detail, noisy_fails=noisy_fails)
