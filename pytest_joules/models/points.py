"""Reading measurement points (n_in, n_out, J per output token) for fitting.

Two inputs are accepted:

- CSV with a header naming `n_in`, `n_out` and either `j_per_out_token`, or `energy_j` (total
  joules of the point) with an optional `requests` column (default 1), so that
  J/out-token = energy_j / (requests · n_out). Other columns are ignored; blank lines and lines
  starting with `#` are skipped. When both `j_per_out_token` and `energy_j` are present the
  former is used.
- The results JSON this project writes (`joules sweep`, `pytest --joules --joules-json`). Rows
  without a J/out-token (invalid or dry-run measurements) are skipped and counted.

Every bad input raises DataError with one line naming the file, the row and the problem.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analytical import Point
from ..errors import DataError

REQUIRED = ("n_in", "n_out")
ENERGY_COLUMNS = ("j_per_out_token", "energy_j")

#: what the fit can represent: n²/m and its ratio to J/out-token stay far inside double precision
#: (a length of 10**400 or a J/token of 1e-320 is no measurement, and overflows the fit)
MAX_TOKENS = 10**9
J_RANGE = (1e-15, 1e15)


def check_point(where: str, n_in: int, n_out: int, j: float) -> Point:
    """The point, or DataError naming `where` when a value is beyond what the fit can represent."""
    for name, value in (("n_in", n_in), ("n_out", n_out)):
        if value > MAX_TOKENS:
            raise DataError(f"{where}: {name} ({len(str(value))} digits) is more than {MAX_TOKENS:.0e} tokens; not a workload")
    if not J_RANGE[0] <= j <= J_RANGE[1]:
        raise DataError(f"{where}: j_per_out_token {j!r} is outside {J_RANGE[0]:g}..{J_RANGE[1]:g} J: no measurement "
                        "is, and the fit cannot represent it; check the units")
    return Point(n_in, n_out, j)


@dataclass
class PointsFile:
    """Points read from one file, with what a reader should know about them."""

    path: Path
    points: list[Point]
    simulated: bool = False
    skipped: int = 0  # results rows without a valid J/out-token
    notes: list[str] = field(default_factory=list)
    #: requests / max_batch_size the points ran at: a value, "mixed", or the key absent (unknown)
    batching: dict[str, Any] = field(default_factory=dict)
    #: "Llama-3.1-8B on H100-SXM" for a results file (figure titles); "" for a CSV
    source: str = ""
    #: the device and engine the points were measured on (models/identity.py); None for a CSV
    fingerprint: dict[str, Any] | None = None


def batching_of(settings: dict[str, set[Any]]) -> dict[str, Any]:
    """{"requests": {16}, "max_batch_size": {None, 8}} -> {"requests": 16, "max_batch_size": "mixed"}."""
    return {key: (next(iter(values)) if len(values) == 1 else "mixed") for key, values in settings.items() if values}


def read_points(path: str | os.PathLike[str]) -> PointsFile:
    """Read a measurements CSV or a results JSON, deciding by the file's first character."""
    path = Path(path)
    text = _read_text(path)
    if text.lstrip().startswith(("{", "[")):
        return _from_results(path)
    return _from_csv(path, text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV or results JSON file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; expected a CSV or results JSON file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


# -- CSV -----------------------------------------------------------------------------------------
def _from_csv(path: Path, text: str) -> PointsFile:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    points: list[Point] = []
    settings: dict[str, set[Any]] = {}
    for row in reader:
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        line = reader.line_num
        if header is None:
            header = [cell.strip().lower() for cell in row]
            columns = _columns(path, line, header)
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
        points.append(_csv_point(path, line, row, columns))
        for key in ("requests", "max_batch_size"):
            if key in columns:  # optional columns: without them the batching is unknown
                cell = row[columns[key]].strip()
                settings.setdefault(key, set()).add(_positive_int(cell, key, f"{path}: line {line}") if cell else None)
    if header is None:
        raise DataError(f"{path}: empty file; expected a CSV header 'n_in,n_out,j_per_out_token' and rows")
    if not points:
        raise DataError(f"{path}: header but no data rows")
    batching = batching_of(settings)
    mixed = [k for k, v in batching.items() if v == "mixed"]
    notes = [f"rows mix {' and '.join(mixed)} values; batching changes J/out-token, fit one setting at a time"] if mixed else []
    return PointsFile(path=path, points=points, notes=notes, batching=batching)


def _columns(path: Path, line: int, header: list[str]) -> dict[str, int]:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: line {line}: missing column(s) {', '.join(missing)}; the header must name "
            f"n_in, n_out and j_per_out_token or energy_j (found: {', '.join(header)})"
        )
    if not any(c in header for c in ENERGY_COLUMNS):
        raise DataError(
            f"{path}: line {line}: no energy column; add j_per_out_token, or energy_j "
            f"(total joules, with an optional requests column) (found: {', '.join(header)})"
        )
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: line {line}: column(s) named twice: {', '.join(dupes)}")
    return {c: header.index(c) for c in (*REQUIRED, *ENERGY_COLUMNS, "requests", "max_batch_size") if c in header}


def _csv_point(path: Path, line: int, row: list[str], columns: dict[str, int]) -> Point:
    where = f"{path}: line {line}"
    n_in = _positive_int(row[columns["n_in"]], "n_in", where)
    n_out = _positive_int(row[columns["n_out"]], "n_out", where)
    if "j_per_out_token" in columns:
        j = _positive_float(row[columns["j_per_out_token"]], "j_per_out_token", where)
    else:
        energy = _positive_float(row[columns["energy_j"]], "energy_j", where)
        requests = _positive_int(row[columns["requests"]], "requests", where) if "requests" in columns else 1
        j = energy / (requests * n_out)
    return check_point(where, n_in, n_out, j)


def _number(cell: str, name: str, where: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(f"{where}: {name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {name} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {name} must be finite, got {text!r}")
    return value


def _positive_int(cell: str, name: str, where: str) -> int:
    value = _number(cell, name, where)
    if not value.is_integer():
        raise DataError(f"{where}: {name} must be a whole number of tokens, got {cell.strip()!r}")
    if value <= 0:
        raise DataError(f"{where}: {name} must be positive, got {cell.strip()!r}")
    return int(value)


def _positive_float(cell: str, name: str, where: str) -> float:
    value = _number(cell, name, where)
    if value <= 0:
        raise DataError(f"{where}: {name} must be positive, got {cell.strip()!r}")
    return value


# -- results JSON --------------------------------------------------------------------------------
def _from_results(path: Path) -> PointsFile:
    from ..store.results import read_results

    results = read_results(path)
    points = []
    skipped = 0
    settings = set()
    traffic = 0
    for i, row in enumerate(results.rows):
        if row.j_per_out_token is None:
            skipped += 1
            continue
        if row.raw.get("traffic"):  # a mix or arrivals: no point of the per-point model (its n_in/n_out are means)
            traffic += 1
            continue
        w = row.workload
        points.append(check_point(f"{path}: results[{i}]", w.n_in, w.n_out, row.j_per_out_token))
        settings.add((w.requests, w.max_batch_size))
    notes = []
    if skipped:
        notes.append(f"skipped {skipped} result(s) without a valid J/out-token (invalid or dry run)")
    if traffic:
        notes.append(f"skipped {traffic} result(s) of a length mix or arrivals: the models are fitted to points")
    if len(settings) > 1:
        shown = ", ".join(f"requests={r} max_batch_size={b}" for r, b in sorted(settings, key=str))
        notes.append(f"results mix batch settings ({shown}); batching changes J/out-token, fit one setting at a time")
    if not points and traffic:
        raise DataError(f"{path}: its {traffic} valid result(s) are length mixes or arrivals, not points of the "
                        "per-point model; measure points to fit (joules sweep, or tests of one n_in and n_out)")
    if not points:
        raise DataError(
            f"{path}: none of its {len(results.rows)} result(s) has a valid J/out-token; nothing to fit"
        )
    batching = batching_of({"requests": {r for r, _ in settings}, "max_batch_size": {b for _, b in settings}})
    model = results.engine.get("model") or results.engine.get("kind") or ""
    gpu = results.device.get("gpu") or results.device.get("name") or ""
    source = " on ".join(str(part) for part in (model, gpu) if part)
    from .identity import of_results

    return PointsFile(path=path, points=points, simulated=results.simulated, skipped=skipped, notes=notes,
                      batching=batching, source=source,
                      fingerprint=of_results(results.engine, results.device, results.simulated))
