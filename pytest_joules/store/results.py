"""The results JSON that `joules sweep` and `pytest --joules --joules-json` write, and that
`joules fit` and `joules compare` read.

    {"schema": "pytest-joules/results/1", "version": "0.1.0", "created": "<UTC ISO>",
     "simulated": true, "engine": {...}, "device": {...}, "meter": "sim",
     "machine": {"host", "cpu", "python", "packages", "git": {"commit", "branch", "dirty"} | null, ...},
     "footprint": {...},   # only with a grid intensity or price (footprint.py)
     "results": [{"name": ..., "n_in": ..., "n_out": ..., "requests": ..., "max_batch_size": ...,
                  "seed": ..., "j_per_out_token": ..., "tokens_per_joule": ..., "joules": ...,
                  "seconds": ..., "avg_watts": ..., "spread": ..., "valid": true, "problems": [],
                  "latency": null | {"ttft_s", "tpot_s", "tpot_p90_s", "out_tok_per_s"},  # latency.py
                  "rounds": [{"joules": ..., "seconds": ..., "reps": ..., "output_tokens": ...,
                              "input_tokens": ..., "valid": true, "problems": [], "phases": {},
                              "latency": null | {...}}],
                  "baseline": null | float, "baseline_rounds": null | [...],
                  "prediction": null | float, "model": null | str, "model_error": null | float,
                  "verdict": null | {"status": ..., "delta": ..., "tolerance": ..., "detail": ...}}],
     "models": [...]}   # optional: fitted models, as `FittedModel.to_dict()`
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import numbers
import os
import stat
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..errors import DataError
from ..measure.measurement import Measurement
from .record import ResultRecord
from ..engines.workload import Workload

SCHEMA = "pytest-joules/results/1"


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    """One result of the schema (a `ResultRecord` without a test's fields)."""
    return ResultRecord.from_measurement(m).to_dict()


def results_document(measurements: Iterable[Measurement], models: list[dict[str, Any]] | None = None,
                     where: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The results document; `where` is a directory of the code under test (for its git commit;
    default: the working directory)."""
    from .machine import machine_info

    items = list(measurements)
    first = items[0] if items else None
    return {
        "schema": SCHEMA,
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(where),  # host, CPU, Python, package versions, git commit and dirty flag
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


def temp_prefix(path: Path) -> str:
    """The name prefix of `atomic_write_json`'s temporary files for `path` (they end in .tmp)."""
    return f".{path.name}."


def write_target(path: str | os.PathLike[str]) -> Path:
    """Where a write to `path` lands: through symlinks to the file they name."""
    return Path(os.path.realpath(path))


#: paths that name a process's open descriptor (/dev/stdout is a link to /proc/self/fd/1): what
#: they resolve to may be a regular file (stdout redirected), but it is someone's open stream
_DESCRIPTORS = ("/proc/", "/dev/fd/", "/dev/stdout", "/dev/stderr", "/dev/stdin")


def _names_a_descriptor(path: str | os.PathLike[str]) -> bool:
    """Whether `path`, or a symlink on the way from it to its target, names an open descriptor."""
    hop = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        if hop.startswith(_DESCRIPTORS):
            return True
        if not os.path.islink(hop):
            return False
        hop = os.path.abspath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
    return False


#: how long a write into a FIFO waits for a process to read it before giving up
FIFO_WAIT_S = 10.0


def _write_fifo(path: str | os.PathLike[str], text: str) -> None:
    """Write into a named pipe: opening one that no process reads would block for ever (a session
    that hung after its tests), so the open is non-blocking and waits FIFO_WAIT_S for a reader."""
    import time

    deadline = time.monotonic() + FIFO_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if time.monotonic() >= deadline:
                raise OSError(errno.ENXIO, f"{path} is a FIFO that no process read within {FIFO_WAIT_S:g} s; "
                                           "start its reader first (e.g. `cat FIFO &`)") from None
            time.sleep(0.05)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one.

    A symlink is written through (its target is replaced, the link stays). A pipe, a character
    device or an open descriptor (/dev/stdout, /dev/null, a FIFO) is written to as a stream: there
    is no file to replace, and replacing it would swap the device for a regular file. Anything else
    that is not a regular file (a directory, a socket, a block device) is refused with an OSError.
    """
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"  # fails before anything is touched
    try:
        mode = os.stat(path).st_mode  # follows links, /dev/stdout's /proc ones included
    except FileNotFoundError:
        mode = None
    if mode is not None and (not stat.S_ISREG(mode) or _names_a_descriptor(path)):
        if stat.S_ISFIFO(mode):
            _write_fifo(path, text)
            return
        if stat.S_ISCHR(mode) or stat.S_ISREG(mode):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                      f"{path} is {kind}; refusing to replace it (give the path of a file)")
    target = write_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, _file_mode(target))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_results(path: str | os.PathLike[str], measurements: Iterable[Measurement], models: list[dict[str, Any]] | None = None) -> None:
    atomic_write_json(path, results_document(measurements, models))


#: deeper JSON than any file of ours (results nest about six levels): refused before a recursive
#: reader (repr, our validation, the JSON encoder) could run out of stack on it
MAX_DEPTH = 100


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (breadth first: no recursion of our own)."""
    level, depth = [data], 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nested: list[Any] = []
        for item in level:
            values = item.values() if isinstance(item, dict) else item
            nested.extend(v for v in values if isinstance(v, (dict, list)))
        level = nested
    return False


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; a key given twice is an error (JSON would keep the last one
    without a word: a hand-merged baseline file that lists a test twice)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return out


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, turning every way it can be bad into a DataError naming the file. A
    UTF-8 byte order mark (Windows editors write one) is read past; a key given twice in one
    object is refused."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except _DuplicateKey as exc:
        raise DataError(f"{path}: the key {exc.key!r} appears twice in one object, and JSON would keep only the "
                        "last one without a word; remove the one you do not mean") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise DataError(f"{path}: a number in it cannot be read: {exc}") from None
    except RecursionError:
        data = None
        too_deep = True
    else:
        too_deep = isinstance(data, (dict, list)) and _depth_exceeds(data, MAX_DEPTH)
    if too_deep:
        raise DataError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep; not a pytest-joules file")
    return data


def finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (not a bool; an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer literal like 10**400
        return False


def _flag(where: str, item: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false field: a string "false" would read as true, so only JSON booleans are taken."""
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise DataError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


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
    #: when and where the run was made ("created", "machine"); {} / None in files from before them
    created: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    #: the carbon/cost inputs the run was written with ({} when none were given)
    footprint: dict[str, Any] = field(default_factory=dict)
    #: the plugin's session facts (MAPE, the drift between sessions: judge/drift_session.py); {} if none
    session: dict[str, Any] = field(default_factory=dict)


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
    if value is not None and (not finite_number(value) or value <= 0):
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
            if v is not None and not finite_number(v):
                raise DataError(f"{where}: rounds[{j}]: {name} must be a number or null, got {v!r}")
        if _flag(f"{where}: rounds[{j}]", r, "valid", True) and r.get("joules") and r.get("output_tokens"):
            rounds.append(float(r["joules"]) / float(r["output_tokens"]))
    if value is not None and rounds and not math.isclose(statistics.median(rounds), value, rel_tol=1e-9):
        # compare judges the rounds and fit reads j_per_out_token: one edited without the other
        # would make the two disagree without a word
        raise DataError(
            f"{where}: j_per_out_token {value!r} is not the median {statistics.median(rounds):.6g} of its valid "
            "rounds' joules/output_tokens; the rounds are authoritative (`joules compare` judges them): "
            "edit the rounds, or remove them to keep the edited figure"
        )
    _flag(where, item, "simulated", False)
    if isinstance(item.get("device"), dict):
        _flag(f"{where}: device", item["device"], "simulated", False)
    return ResultRow(
        name=str(item.get("name") or workload.label()),
        workload=workload,
        j_per_out_token=None if value is None else float(value),
        round_values=rounds,
        valid=_flag(where, item, "valid", value is not None),
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
    if isinstance(data.get("device"), dict):
        _flag(f"{path}: device", data["device"], "simulated", False)
    return ResultsFile(
        path=path,
        simulated=_flag(str(path), data, "simulated", False),
        engine=data.get("engine") or {},
        device=data.get("device") or {},
        rows=[row_from_dict(path, i, item) for i, item in enumerate(items)],
        models=data.get("models") or [],
        created=data["created"] if isinstance(data.get("created"), str) else None,
        machine=data["machine"] if isinstance(data.get("machine"), dict) else {},
        footprint=data["footprint"] if isinstance(data.get("footprint"), dict) else {},
        session=data["session"] if isinstance(data.get("session"), dict) else {},
    )
