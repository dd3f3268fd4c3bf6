"""`joules compare OLD.json NEW.json`: the pytest verdicts outside pytest, for CI gates.

Results are matched by name and workload (n_in, n_out, requests, max_batch_size; not the prompt
seed, which changes the tokens but not the work); a name that appears several times in a file is
matched occurrence by occurrence. Files with no result in common are an error, not a pass. Each match is judged
by `verdict.judge` on the per-round values, with `--tolerance` or else the tolerance the result
was recorded with, or 5%. Two files whose device fingerprints differ (GPU, power limit, driver,
CUDA, GPU count, simulated; see fingerprint.py) are refused unless --allow-different-devices:
energy per token on another device is not a regression. Engine differences (a new engine
version is what users A/B) are compared and noted.

Exit status: 1 with `--fail` when any result regressed, or has no valid rounds in NEW (or was
noisy, with `--noisy-fails`); 0 otherwise; 2 on bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, DataError
from ..store.fingerprint import fingerprint
from ..store.results import ResultRow, ResultsFile, read_results
from ..judge.verdict import IMPROVED, INVALID, NEW, NOISY, REGRESSION, Verdict, check_tolerance, judge
from .argtypes import tolerance_arg
from ..engines.workload import Workload

DEFAULT_TOLERANCE = 0.05

#: statuses printed with their detail under the table
_EXPLAINED = frozenset({REGRESSION, NOISY, INVALID, IMPROVED})


@dataclass
class Match:
    name: str
    workload: Workload
    old: ResultRow
    new: ResultRow
    verdict: Verdict
    #: the level the verdict was judged at (the new row's recorded confidence)
    confidence: float = 0.95


@dataclass
class CompareReport:
    old: ResultsFile
    new: ResultsFile
    matches: list[Match]
    only_old: list[ResultRow]
    only_new: list[ResultRow]
    notes: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return self.old.simulated or self.new.simulated

    def count(self, status: str) -> int:
        return sum(1 for m in self.matches if m.verdict.status == status)

    @property
    def failed(self) -> bool:
        # INVALID fails too, as in the plugin: a new run with no valid reading (a broken meter,
        # a counter reset) proves nothing, and a gate must not pass on it
        return any(m.verdict.failed or m.verdict.status == INVALID for m in self.matches)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="compare two results files and gate on energy regressions",
        description="Compare the J/output-token of two results JSON files (from `pytest --joules "
        "--joules-json` or `joules sweep`) with the same verdicts as the pytest plugin.",
    )
    p.add_argument("old", metavar="OLD", help="the reference results: a JSON file (e.g. from the main branch) "
                   "or a saved run id (0003, last~1)")
    p.add_argument("new", metavar="NEW", help="the results to judge: a JSON file or a saved run id (last)")
    p.add_argument("--fail", action="store_true", help="exit 1 when any result regressed or has no valid reading")
    p.add_argument(
        "--tolerance", type=tolerance_arg, default=None, metavar="T",
        help="allowed relative change, 0.05 or 5%% (default: each result's recorded tolerance, else 5%%)",
    )
    p.add_argument("--noisy-fails", action="store_true", help="with --fail, also exit 1 when a result is too noisy to judge")
    p.add_argument(
        "--allow-different-devices", action="store_true",
        help="compare even when the two files come from different device fingerprints",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    from ..store import runs

    runs.add_storage_argument(p)  # OLD and NEW may name saved runs: 0003, last, last~1
    return p


def _values(row: ResultRow) -> list[float]:
    if row.round_values:
        return list(row.round_values)
    return [row.j_per_out_token] if row.j_per_out_token is not None else []


def _recorded_confidence(path: Any, row: ResultRow) -> float:
    """The confidence the plugin judged the row at (`confidence`: 99.5% after the looks of
    `--joules-rounds auto`, 95% for a fixed number), so compare gives the plugin's verdict on the
    same runs; a row without one (older files, `joules sweep`) at the documented default, 95%."""
    from ..judge.stats import DEFAULT_CONFIDENCE

    value = row.raw.get("confidence")
    if value is None:
        return DEFAULT_CONFIDENCE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value < 1:
        raise DataError(f"{path}: result {row.name!r}: 'confidence' must be a number in [0.5, 1) (the level the "
                        f"verdict was judged at), got {value!r}")
    return float(value)


def _recorded_tolerance(row: ResultRow) -> float | None:
    verdict = row.raw.get("verdict")
    if isinstance(verdict, dict):
        try:
            return check_tolerance(verdict.get("tolerance"))  # type: ignore[arg-type]  # a fraction the plugin wrote
        except ConfigError:
            return None
    return None


def _fingerprint(f: ResultsFile) -> dict[str, Any]:
    """The file's fingerprint as the baseline store builds it (fingerprint.py): only what moves
    joules per token, never run-to-run state such as temperature."""
    device = f.device
    if not device and f.rows and isinstance(f.rows[0].raw.get("device"), dict):
        device = f.rows[0].raw["device"]
    return fingerprint(f.engine or {}, device or {}, f.simulated)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _first_not_none(*values: float | None) -> float:
    return next(v for v in values if v is not None)  # the last one never is


def _key(row: ResultRow) -> tuple[Any, ...]:
    # the seed only picks which random prompt tokens run; the work, and so the energy, is the same
    w = row.workload
    return (row.name, w.n_in, w.n_out, w.requests, w.max_batch_size)


def compare_files(
    old: ResultsFile,
    new: ResultsFile,
    *,
    tolerance: float | None = None,
    noisy_fails: bool = False,
    allow_different_devices: bool = False,
) -> CompareReport:
    """Match the results of two files and judge each match; raise DataError for other devices."""
    notes = []
    old_fp, new_fp = _fingerprint(old), _fingerprint(new)
    diff = _differences(old_fp["device"], new_fp["device"])
    if diff:
        what = "; ".join(diff)
        if not allow_different_devices:
            raise DataError(
                f"{old.path} and {new.path} come from different devices ({what}): energy on another "
                "device is not a regression; compare results from the same device, or pass "
                "--allow-different-devices to compare anyway"
            )
        notes.append(f"different devices, compared anyway: {what}")
    engine_diff = _differences(old_fp["engine"], new_fp["engine"])
    if engine_diff:
        notes.append("engines differ: " + "; ".join(engine_diff))

    pending: dict[tuple[Any, ...], list[ResultRow]] = {}
    for row in old.rows:
        pending.setdefault(_key(row), []).append(row)
    matches, only_new = [], []
    for row in new.rows:
        queue = pending.get(_key(row))
        if not queue:
            only_new.append(row)
            continue
        base = queue.pop(0)
        tol = _first_not_none(tolerance, _recorded_tolerance(row), _recorded_tolerance(base), DEFAULT_TOLERANCE)
        cur_values, base_values = _values(row), _values(base)
        if not cur_values:
            verdict = Verdict(INVALID, tolerance=tol, detail=f"no valid rounds in {new.path}")
        elif not base_values:
            verdict = Verdict(NEW, tolerance=tol, detail=f"no valid rounds in {old.path} to compare with")
        else:
            verdict = judge(cur_values, base_values, tol, confidence=_recorded_confidence(new.path, row),
                            noisy_fails=noisy_fails)
        matches.append(Match(row.name, row.workload, base, row, verdict, _recorded_confidence(new.path, row)))
    only_old = [r for queue in pending.values() for r in queue]
    if not matches:
        # a gate with nothing to compare must not pass quietly
        raise DataError(
            f"nothing to compare: none of the {len(new.rows)} result(s) of {new.path} matches one of the "
            f"{len(old.rows)} in {old.path} by name and workload (n_in, n_out, requests, max_batch_size)"
        )
    return CompareReport(old, new, matches, only_old, only_new, notes)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def _j(value: float | None) -> str:
    return "-" if value is None else f"{value:.5g}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _to_json(report: CompareReport) -> dict[str, Any]:
    def unmatched(rows: list[ResultRow]) -> list[dict[str, Any]]:
        return [{"name": r.name, "n_in": r.workload.n_in, "n_out": r.workload.n_out, "requests": r.workload.requests} for r in rows]

    return {
        "old": str(report.old.path),
        "new": str(report.new.path),
        "simulated": report.simulated,
        "notes": report.notes,
        "results": [
            {
                "name": m.name, "n_in": m.workload.n_in, "n_out": m.workload.n_out, "requests": m.workload.requests,
                "old": _median(_values(m.old)), "new": _median(_values(m.new)),
                "status": m.verdict.status, "delta": m.verdict.delta, "tolerance": m.verdict.tolerance,
                "ci_low": m.verdict.ci_low, "ci_high": m.verdict.ci_high, "p_value": m.verdict.p_value,
                "method": m.verdict.method, "detail": m.verdict.detail, "failed": m.verdict.failed,
                "confidence": m.confidence,
            }
            for m in report.matches
        ],
        "only_old": unmatched(report.only_old),
        "only_new": unmatched(report.only_new),
        "failed": report.failed,
    }


def _print_table(report: CompareReport) -> None:
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..report.names import break_name

    # a terminal's width, or COLUMNS when piped; without either a log is wide enough for the names
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160
    console = Console(file=sys.stdout, width=width, highlight=False, soft_wrap=True)
    sim = " (SIMULATED)" if report.simulated else ""
    console.print(f"joules compare{sim}: {report.old.path} -> {report.new.path}", markup=False)
    style = {REGRESSION: "bold red", NOISY: "yellow", INVALID: "red", IMPROVED: "green"}
    rows = []
    for m in report.matches:
        v = m.verdict
        ci = f"{v.ci_low:+.1%}..{v.ci_high:+.1%}" if v.ci_low is not None and v.ci_high is not None else "-"
        rows.append((m.name, {"n_in": str(m.workload.n_in), "n_out": str(m.workload.n_out),
                              "old J/tok": _j(_median(_values(m.old))), "new J/tok": _j(_median(_values(m.new))),
                              "delta": _pct(v.delta), "95% CI": ci, "verdict": v.status}))
    levels = {f"{m.confidence:.1%}".replace(".0%", "%") for m in report.matches}
    ci_name = f"{levels.pop()} CI" if len(levels) == 1 else "CI"  # the level the verdicts were judged at
    for _, cells in rows:
        cells[ci_name] = cells.pop("95% CI")
    figures = ["n_in", "n_out", "old J/tok", "new J/tok", "delta", ci_name, "verdict"]

    def room(columns: list[str]) -> int:  # cells left for the names: figures, two spaces between columns
        return console.width - sum(max([cell_len(c), *(cell_len(r[c]) for _, r in rows)]) + 2 for c in columns) - 2

    # each file once, as a row of its own, and the tests below it by name: a node id in full is
    # wider than most terminals leave; the CI goes first when even the names do not fit
    files = [name.partition("::") for name, _ in rows]
    longest = max((len(test or path) + 2 for path, _, test in files), default=4)
    if room(figures) < longest:
        figures.remove(ci_name)
    left = max(room(figures), 12)
    table = Table(title=Text(f"J/output-token{sim}"), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column("test", overflow="fold", max_width=left)
    for col in figures:
        table.add_column(col, justify="left" if col == "verdict" else "right", no_wrap=True)  # type: ignore[arg-type]
    current = None
    for (path, sep, test), (_, cells) in zip(files, rows):
        if sep and path != current:
            table.add_row(Text(break_name(path, left), style="bold"))
            current = path
        shown = break_name(test, left - 2).replace("\n", "\n  ") if sep else break_name(path, left)
        table.add_row(Text(("  " if sep else "") + shown), *(
            Text(cells[c], style=style.get(cells[c], "")) if c == "verdict" else cells[c] for c in figures))
    console.print(table)
    for m in report.matches:
        if m.verdict.status in _EXPLAINED:
            console.print(f"{m.name}: {m.verdict.status}: {m.verdict.detail}", markup=False)
    for label, rows in (("only in OLD", report.only_old), ("only in NEW", report.only_new)):
        if rows:
            console.print(f"{label} ({len(rows)}):", markup=False)
            for r in rows:
                console.print(f"  {r.name} (n_in={r.workload.n_in}, n_out={r.workload.n_out}, requests={r.workload.requests})", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    statuses = sorted({m.verdict.status for m in report.matches})
    tally = ", ".join(f"{report.count(s)} {s}" for s in statuses)
    console.print(f"{len(report.matches)} compared" + (f": {tally}" if tally else ""), markup=False)


def _read(arg: str, args: argparse.Namespace) -> ResultsFile:
    """A results file, or a run saved by --joules-autosave (`0003`, `last`, `last~1`)."""
    from ..store import runs

    storage = runs.storage_from(args) if runs.is_run_spec(arg) and not os.path.exists(arg) else None
    return read_results(runs.results_path(arg, storage))


def run(args: argparse.Namespace) -> int:
    old = _read(args.old, args)
    new = _read(args.new, args)
    report = compare_files(
        old, new, tolerance=args.tolerance, noisy_fails=args.noisy_fails,
        allow_different_devices=args.allow_different_devices,
    )
    args.exit_status = 1 if args.fail and report.failed else 0  # kept if the reader closes the pipe early
    if args.json:
        print(json.dumps(_to_json(report), indent=2))
    else:
        _print_table(report)
    return int(args.exit_status)
