"""`joules history TEST [--plot FILE.png]`: one test's J/output-token across the saved runs
(`joules history --drift`: the device's session shifts instead, `print_drift`).

TEST is a test's name as the results give it (its node id), or any part of it: every test whose
name contains it is shown, one series per workload. Each run shows its change from the run
before and from the first, so a slow drift that no single comparison flags is visible.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..store import runs
from ..errors import DataError

#: eight levels of a sparkline, lowest first
_BARS = "▁▂▃▄▅▆▇█"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "history", help="one test's energy across the saved runs (pytest --joules --joules-autosave)",
        description="Print the trend of one test's J/output-token over the runs saved by "
                    "`pytest --joules --joules-autosave`.",
    )
    p.add_argument("test", metavar="TEST", nargs="?", default=None, help="the test's name (node id) or part of it")
    p.add_argument("--drift", action="store_true",
                   help="instead, how the device drifts: each saved run's session shift (the median change of its "
                        "tests) and the between-session spread they show (docs/drift.md)")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also draw the trend to this PNG (needs matplotlib: pip install 'pytest-joules[plot]')")
    runs.add_storage_argument(p)
    return p


def sparkline(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    return "".join(" " if v is None else _BARS[0 if span == 0 else round((v - low) / span * (len(_BARS) - 1))]
                   for v in values)


def _change(value: float | None, ref: float | None) -> str:
    return "-" if value is None or not ref else f"{value / ref - 1:+.1%}"


def run(args: argparse.Namespace) -> int:
    from ..store.runs import read_runs, trend

    if args.plot:
        from ..report.plot import check_plot_path

        check_plot_path(args.plot)  # before reading every saved run
    storage = runs.require_storage(args)
    if args.test is None and not args.drift:
        raise DataError("name a TEST (or part of its name), or give --drift for the device's drift between sessions")
    files, notes = read_runs(runs.list_runs(storage))
    if not files:
        raise DataError(f"{storage} holds no saved runs; save some with `pytest --joules --joules-autosave`")
    if args.drift:
        print_drift(files, args.plot)
        for note in notes:
            print(f"joules history: note: {note}", file=sys.stderr)
        return 0
    series = trend(files, args.test)
    if args.plot:
        from ..report.plot import save_trend

        save_trend(args.plot, series)  # before printing: a missing matplotlib fails without half an output
    import os

    from ..numbers import sig
    from ..report.names import break_name

    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 80
    for s in series:
        sim = " (SIMULATED)" if s.simulated else ""
        batch = f" max_batch_size={s.max_batch_size}" if s.max_batch_size is not None else ""
        values = [p.j_per_out_token for p in s.points]
        print(break_name(s.name + ":", width))  # a long node id breaks at its joints, not anywhere
        print(f"  n_in={s.n_in} n_out={s.n_out} requests={s.requests}{batch}{sim}")
        print(f"  trend {sparkline(values)}  ({len(s.points)} run{'s' if len(s.points) != 1 else ''})")
        rows = [["run", "created (UTC)", "commit", "J/out-token", "vs prev", "vs first", "verdict"]]
        first = next((v for v in values if v is not None), None)
        previous = None
        for p in s.points:
            commit = "-" if not p.commit else p.commit[:7] + ("+dirty" if p.dirty else "")
            created = (p.created or "-").replace("+00:00", "").replace("T", " ")[:16]
            rows.append([p.run, created, commit, sig(p.j_per_out_token, none="-"),
                         _change(p.j_per_out_token, previous), _change(p.j_per_out_token, first), p.verdict or "-"])
            previous = p.j_per_out_token if p.j_per_out_token is not None else previous
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  " + "  ".join(c.rjust(w) if 3 <= i <= 5 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if args.plot:
        print(f"trend drawn to {args.plot}")
    for note in notes:
        print(f"joules history: note: {note}", file=sys.stderr)
    return 0


def print_drift(files: list[Any], plot: str | None) -> None:
    """How a device drifts between sessions, from the saved runs: each run keeps its session check
    (judge/drift_session.py): the session's common shift (the median change of its tests against
    their baselines), the band of shifts that is drift on this device, and what the check made of
    it. Per device and engine, one line per run, and the between-session spread these runs show
    (successive differences of runs against the same baseline sessions, as the plugin estimates it)."""
    import math

    from ..judge.drift_history import from_runs
    from ..store.runs import drift

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
