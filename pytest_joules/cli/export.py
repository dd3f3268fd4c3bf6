"""`joules export RESULTS... --format gab|bmf|markdown|csv [--out FILE] [--append]`.

Turns a results file into what CI dashboards read (see pytest_joules.report.exporters): gab is
github-action-benchmark's customSmallerIsBetter JSON, bmf is Bencher's metric format, markdown
a summary table, csv one row per test per run (several files or saved runs, or `all`, for a
spreadsheet of the history). RESULTS is a file or a saved run id (`0003`, `last`, `last~1`;
see runs.py). Without --out it prints to stdout. --append adds the Markdown to FILE instead
of replacing it (e.g. `--out "$GITHUB_STEP_SUMMARY" --append`). --grid-intensity and --price
add carbon and cost per 1,000 output tokens (else the inputs the run was written with, if any).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..report import exporters
from ..store import runs
from ..errors import ConfigError, DataError
from ..report.footprint import Footprint, parse_amount
from ..store.results import atomic_write_json, read_results

FORMATS = ("gab", "bmf", "markdown", "csv")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a results file for github-action-benchmark, Bencher or a Markdown summary",
        description="Export the results of `pytest --joules --joules-json` or `joules sweep` to a dashboard format.",
    )
    p.add_argument("results", metavar="RESULTS", nargs="+",
                   help="results JSON file(s) or saved run id(s): 0003, last, last~1; `all` (csv): every saved run")
    p.add_argument(
        "--format", required=True, choices=FORMATS,
        help="gab: github-action-benchmark customSmallerIsBetter; bmf: Bencher Metric Format; markdown: a table; "
             "csv: one row per test per run",
    )
    p.add_argument("--grid-intensity", type=_amount("--grid-intensity"), metavar="G", default=None,
                   help="grid carbon intensity in gCO2e/kWh (a value you state): adds gCO2e per 1,000 output tokens")
    p.add_argument("--price", type=_amount("--price"), metavar="P", default=None,
                   help="electricity price per kWh: adds the cost per 1,000 output tokens")
    runs.add_storage_argument(p)
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it (markdown only)")
    return p


def _amount(flag: str) -> Any:
    def parse(text: str) -> float:
        try:
            return parse_amount(flag, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    return parse


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(label, path) of each RESULTS argument: a saved run is labelled by its id, a file by its path."""
    storage = runs.storage_from(args) if any(runs.is_run_spec(a) or a == "all" for a in args.results) else None
    if args.results == ["all"] and not Path("all").exists():
        if storage is None:
            raise DataError("all: no .joules/ folder from here up to the repository root; save runs with "
                            "`pytest --joules --joules-autosave`, or point --storage at the folder")
        return [(r.id, r.path) for r in runs.list_runs(storage)]
    out = []
    for arg in args.results:
        path = runs.results_path(arg, storage)
        label = path.name.split("_", 1)[0] if path != Path(arg) else arg
        out.append((label, path))
    return out


def run(args: argparse.Namespace) -> int:
    if args.append and (args.format != "markdown" or not args.out):
        raise ConfigError("--append needs --format markdown and --out FILE (appending JSON would make it invalid)")
    inputs = _inputs(args)
    if len(inputs) != 1 and args.format != "csv":
        raise ConfigError(f"--format {args.format} takes one results file, got {len(inputs)}; "
                          "export several runs with --format csv")
    footprint = Footprint(args.grid_intensity, args.price) if args.grid_intensity is not None or args.price is not None else None
    if args.format == "csv":
        files = [(label, read_results(path)) for label, path in inputs]
        return _write(args, exporters.csv_text(files, footprint))
    label, path = inputs[0]
    results = read_results(path)
    skipped = exporters.unexported(results)
    if args.format == "markdown":
        title = f"pytest-joules energy: {path.name if label == args.results[0] else 'run ' + label}"
        payload: Any = exporters.markdown_summary(results, title, footprint)
    else:
        build = exporters.gab_json if args.format == "gab" else exporters.bmf_json
        payload = build(results, footprint)
        if skipped:
            print(f"joules export: left out {len(skipped)} result(s) with no valid measurement: {', '.join(skipped)}", file=sys.stderr)
    return _write(args, payload)


def _write(args: argparse.Namespace, payload: Any) -> int:
    if not args.out:
        sys.stdout.write(payload if isinstance(payload, str) else json.dumps(payload, indent=2) + "\n")
        return 0
    try:
        if isinstance(payload, str):
            with open(args.out, "a" if args.append else "w", encoding="utf-8") as fh:
                fh.write(("\n" if args.append else "") + payload)
        else:
            atomic_write_json(args.out, payload)
    except OSError as exc:
        raise DataError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    return 0
