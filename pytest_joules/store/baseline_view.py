"""A baseline file read as a results file, so `joules compare`, `joules report` and the
dashboard take the committed baselines as either side (`joules compare baselines/…json last`).

Each entry becomes one result: its key is the test's name (as a results JSON names it), its
rounds the per-round J/output-token values the gate compares. The file's fingerprint gives the
engine and the device, so two devices are still refused as in any comparison."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .baselines import SCHEMA as BASELINES_SCHEMA
from .baselines import parse_file
from .results import ResultRow, ResultsFile, load_json, read_results
from ..engines.workload import Workload


def is_baseline_document(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == BASELINES_SCHEMA


def results_from_baselines(path: Path, data: Any) -> ResultsFile:
    """The entries of a loaded baseline document as results (DataError naming the entry when bad)."""
    fp, entries = parse_file(path, data)
    device = dict(fp.get("device") or {})
    rows = []
    for key in sorted(entries):
        entry = entries[key]
        workload = Workload(**entry.workload)
        raw: dict[str, Any] = {"name": key, "key": key, "spread": entry.spread, "recorded": entry.recorded,
                               "baseline_file": True}
        rows.append(ResultRow(key, workload, entry.j_per_out_token, list(entry.rounds), True, raw))
    return ResultsFile(path=path, simulated=bool(device.get("simulated")), engine=dict(fp.get("engine") or {}),
                       device=device, rows=rows, models=[])


def read_results_or_baselines(path: str | os.PathLike[str]) -> ResultsFile:
    """A results JSON, or a baseline file read as one."""
    path = Path(path)
    data = load_json(path)
    if is_baseline_document(data):
        return results_from_baselines(path, data)
    return read_results(path)
