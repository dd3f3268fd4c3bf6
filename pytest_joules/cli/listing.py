"""`joules list`: the runs `pytest --joules --joules-autosave` saved, one line each."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..store import runs


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "list", help="list the saved runs (pytest --joules --joules-autosave)",
        description="List the runs saved by `pytest --joules --joules-autosave`: id, time, commit, host, "
                    "device, tests and verdicts. Give an id to `joules compare` or `joules export`.",
    )
    runs.add_storage_argument(p)
    return p


def _commit(commit: str | None, dirty: bool | None) -> str:
    return "-" if not commit else commit[:7] + ("+dirty" if dirty else "")


def _created(created: str | None) -> str:
    """"2026-12-04 21:38": the minute is enough to tell runs apart in a list, and fits 80 columns."""
    return (created or "-").replace("+00:00", "").replace("T", " ")[:16]


def run(args: argparse.Namespace) -> int:
    from ..store.runs import read_runs, summarize

    storage = runs.require_storage(args)
    files, notes = read_runs(runs.list_runs(storage))
    print(f"saved runs in {storage}:" if files else f"no saved runs in {storage}")
    summaries = [summarize(run, results) for run, results in files]
    devices = {s.device + (" SIMULATED" if s.simulated else "") for s in summaries}
    hosts = {s.host or "-" for s in summaries}
    # a host or device shared by every run is said once, above the table: the rows keep to 80 columns
    shared = [f"{what} {next(iter(values))}" for what, values in (("host", hosts), ("device", devices)) if len(values) == 1]
    if summaries and shared:
        print("all on " + ", ".join(shared))
    columns = ["run", "created (UTC)", "commit"] + (["host"] if len(hosts) > 1 else []) + \
        (["device"] if len(devices) > 1 else []) + ["tests", "verdicts"]
    rows = []
    for s in summaries:
        cells = {"run": s.run.id, "created (UTC)": _created(s.created), "commit": _commit(s.commit, s.dirty),
                 "host": s.host or "-", "device": s.device + (" SIMULATED" if s.simulated else ""),
                 "tests": str(s.tests),
                 "verdicts": ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items())) or "-"}
        rows.append([cells[c] for c in columns])
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        for line in [columns, *rows]:
            print("  ".join(cell.rjust(w) if c == "tests" else cell.ljust(w)
                            for c, cell, w in zip(columns, line, widths)).rstrip())
    for note in notes:
        print(f"joules list: note: {note}", file=sys.stderr)
    return 0
