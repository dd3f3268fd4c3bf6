"""The device's between-session spread, estimated from what the project keeps (docs/drift.md).

Two sources, both of this device and engine (the same baseline fingerprint):

- a baseline recorded over several sessions (`--joules-baseline-sessions K`): each test keeps
  each session's rounds. Centred per test, the median over tests of a session's deviation is that
  session's shift; K sessions give K - 1 degrees of freedom. The rounds' own noise stays in it (a
  median over tests makes it small): the estimate errs a little high.
- saved runs (`--joules-autosave`): each keeps its session's common shift (drift_session). Runs
  compared with the same baseline sessions (a frame) differ from one another by their drift:
  successive differences, var 2 tau^2 each, so a baseline re-recorded or a change accepted between
  runs costs one difference, not the estimate. Each shift's own noise (kept with it) is taken off.
  Runs whose session check found a whole-session regression or improvement are left out (that
  shift was not drift), and so are differences beyond 5 robust sds (from 5 differences on).

`posterior` pools them with the prior (drift.PRIOR_SD, weighing drift.PRIOR_WEIGHT sessions): a
scaled inverse chi-square, so its degrees of freedom (prior + history) make the t quantiles of
the verdicts wider while little is known.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from . import drift as D

#: a successive difference beyond this many robust sds is a change, not drift
OUTLIER_SDS = 5.0


@dataclass(frozen=True)
class Part:
    """Sum of squared shifts (log), their degrees of freedom, and how many sessions gave them."""

    ss: float
    df: float
    sessions: int
    what: str


def from_sessions(tests: Sequence[Mapping[str, tuple[float, float]]]) -> Part | None:
    """From baseline entries' sessions: per test, {session id: (mean log J/token of the session's
    rounds, that mean's variance from its rounds)}.

    Tests are grouped by the sessions they hold (a frame); the largest frame with two sessions and
    drift.MIN_PEERS tests or more is used. What the rounds' noise adds to the sessions' medians
    (pi/2 of their mean variance over the tests) is taken off."""
    frames: dict[tuple[str, ...], list[Mapping[str, tuple[float, float]]]] = defaultdict(list)
    for t in tests:
        if len(t) >= 2:
            frames[tuple(sorted(t))].append(t)
    usable = [(ids, group) for ids, group in frames.items() if len(group) >= D.MIN_PEERS]
    if not usable:
        return None
    ids, group = max(usable, key=lambda item: (len(item[1]) * (len(item[0]) - 1), item[0]))
    shifts = [statistics.median(t[sid][0] - statistics.fmean(m for m, _ in t.values()) for t in group) for sid in ids]
    noise = D.MEDIAN_EFFICIENCY * statistics.fmean(v for t in group for _, v in t.values()) / len(group)
    df = len(ids) - 1
    return Part(max(0.0, sum(s * s for s in shifts) - df * noise), df, len(ids), "baseline sessions")


def from_runs(runs: Sequence[tuple[str, float, float]]) -> Part | None:
    """From saved runs' common shifts in time order: (frame, shift as log, the shift's own variance
    from its tests' rounds). A difference of two shifts holds both their noises: taken off."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for frame, shift, noise in runs:
        series[frame].append((shift, noise))
    diffs = [(b - a, va + vb) for values in series.values() for (a, va), (b, vb) in zip(values, values[1:])]
    if not diffs:
        return None
    if len(diffs) >= 5:
        scale = 1.4826 * statistics.median(abs(d) for d, _ in diffs)
        if scale > 0:
            diffs = [(d, v) for d, v in diffs if abs(d) <= OUTLIER_SDS * scale]
    used = sum(len(v) for v in series.values() if len(v) >= 2)
    ss = sum(d * d - v for d, v in diffs) / 2
    return Part(max(0.0, ss), len(diffs), used, "saved runs")


def posterior(parts: Sequence[Part | None], prior: D.Spread | None = None) -> D.Spread:
    """The spread from the prior and the history's parts (the prior alone when there are none)."""
    base = prior or D.prior()
    known = [p for p in parts if p is not None and p.df > 0]
    if not known:
        return base
    df = sum(p.df for p in known)
    ss = sum(p.ss for p in known)
    sd = math.sqrt((base.df * base.sd**2 + ss) / (base.df + df))
    detail = ", ".join(f"{p.sessions} {p.what}" for p in known)
    return D.Spread(sd, base.df + df, sum(p.sessions for p in known), "history", detail)
