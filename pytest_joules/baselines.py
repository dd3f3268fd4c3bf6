"""The baseline store: reviewable JSON, one file per (device, engine identity).

    <root>/<device-slug>/<engine-kind>-<model-slug>.json        baselines
    <root>/<device-slug>/<engine-kind>-<model-slug>.model.json  the fitted model (`joules fit --save`)

    {"schema": "pytest-joules/baselines/1",
     "fingerprint": {"device": {...}, "engine": {...}},
     "entries": {"<test node id>": {"workload": {"n_in": .., "n_out": .., "requests": ..,
                                                "max_batch_size": .., "seed": ..},
                                   "rounds": [J/out-token per round], "j_per_out_token": median,
                                   "spread": .., "recorded": "<UTC ISO>"}}}

An entry is compared with a run of the same n_in, n_out, requests and max_batch_size: the seed
is written for information only (it picks the random prompt tokens and the simulator's noise,
not the work), so a run with another --joules-seed is judged against the same baselines.

Keys are sorted and indented so a baseline update reads as a small diff in review. Writes are
atomic and read-merge-write under an exclusive lock, so concurrent xdist workers lose nothing.
A file that cannot be read is an error naming it and is never overwritten; a file recorded with
another fingerprint is never used (see `FingerprintMismatch`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import DataError
from .fingerprint import device_slug, differences, engine_stem
from .results import atomic_write_json, load_json
from .workload import Workload

SCHEMA = "pytest-joules/baselines/1"
FIX = "restore it from version control or delete it, then record again with --joules-update-baselines"


class FingerprintMismatch(DataError):
    """The baseline file was recorded on another device or engine."""


@dataclass(frozen=True)
class Entry:
    workload: dict[str, Any]
    rounds: list[float]
    j_per_out_token: float
    spread: float | None
    recorded: str


@dataclass(frozen=True)
class Lookup:
    """What the store holds for one test: its entry, or None and why not ("" when simply new)."""

    entry: Entry | None
    note: str = ""


#: what makes a baseline comparable with a run: the work done. Not the seed: it only picks which
#: random prompt tokens run (and the simulator's noise stream); the energy does not depend on it.
IDENTITY = ("n_in", "n_out", "requests", "max_batch_size")


def workload_dict(w: Workload) -> dict[str, Any]:
    # the seed is still written, for information (and for older versions, which compare it)
    return {"n_in": w.n_in, "n_out": w.n_out, "requests": w.requests, "max_batch_size": w.max_batch_size, "seed": w.seed}


def same_work(recorded: Mapping[str, Any], w: Workload) -> bool:
    """True when a recorded workload did the work `w` does (a missing field has Workload's default)."""
    defaults = {"requests": 1, "max_batch_size": None}
    now = workload_dict(w)
    return all(recorded.get(k, defaults.get(k)) == now[k] for k in IDENTITY)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _short(x: float) -> float:
    """Six significant digits: plenty for a 5% gate, and diffs stay readable."""
    return float(f"{x:.6g}")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _entry(path: Path, key: str, item: Any) -> Entry:
    where = f"{path}: entry {key!r}"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object; {FIX}")
    workload = item.get("workload")
    if not isinstance(workload, dict) or not {"n_in", "n_out"} <= set(workload):
        raise DataError(f"{where}: 'workload' must be an object with n_in and n_out; {FIX}")
    rounds = item.get("rounds")
    if not isinstance(rounds, list) or not rounds or not all(_positive(r) for r in rounds):
        raise DataError(f"{where}: 'rounds' must be a non-empty list of positive J/output-token values; {FIX}")
    median = item.get("j_per_out_token")
    if not _positive(median):
        raise DataError(f"{where}: 'j_per_out_token' must be a positive number, got {median!r}; {FIX}")
    spread = item.get("spread")
    return Entry(
        workload=workload,
        rounds=[float(r) for r in rounds],
        j_per_out_token=float(median),
        spread=float(spread) if _positive(spread) or spread == 0 else None,
        recorded=str(item.get("recorded", "")),
    )


def parse_file(path: Path, data: Any) -> tuple[dict[str, Any], dict[str, Entry]]:
    """Validate a loaded baseline document; returns (fingerprint, entries)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a pytest-joules baseline file (schema {found!r}, expected {SCHEMA!r}); {FIX}")
    fp = data.get("fingerprint")
    entries = data.get("entries")
    if not isinstance(fp, dict) or not isinstance(entries, dict):
        raise DataError(f"{path}: 'fingerprint' and 'entries' must be objects; {FIX}")
    return fp, {key: _entry(path, key, item) for key, item in entries.items()}


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the directory, held across read-merge-write (no lock files left behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: a lock file beside the baselines
        import msvcrt

        with open(directory / ".joules.lock", "a+b") as fh:
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)  # retries for ~10 s
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class BaselineStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[dict[str, Any], dict[str, Entry]] | None] = {}

    def path_for(self, fp: Mapping[str, Any]) -> Path:
        return self.root / device_slug(fp) / f"{engine_stem(fp)}.json"

    def model_path_for(self, fp: Mapping[str, Any]) -> Path:
        return self.root / device_slug(fp) / f"{engine_stem(fp)}.model.json"

    def _load(self, path: Path) -> Any:
        """The file's JSON, None when there is no file; DataError (with the fix) when unreadable."""
        if not path.exists():
            return None
        try:
            return load_json(path)
        except DataError as exc:
            raise DataError(f"{exc}; {FIX}") from None

    def _read(self, path: Path) -> tuple[dict[str, Any], dict[str, Entry]] | None:
        data = self._load(path)
        return None if data is None else parse_file(path, data)

    def _mismatch(self, path: Path, recorded: Mapping[str, Any], fp: Mapping[str, Any]) -> FingerprintMismatch:
        diffs = "; ".join(differences(recorded, fp))
        return FingerprintMismatch(
            f"{path} was recorded on a different device or engine ({diffs}); it is not used. "
            "To record baselines for this one, run with --joules-update-baselines (replaces the "
            "file's entries) or point --joules-baselines at a separate directory"
        )

    def lookup(self, fp: Mapping[str, Any], key: str, workload: Workload) -> Lookup:
        """The baseline of test `key`; raises DataError (bad file) or FingerprintMismatch."""
        path = self.path_for(fp)
        if path not in self._cache:
            self._cache[path] = self._read(path)
        cached = self._cache[path]
        if cached is None:
            return Lookup(None)
        recorded, entries = cached
        if recorded != fp:
            raise self._mismatch(path, recorded, fp)
        entry = entries.get(key)
        if entry is None:
            return Lookup(None)
        if not same_work(entry.workload, workload):
            was = Workload(**entry.workload).label() if {"n_in", "n_out"} <= set(entry.workload) else entry.workload
            return Lookup(None, f"baseline was recorded for another workload ({was}); record it again")
        return Lookup(entry)

    def record(self, fp: Mapping[str, Any], key: str, workload: Workload, rounds: list[float], spread: float | None) -> Path:
        """Store one test's rounds, merging with whatever other workers wrote meanwhile.

        A corrupted file raises DataError and stays as it is. A file with another fingerprint
        is replaced (that is what --joules-update-baselines asks for on a new device).
        """
        if not rounds:
            raise ValueError("no valid rounds to record")
        path = self.path_for(fp)
        try:
            return self._record(path, fp, key, workload, rounds, spread)
        except OSError as exc:  # a directory that cannot be created or written: name it, no traceback
            raise DataError(
                f"cannot write baseline file {path}: {exc.strerror or exc}; make {path.parent} writable "
                "or point --joules-baselines at a writable directory"
            ) from None

    def _record(self, path: Path, fp: Mapping[str, Any], key: str, workload: Workload, rounds: list[float],
                spread: float | None) -> Path:
        with _locked(path.parent):
            data = self._load(path)
            recorded = None if data is None else parse_file(path, data)[0]  # raises on a corrupted file: never overwrite it
            entries: dict[str, Any] = dict(data["entries"]) if recorded == fp else {}
            entry = {
                "workload": workload_dict(workload),
                "rounds": [_short(r) for r in rounds],
                "j_per_out_token": _short(statistics.median(rounds)),
                "spread": None if spread is None else _short(spread) if spread else 0.0,
            }
            old = entries.get(key) or {}
            if {k: old.get(k) for k in entry} != entry:  # unchanged figures keep their date: no diff
                entries[key] = {**entry, "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            document = _sorted({"schema": SCHEMA, "fingerprint": dict(fp), "entries": entries})
            atomic_write_json(path, document)
            self._cache[path] = parse_file(path, document)
        return path
