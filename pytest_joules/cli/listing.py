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


def run(args: argparse.Namespace) -> int:
    from ..store.runs import read_runs, summarize

    storage = runs.require_storage(args)
    files, notes = read_runs(runs.list_runs(storage))
    print(f"saved runs in {storage}:" if files else f"no saved runs in {storage}")
    if files:
        print(f"{'run':<6} {'created (UTC)':<20} {'commit':<14} {'host':<16} {'device':<22} tests  verdicts")
    for run, results in files:
        s = summarize(run, results)
        device = s.device + (" SIMULATED" if s.simulated else "")
        verdicts = ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items())) or "-"
        created = (s.created or "-").replace("+00:00", "")
        print(f"{s.run.id:<6} {created:<20} {_commit(s.commit, s.dirty):<14} {(s.host or '-')[:16]:<16} "
              f"{device[:22]:<22} {s.tests:>5}  {verdicts}")
    for note in notes:
        print(f"joules list: note: {note}", file=sys.stderr)
    return 0
