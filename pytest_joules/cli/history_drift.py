"""`joules history --drift`: how a device drifts between sessions, from the saved runs.

Each run saved by `pytest --joules --joules-autosave` keeps its session check (judge/drift_session.py):
the session's common shift (the median change of its tests against their baselines), the band of
shifts that is drift on this device, and what the check made of the shift. Per device and engine,
one line per run, and the between-session spread these runs show (successive differences of the
shifts of runs compared with the same baseline sessions, as the plugin estimates it).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import DataError
from .history import sparkline


def print_drift(files: list[Any], plot: str | None) -> None:
    from ..judge.drift_history import from_runs
    from ..store.history import drift

    if plot:
        raise DataError("--plot draws one test's trend; give a TEST instead of --drift to draw it")
    for s in drift(files):
        sim = "" if not s.simulated or "SIMULATED" in s.device.upper() else " (SIMULATED)"
        shifts = [p.shift for p in s.points]
        print(f"{s.device}{sim}")
        kept = [(p.frame or "", math.log1p(p.shift), p.noise or 0.0) for p in s.points
                if p.shift is not None and p.status == "within drift"]
        part = from_runs(kept)
        spread = (f"between-session spread in these runs: {math.sqrt(part.ss / part.df):.2%} ({part.df:.0f} successive "
                  "difference(s))" if part is not None and part.df > 0 else
                  "between-session spread: too few runs with a session check to tell (it takes two against the same baselines)")
        print(f"  session shift {sparkline(shifts)}  ({len(s.points)} run(s)); {spread}")
        print(f"  {'run':<6} {'created (UTC)':<20} {'commit':<14} {'shift':>7} {'drift band':>10} {'tests':>5}  "
              f"{'spread used':<24} session check")
        for p in s.points:
            commit = "-" if not p.commit else p.commit[:7] + ("+dirty" if p.dirty else "")
            created = (p.created or "-").replace("+00:00", "")
            shift = "-" if p.shift is None else f"{p.shift:+.2%}"
            band = "-" if p.band is None else f"±{p.band:.2%}"
            used = "-" if p.spread is None else f"{p.spread:.2%} ({p.source})"
            print(f"  {p.run:<6} {created:<20} {commit:<14} {shift:>7} {band:>10} {p.tests:>5}  {used:<24} "
                  f"{p.status or '- (no session check in this run)'}")
