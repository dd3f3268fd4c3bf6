"""The results JSON that `joules sweep` and `pytest --joules --joules-json` write, and that
`joules fit` and `joules compare` read.

    {"schema": "pytest-joules/results/1", "version": "0.1.0", "created": "<UTC ISO>",
     "simulated": true, "engine": {...}, "device": {...}, "meter": "sim",
     "results": [{"name": ..., "n_in": ..., "n_out": ..., "requests": ..., "max_batch_size": ...,
                  "seed": ..., "j_per_out_token": ..., "tokens_per_joule": ..., "joules": ...,
                  "seconds": ..., "avg_watts": ..., "spread": ..., "valid": true, "problems": [],
                  "rounds": [{"joules": ..., "seconds": ..., "reps": ..., "output_tokens": ...,
                              "input_tokens": ..., "valid": true, "problems": [], "phases": {}}],
                  "baseline": null | float, "baseline_rounds": null | [...],
                  "prediction": null | float, "model": null | str, "model_error": null | float,
                  "verdict": null | {"status": ..., "delta": ..., "tolerance": ..., "detail": ...}}],
     "models": [...]}   # optional: fitted models, as `FittedModel.to_dict()`
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .errors import DataError
from .measurement import Measurement, Round
from .verdict import Verdict
from .workload import Workload

SCHEMA = "pytest-joules/results/1"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def round_to_dict(r: Round) -> dict[str, Any]:
    return {
        "joules": _clean(r.joules),
        "seconds": _clean(r.seconds),
        "reps": r.reps,
        "output_tokens": r.output_tokens,
        "input_tokens": r.input_tokens,
        "valid": r.valid,
        "problems": list(r.problems),
        "phases": {k: _clean(v) for k, v in r.phases.items()},
        "info": r.info,
    }


def verdict_to_dict(v: Verdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {
        "status": v.status,
        "current": _clean(v.current),
        "baseline": _clean(v.baseline),
        "delta": _clean(v.delta),
        "tolerance": v.tolerance,
        "detail": v.detail,
        "ci_low": _clean(v.ci_low),
        "ci_high": _clean(v.ci_high),
        "p_value": _clean(v.p_value),
        "resolution": _clean(v.resolution),
        "method": v.method,
    }


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    w = m.workload
    return {
        "name": m.name or w.label(),
        "n_in": w.n_in,
        "n_out": w.n_out,
        "requests": w.requests,
        "max_batch_size": w.max_batch_size,
        "seed": w.seed,
        "j_per_out_token": _clean(m.j_per_out_token),
        "tokens_per_joule": _clean(m.tokens_per_joule),
        "joules": _clean(m.joules),
        "seconds": _clean(m.seconds),
        "avg_watts": _clean(m.avg_watts),
        "spread": _clean(m.spread),
        "gpu_util": _clean(m.gpu_util),
        "host_bound": m.host_bound,
        "rounds_stopped": m.stopped or None,
        "confidence": m.confidence,
        "valid": m.valid,
        "problems": m.problems,
        "rounds": [round_to_dict(r) for r in m.rounds],
        "baseline": _clean(m.baseline),
        "baseline_rounds": m.baseline_rounds,
        "prediction": _clean(m.prediction),
        "model": m.model_name,
        "model_error": _clean(m.model_error),
        "verdict": verdict_to_dict(m.verdict),
        "engine": m.engine,
        "device": m.device,
        "meter": m.meter,
        "simulated": m.simulated,
    }


def results_document(measurements: Iterable[Measurement], models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = list(measurements)
    first = items[0] if items else None
    return {
        "schema": SCHEMA,
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "simulated": any(m.simulated for m in items),
        "engine": first.engine if first else {},
        "device": first.device if first else {},
        "meter": first.meter if first else None,
        "results": [measurement_to_dict(m) for m in items],
        "models": models or [],
    }


def _file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets what open() would give it
    (mkstemp's private 0600 would hide committed baselines from the rest of a team)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_results(path: str | os.PathLike[str], measurements: Iterable[Measurement], models: list[dict[str, Any]] | None = None) -> None:
    atomic_write_json(path, results_document(measurements, models))


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, turning every way it can be bad into a DataError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


@dataclass
class ResultRow:
    """One result read back from a results JSON (what `fit` and `compare` need)."""

    name: str
    workload: Workload
    j_per_out_token: float | None
    round_values: list[float]
    valid: bool
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResultsFile:
    path: Path
    simulated: bool
    engine: dict[str, Any]
    device: dict[str, Any]
    rows: list[ResultRow]
    models: list[dict[str, Any]]


def row_from_dict(path: Path, index: int, item: Any) -> ResultRow:
    """One result of a results document (DataError naming `path` and the index when bad)."""
    where = f"{path}: results[{index}]"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object")
    try:
        workload = Workload(
            n_in=item["n_in"],
            n_out=item["n_out"],
            requests=item.get("requests", 1),
            max_batch_size=item.get("max_batch_size"),
            seed=item.get("seed", 0),
        )
    except KeyError as exc:
        raise DataError(f"{where}: missing field {exc.args[0]!r}") from None
    except Exception as exc:  # ConfigError from Workload validation
        raise DataError(f"{where}: {exc}") from None
    value = item.get("j_per_out_token")
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0):
        raise DataError(f"{where}: j_per_out_token must be a positive number, got {value!r}")
    raw_rounds = item.get("rounds") or []
    if not isinstance(raw_rounds, list):
        raise DataError(f"{where}: 'rounds' must be a list, got {type(raw_rounds).__name__}")
    rounds = []
    for j, r in enumerate(raw_rounds):
        if not isinstance(r, dict):
            raise DataError(f"{where}: rounds[{j}]: expected an object, got {r!r}")
        for name in ("joules", "output_tokens"):  # an invalid round may hold a negative delta (counter reset)
            v = r.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)):
                raise DataError(f"{where}: rounds[{j}]: {name} must be a number or null, got {v!r}")
        if r.get("valid", True) and r.get("joules") and r.get("output_tokens"):
            rounds.append(float(r["joules"]) / float(r["output_tokens"]))
    return ResultRow(
        name=str(item.get("name") or workload.label()),
        workload=workload,
        j_per_out_token=None if value is None else float(value),
        round_values=rounds,
        valid=bool(item.get("valid", value is not None)),
        raw=item,
    )


def read_results(path: str | os.PathLike[str]) -> ResultsFile:
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a pytest-joules results file (schema {found!r}, expected {SCHEMA!r})")
    items = data.get("results")
    if not isinstance(items, list):
        raise DataError(f"{path}: 'results' must be a list")
    for key in ("engine", "device"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise DataError(f"{path}: {key!r} must be an object, got {type(data[key]).__name__}")
    return ResultsFile(
        path=path,
        simulated=bool(data.get("simulated")),
        engine=data.get("engine") or {},
        device=data.get("device") or {},
        rows=[row_from_dict(path, i, item) for i, item in enumerate(items)],
        models=data.get("models") or [],
    )
