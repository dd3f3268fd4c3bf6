"""`joules export RESULTS.json --format gab|bmf|markdown [--out FILE] [--append]`.

Turns a results file into what CI dashboards read (see pytest_joules.exporters): gab is
github-action-benchmark's customSmallerIsBetter JSON, bmf is Bencher's metric format, markdown
a summary table. Without --out it prints to stdout. --append adds the Markdown to FILE instead
of replacing it (e.g. `--out "$GITHUB_STEP_SUMMARY" --append`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import exporters
from ..errors import ConfigError, DataError
from ..results import atomic_write_json, read_results

FORMATS = ("gab", "bmf", "markdown")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a results file for github-action-benchmark, Bencher or a Markdown summary",
        description="Export the results of `pytest --joules --joules-json` or `joules sweep` to a dashboard format.",
    )
    p.add_argument("results", metavar="RESULTS.json")
    p.add_argument(
        "--format", required=True, choices=FORMATS,
        help="gab: github-action-benchmark customSmallerIsBetter; bmf: Bencher Metric Format; markdown: a table",
    )
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it (markdown only)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.append and (args.format != "markdown" or not args.out):
        raise ConfigError("--append needs --format markdown and --out FILE (appending JSON would make it invalid)")
    results = read_results(args.results)
    skipped = exporters.unexported(results)
    if args.format == "markdown":
        title = f"pytest-joules energy: {Path(args.results).name}"
        payload: Any = exporters.markdown_summary(results, title)
    else:
        payload = exporters.gab_json(results) if args.format == "gab" else exporters.bmf_json(results)
        if skipped:
            print(f"joules export: left out {len(skipped)} result(s) with no valid measurement: {', '.join(skipped)}", file=sys.stderr)
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
