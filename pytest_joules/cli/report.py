"""`joules report [RUN] [--against OLD]`: the Markdown of a pull-request comment.

RUN is a results JSON, a baseline file or a saved run id (default `last`). Without `--against`
the comment shows the verdicts the run itself recorded (`pytest --joules` judged each test against
its baseline); with it, RUN is judged against OLD (a results file, a baseline file or a run id)
exactly as `joules compare` judges. The Markdown starts with a marker a workflow uses to update its
own comment (examples/ci/); `--out` writes it to a file, else it is printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import DataError
from .argtypes import tolerance_arg


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write the Markdown of a pull-request comment from a run",
        description="Write a pull-request comment (Markdown) from a run's results: the verdicts, the changes with "
                    "their intervals, latency where measured and the tolerance, within GitHub's comment size.",
    )
    p.add_argument("run", metavar="RUN", nargs="?", default="last",
                   help="a results JSON, a baseline file or a saved run id (default: last)")
    p.add_argument("--against", metavar="OLD", default=None,
                   help="judge RUN against OLD (a results JSON, a baseline file or a run id) instead of "
                        "showing the verdicts RUN recorded")
    p.add_argument("--tolerance", type=tolerance_arg, default=None, metavar="T",
                   help="with --against: allowed relative change, 0.05 or 5%% (default: each result's own, else 5%%)")
    p.add_argument("--out", metavar="FILE.md", default=None, help="write the Markdown here instead of printing it")
    from ..store import runs

    runs.add_storage_argument(p)
    return p


def _latency(raw: dict[str, Any]) -> str:
    """TTFT and TPOT where the run measured them (keys in seconds or milliseconds, or a
    `latency` object); "" otherwise."""
    latency = raw.get("latency")
    source: dict[str, Any] = latency if isinstance(latency, dict) else raw
    parts = []
    for label in ("ttft", "tpot"):
        ms = source.get(f"{label}_ms")
        if ms is None and isinstance(source.get(f"{label}_s"), (int, float)):
            ms = source[f"{label}_s"] * 1000
        if isinstance(ms, (int, float)) and not isinstance(ms, bool):
            from ..numbers import sig

            parts.append(f"{label.upper()} {sig(ms)} ms")
    return " · ".join(parts)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rows_from_run(results: Any) -> list[Any]:
    """The comment's rows from the verdicts a run recorded."""
    from ..report.comment import CommentRow

    rows = []
    for row in results.rows:
        v = row.raw.get("verdict") if isinstance(row.raw.get("verdict"), dict) else {}
        w = row.workload
        rows.append(CommentRow(
            row.name, w.n_in, w.n_out, w.requests, row.j_per_out_token, str(v.get("status") or "—"),
            baseline=_float(v.get("baseline")), delta=_float(v.get("delta")), ci_low=_float(v.get("ci_low")),
            ci_high=_float(v.get("ci_high")), confidence=_float(row.raw.get("confidence")),
            tolerance=_float(v.get("tolerance")), latency=_latency(row.raw)))
    return rows


def rows_from_comparison(report: Any) -> list[Any]:
    """The comment's rows from `joules compare`'s matches."""
    import statistics

    from ..report.comment import CommentRow

    rows = []
    for m in report.matches:
        v, w = m.verdict, m.workload
        old = m.old.round_values or ([m.old.j_per_out_token] if m.old.j_per_out_token is not None else [])
        rows.append(CommentRow(
            m.name, w.n_in, w.n_out, w.requests, m.new.j_per_out_token, v.status,
            baseline=statistics.median(old) if old else None, delta=v.delta, ci_low=v.ci_low, ci_high=v.ci_high,
            confidence=_float(m.new.raw.get("confidence")), tolerance=v.tolerance, latency=_latency(m.new.raw)))
    return rows


def _context(results: Any, rows: list[Any], against: str, run_label: str) -> Any:
    from ..report.comment import CommentContext

    device = results.device.get("name") or results.device.get("gpu") or ""
    git = results.machine.get("git") if isinstance(results.machine.get("git"), dict) else {}
    commit = str(git.get("commit") or "")[:7] + ("+dirty" if git.get("dirty") else "") if git.get("commit") else ""
    tolerances = {r.tolerance for r in rows if r.tolerance is not None}
    return CommentContext(simulated=results.simulated, device=str(device), against=against, run=run_label,
                          commit=commit, tolerance=tolerances.pop() if len(tolerances) == 1 else None)


def run(args: argparse.Namespace) -> int:
    from ..report.comment import comment_markdown
    from .compare import _read, compare_files

    results = _read(args.run, args)
    if args.against:
        old = _read(args.against, args)
        report = compare_files(old, results, tolerance=args.tolerance)
        rows = rows_from_comparison(report)
        notes = [f"only in {args.against}: {len(report.only_old)} test(s)"] if report.only_old else []
        notes += [f"new, not in {args.against}: {len(report.only_new)} test(s)"] if report.only_new else []
        notes += report.notes
    else:
        rows = rows_from_run(results)
        notes = []
    if not rows:
        raise DataError(f"{results.path}: no results to report")
    from pathlib import Path

    from ..store import runs

    label = Path(results.path).name[:4] if runs.is_run_spec(args.run) else Path(args.run).name
    ctx = _context(results, rows, args.against or "", label)
    ctx.notes.extend(notes)
    text = comment_markdown(rows, ctx)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise DataError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
        print(f"wrote the comment ({len(text):,} characters) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
