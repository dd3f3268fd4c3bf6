"""`joules compare OLD.json NEW.json`: the pytest verdicts outside pytest, for CI gates.

Results are matched by name and workload (n_in, n_out, requests, max_batch_size, and a length
mix's, arrival schedule's and prompt file's content; not the prompt seed, which changes the tokens
but not the work); a name that appears several times in a file is
matched occurrence by occurrence. Files with no result in common are an error, not a pass. Each match is judged
by `verdict.judge` on the per-round values, with `--tolerance` or else the tolerance the result
was recorded with, or 5%. Two files whose device fingerprints differ (GPU, power limit, driver,
CUDA, GPU count, simulated; see fingerprint.py) are refused unless --allow-different-devices:
energy per token on another device is not a regression. Engine differences (a new engine
version is what users A/B) are compared and noted.

Latency travels beside the energy: the table shows how each match's median TTFT and TPOT moved
(latency.py), and `--latency-tolerance T` makes a slowdown beyond T a failure of its own.

Exit status: 1 with `--fail` when any result regressed, or has no valid rounds in NEW (or was
noisy, with `--noisy-fails`, or slower beyond `--latency-tolerance`); 0 otherwise; 2 on bad input
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from ..measure import latency as L
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
    #: why the latency regressed beyond --latency-tolerance (None: it did not, or no gate)
    latency_problem: str | None = None

    @property
    def latency_change(self) -> dict[str, float]:
        """Relative change of TTFT, TPOT and tok/s, positive = slower (latency.changes)."""
        return L.changes(L.from_record(self.new.raw), L.from_record(self.old.raw))


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
        return any(m.verdict.failed or m.verdict.status == INVALID or m.latency_problem for m in self.matches)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="compare two results files and gate on energy regressions",
        description="Compare the J/output-token of two results JSON files (from `pytest --joules "
        "--joules-json` or `joules sweep`) with the same verdicts as the pytest plugin.",
    )
    p.add_argument("old", metavar="OLD", help="the reference results: a results JSON (e.g. from the main branch), "
                   "a baseline file (baselines/<device>/<engine>-<model>.json) or a saved run id (0003, last~1)")
    p.add_argument("new", metavar="NEW", help="the results to judge: a results JSON, a baseline file or a saved run id (last)")
    p.add_argument("--fail", action="store_true", help="exit 1 when any result regressed or has no valid reading")
    p.add_argument(
        "--tolerance", type=tolerance_arg, default=None, metavar="T",
        help="allowed relative change, 0.05 or 5%% (default: each result's recorded tolerance, else 5%%)",
    )
    p.add_argument("--noisy-fails", action="store_true", help="with --fail, also exit 1 when a result is too noisy to judge")
    p.add_argument("--latency-tolerance", type=tolerance_arg, default=None, metavar="T",
                   help="with --fail, also exit 1 when a median TTFT or TPOT grew by more than T (0.1 or 10%%), "
                   "or output tokens/s fell by as much")
    p.add_argument(
        "--allow-different-devices", action="store_true",
        help="compare even when the two files come from different device fingerprints",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each verdict's statistics")
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
    found = row.raw.get("traffic")
    traffic: dict[str, Any] = found if isinstance(found, dict) else {}
    # a mix, its arrivals and its prompt file are the work too (docs/mixes.md): by content hash
    same = tuple(str(traffic.get(k, "")).rsplit("#", 1)[-1] for k in ("mix", "arrival", "prompts"))
    return (row.name, w.n_in, w.n_out, w.requests, w.max_batch_size, *same)


def compare_files(
    old: ResultsFile,
    new: ResultsFile,
    *,
    tolerance: float | None = None,
    noisy_fails: bool = False,
    allow_different_devices: bool = False,
    latency_tolerance: float | None = None,
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
        match = Match(row.name, row.workload, base, row, verdict, _recorded_confidence(new.path, row))
        if latency_tolerance is not None:
            match.latency_problem = L.regression(L.from_record(row.raw), L.from_record(base.raw), latency_tolerance)
        matches.append(match)
    only_old = [r for queue in pending.values() for r in queue]
    if not matches:
        # a gate with nothing to compare must not pass quietly
        raise DataError(
            f"nothing to compare: none of the {len(new.rows)} result(s) of {new.path} matches one of the "
            f"{len(old.rows)} in {old.path} by name and workload (n_in, n_out, requests, max_batch_size, mix, "
            "arrivals, prompt file)"
        )
    return CompareReport(old, new, matches, only_old, only_new, notes)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


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
                "old_latency": L.from_record(m.old.raw), "new_latency": L.from_record(m.new.raw),
                "latency_change": m.latency_change or None, "latency_regression": m.latency_problem,
                "confidence": m.confidence,
            }
            for m in report.matches
        ],
        "only_old": unmatched(report.only_old),
        "only_new": unmatched(report.only_new),
        "failed": report.failed,
    }


#: the compact headers of narrow terminals and CI logs (the title says J/output-token)
_SHORT = {"old J/tok": "old", "new J/tok": "new", "TTFT Δ": "TTFT", "TPOT Δ": "TPOT"}


def _grid_free(name: str, n_in: int, n_out: int) -> str:
    """The name without its grid id: n_in and n_out have their own columns."""
    grid = f"n_in={n_in}-n_out={n_out}"
    return name.replace(f"[{grid}]", "").replace(f"[{grid}-", "[").replace(f"-{grid}]", "]").replace(f"-{grid}-", "-")


def _layout(width: int, names: list[str], cells: list[dict[str, str]], figures: list[str]) -> tuple[list[str], int, bool, int]:
    """(columns, room for names, short headers, gap): the widest form in which every name fits on
    one line, then wrapped once at its joints; the range column goes only when even that fails."""
    from rich.cells import cell_len

    from ..report.names import break_name

    def room(columns: list[str], short: bool, gap: int) -> int:
        def head(c: str) -> str:
            return _SHORT.get(c, c) if short else c

        used = sum(max([cell_len(head(c)), *(cell_len(r[c]) for r in cells)]) + gap for c in columns)
        return width - used - (2 if gap == 2 else 0)

    def lines(left: int) -> int:
        return max((len(break_name(n, left).splitlines()) for n in names), default=1)

    # given up in this order when even the most compact form leaves the names no room
    latency = [c for c in figures if c != "TTFT Δ"]
    for columns in (figures, latency, [c for c in latency if c != "range"]):
        for short, gap, most in ((False, 2, 1), (True, 2, 1), (True, 1, 1), (True, 1, 2)):
            left = room(columns, short, gap)
            if lines(left) <= most:
                return columns, left, short, gap
    return columns, max(left, 12), True, 1


def _print_table(report: CompareReport, verbose: bool = False) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..numbers import sig
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
        delta = "-" if v.delta is None else f"{v.delta:+.1%}"
        change = m.latency_change
        rows.append((m.name, {"n_in": str(m.workload.n_in), "n_out": str(m.workload.n_out),
                              "old J/tok": sig(_median(_values(m.old)), none="-"),
                              "new J/tok": sig(_median(_values(m.new)), none="-"),
                              "delta": delta, "range": ci, "verdict": v.status,
                              "TTFT Δ": _pct(change.get("ttft_s")), "TPOT Δ": _pct(change.get("tpot_s"))}))
    figures = ["n_in", "n_out", "old J/tok", "new J/tok", "delta", "range", "TTFT Δ", "TPOT Δ", "verdict"]
    if not any(m.latency_change for m in report.matches):  # files from engines that report no latency
        figures = [f for f in figures if not f.endswith(" Δ")]
    # each file once, as a row of its own, and the tests below it by name (indented two cells): a
    # node id in full is wider than most terminals leave
    files = [name.partition("::") for name, _ in rows]
    tests = [_grid_free(test, int(c["n_in"]), int(c["n_out"])) for (_, _, test), (_, c) in zip(files, rows)]
    names = [f"  {t}" if sep else path for (path, sep, _), t in zip(files, tests)]
    names += sorted({path for path, sep, _ in files if sep})
    figures, left, short, gap = _layout(console.width, names, [c for _, c in rows], figures)
    table = Table(title=Text(f"J/output-token{sim}"), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True, padding=(0, 1 if gap == 2 else 0), show_edge=gap == 2)
    table.add_column("test", overflow="fold", max_width=left)
    for col in figures:
        table.add_column(_SHORT.get(col, col) if short else col, justify="left" if col == "verdict" else "right",
                         no_wrap=True)
    current = None
    for (path, sep, _), test, (_, cells) in zip(files, tests, rows):
        if sep and path != current:
            table.add_row(Text(break_name(path, left), style="bold"))
            current = path
        shown = break_name(test, left - 2).replace("\n", "\n  ") if sep else break_name(path, left)
        table.add_row(Text(("  " if sep else "") + shown), *(
            Text(cells[c], style=style.get(cells[c], "")) if c == "verdict" else cells[c] for c in figures))
    with console.capture() as captured:
        console.print(table)
    # no padding at the ends of lines: a log is read, diffed and grepped
    sys.stdout.write("\n".join(line.rstrip() for line in captured.get().split("\n")))
    if "range" in figures and any(m.verdict.ci_low is not None for m in report.matches):
        # the level the verdicts were judged at, as judge() states it in each verdict's detail
        import re

        levels = sorted({found.group(1) for m in report.matches
                         if (found := re.search(r"([\d.]+%) CI of the change", m.verdict.detail))})
        console.print(f"range: the change these rounds allow, with {' or '.join(levels) or '95%'} confidence",
                      markup=False, style="dim")
    for m in report.matches:
        # a regression's or an improvement's row says it all; why a result could not be judged does not
        if m.verdict.status in (_EXPLAINED if verbose else _EXPLAINED - {REGRESSION, IMPROVED}):
            v = m.verdict
            why = v.plain() or v.detail
            shift = f" {v.delta:+.1%}" if v.delta is not None else ""
            console.print(f"{m.name}: {v.status}{shift}: {why}", markup=False)
            if verbose and v.detail and why != v.detail:
                console.print(f"  statistics: {v.detail}", markup=False)
        if m.latency_problem:
            console.print(f"{m.name}: {m.latency_problem}", markup=False)
    for label, unmatched in (("only in OLD", report.only_old), ("only in NEW", report.only_new)):
        if unmatched:
            console.print(f"{label} ({len(unmatched)}):", markup=False)
            for r in unmatched:
                workload = f"(n_in={r.workload.n_in}, n_out={r.workload.n_out}, requests={r.workload.requests})"
                line = f"  {r.name} {workload}"  # the workload on a line of its own where both do not fit
                console.print(line if len(line) <= console.width else f"  {r.name}\n    {workload}", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    statuses = sorted({m.verdict.status for m in report.matches})
    tally = ", ".join(f"{report.count(s)} {s}" for s in statuses)
    console.print(f"{len(report.matches)} compared" + (f": {tally}" if tally else ""), markup=False)


def _read(arg: str, args: argparse.Namespace) -> ResultsFile:
    """A results file, a baseline file, or a run saved by --joules-autosave (`0003`, `last`, `last~1`)."""
    from ..store import runs
    from ..store.baseline_view import read_results_or_baselines

    storage = runs.storage_from(args) if runs.is_run_spec(arg) and not os.path.exists(arg) else None
    return read_results_or_baselines(runs.results_path(arg, storage))


def run(args: argparse.Namespace) -> int:
    old = _read(args.old, args)
    new = _read(args.new, args)
    report = compare_files(
        old, new, tolerance=args.tolerance, noisy_fails=args.noisy_fails,
        allow_different_devices=args.allow_different_devices, latency_tolerance=args.latency_tolerance,
    )
    args.exit_status = 1 if args.fail and report.failed else 0  # kept if the reader closes the pipe early
    if args.json:
        print(json.dumps(_to_json(report), indent=2))
    else:
        _print_table(report, verbose=args.verbose)
    return int(args.exit_status)
