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

Keys are sorted and indented so a baseline update reads as a small diff in review. J/token values
are stored at full precision (Python's shortest round-trip repr), exactly as a results JSON holds
them: six digits would move a change that sits at the tolerance across it, and the plugin would
fail a test that `joules compare` on the same runs passes (both apply `verdict.judge`'s rule: a
change of exactly the tolerance passes). Recording is
batched: `stage` keeps a test's rounds in memory and `flush` writes every staged test with one
read-merge-write of the file, atomic and under an exclusive lock, so concurrent xdist workers (each
flushes its own) lose nothing and recording N tests costs one write, not N rewrites of the file.
A file that cannot be read is an error naming it and is never overwritten; a file recorded with
another fingerprint is never used (see `FingerprintMismatch`), and when an update replaces it the
old file is kept beside it as `<name>.json.bak`. A symlink in the store is written through to its
target. Temporary files a killed write left are removed under the lock, and a `.gitignore` in each
device directory keeps them and the backups out of `git add`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import stat
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeGuard

from ..errors import DataError
from .directories import (LOCK_NAME, LOCK_TIMEOUT_S, check_directory, ensure_gitignore, fix_for,  # noqa: F401
                          locked, remove_stale_temps)
from .fingerprint import device_slug, differences, engine_stem
from .results import atomic_write_json, finite_number, load_json, write_target
from ..engines.mix import traffic_labels
from .baseline_sessions import Earlier, parse_earlier, with_earlier
from ..engines.workload import Workload

SCHEMA = "pytest-joules/baselines/1"
FIX = "restore it from version control or delete it, then record again with --joules-update-baselines"

#: staged entries are written at the end of the session, and meanwhile at most this often (so a
#: crash hours into a GPU session loses minutes of recording, not all of it) ...
FLUSH_EVERY_S = 60.0
#: ... and never more often than 20 times the last write took: writes cost at most ~5% of the time
FLUSH_COST_RATIO = 20.0


#: the note of a test whose re-measurement agrees with its baseline: the entry is left as it is,
#: so re-recording changes only the entries whose energy changed (a quiet diff in review)
KEPT = "baseline kept: this run agrees with it"


class FingerprintMismatch(DataError):
    """The baseline file was recorded on another device or engine."""


@dataclass(frozen=True)
class Entry:
    workload: dict[str, Any]
    rounds: list[float]
    j_per_out_token: float
    spread: float | None
    recorded: str
    #: the median TTFT/TPOT/output tok/s recorded with the rounds (latency.py); None in older files
    latency: dict[str, float | None] | None = None
    #: the session that measured `rounds` (None in files of older versions)
    session: str | None = None
    #: earlier sessions kept with it, oldest first (judge/drift.py averages their offsets)
    earlier: tuple[Earlier, ...] = ()

    @property
    def sessions(self) -> list[list[float]]:
        """Every session's rounds, oldest first."""
        return [list(e.rounds) for e in self.earlier] + [list(self.rounds)]

    @property
    def session_ids(self) -> list[str]:
        """An id per session (a session recorded by an older version is named by its date)."""
        return [e.session or f"recorded {e.recorded}" for e in self.earlier] + [self.session or f"recorded {self.recorded}"]

    @property
    def frame(self) -> str:
        """The baseline's sessions as one name: tests of one frame share the baseline's drift."""
        return " + ".join(sorted(self.session_ids))


@dataclass(frozen=True)
class Lookup:
    """What the store holds for one test: its entry, or None and why not ("" when simply new)."""

    entry: Entry | None
    note: str = ""


@dataclass(frozen=True)
class Replaced:
    """A file of another fingerprint that a flush replaced: where the old one is kept, and its tests."""

    path: str
    backup: str
    old_keys: list[str]
    differences: list[str]


#: what makes a baseline comparable with a run: the work done. Not the seed: it only picks which
#: random prompt tokens run (and the simulator's noise stream); the energy does not depend on it.
#: Traffic beyond one point (engines/mix.py) adds, only when set: the mix's content hash, the
#: arrival schedule ("rate=4/s", "concurrency=8") and the prompt file's content hash.
TRAFFIC = ("mix", "arrival", "prompts")
IDENTITY = ("n_in", "n_out", "requests", "max_batch_size", *TRAFFIC)
WORKLOAD_KEYS = (*IDENTITY, "seed")


def workload_dict(w: Workload) -> dict[str, Any]:
    # the seed is still written, for information (and for older versions, which compare it)
    out: dict[str, Any] = {"n_in": w.n_in, "n_out": w.n_out, "requests": w.requests,
                           "max_batch_size": w.max_batch_size, "seed": w.seed}
    for key, value in traffic_labels(w).items():
        if value is not None:
            out[key] = value
    return out


def _digest(value: Any) -> Any:
    """A mix or prompt file is the same when its content is: the name before '#' may differ."""
    return value.rsplit("#", 1)[-1] if isinstance(value, str) else value


def same_work(recorded: Mapping[str, Any], w: Workload) -> bool:
    """True when a recorded workload did the work `w` does (a missing field has Workload's default)."""
    defaults = {"requests": 1, "max_batch_size": None}
    now = workload_dict(w)
    return all(_digest(recorded.get(k, defaults.get(k))) == _digest(now.get(k)) for k in IDENTITY)


def _label(workload: Mapping[str, Any]) -> str:
    """How a recorded workload is named in a note (validated by _entry)."""
    point = Workload(**{k: v for k, v in workload.items() if k not in TRAFFIC}).label()
    extra = [f"{k}={workload[k]}" if k != "arrival" else str(workload[k]) for k in TRAFFIC if workload.get(k)]
    return " ".join([point if not workload.get("mix") else f"mean {point}", *extra])


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _short(x: float) -> float:
    """Six significant digits, for the spread (shown, never judged); J/token values keep full precision."""
    return float(f"{x:.6g}")


def _positive(x: Any) -> TypeGuard[float]:
    return finite_number(x) and x > 0


def _workload(where: str, workload: Any) -> Workload:
    """The recorded workload, validated like a marker's (DataError naming the entry)."""
    if not isinstance(workload, dict) or not {"n_in", "n_out"} <= set(workload):
        raise DataError(f"{where}: 'workload' must be an object with n_in and n_out; {FIX}")
    unknown = sorted(set(workload) - set(WORKLOAD_KEYS))
    if unknown:
        raise DataError(f"{where}: 'workload' has unknown key(s) {', '.join(unknown)} "
                        f"(known: {', '.join(WORKLOAD_KEYS)}); {FIX}")
    for key in TRAFFIC:
        if workload.get(key) is not None and not isinstance(workload[key], str):
            raise DataError(f"{where}: 'workload' {key} must be a string, got {workload[key]!r}; {FIX}")
    try:
        return Workload(**{k: v for k, v in workload.items() if k not in TRAFFIC})
    except DataError:
        raise
    except Exception as exc:  # ConfigError: a string "64", a negative length, a float
        raise DataError(f"{where}: 'workload': {exc}; {FIX}") from None


def _entry(path: Path, key: str, item: Any) -> Entry:
    where = f"{path}: entry {key!r}"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object; {FIX}")
    workload = item.get("workload")
    _workload(where, workload)  # a dict of a valid workload, or DataError
    assert isinstance(workload, dict)
    rounds = item.get("rounds")
    if not isinstance(rounds, list) or not rounds or not all(_positive(r) for r in rounds):
        raise DataError(f"{where}: 'rounds' must be a non-empty list of positive J/output-token values; {FIX}")
    median = item.get("j_per_out_token")
    if not _positive(median):
        raise DataError(f"{where}: 'j_per_out_token' must be a positive number, got {median!r}; {FIX}")
    if not math.isclose(_short(statistics.median(rounds)), median, rel_tol=1e-5):
        # the gate compares the rounds: an edited median alone would be ignored without a word
        raise DataError(
            f"{where}: 'j_per_out_token' {median!r} is not the median of its 'rounds' "
            f"({statistics.median(rounds):.6g}); the rounds are what runs are compared with: edit them "
            f"(and the median), or {FIX}"
        )
    spread = item.get("spread")
    if spread is not None and not (finite_number(spread) and spread >= 0):
        raise DataError(f"{where}: 'spread' must be a non-negative number or null, got {spread!r}; {FIX}")
    recorded = item.get("recorded", "")
    if not isinstance(recorded, str):
        raise DataError(f"{where}: 'recorded' must be a date string, got {recorded!r}; {FIX}")
    session = item.get("session")
    if session is not None and not isinstance(session, str):
        raise DataError(f"{where}: 'session' must be a string or null, got {session!r}; {FIX}")
    return Entry(
        workload=workload,
        rounds=[float(r) for r in rounds],
        j_per_out_token=float(median),
        spread=None if spread is None else float(spread),
        recorded=recorded,
        latency=_latency(item.get("latency")),
        session=session,
        earlier=parse_earlier(where, item.get("earlier_sessions"), FIX),
    )


def _latency(value: Any) -> dict[str, float | None] | None:
    """A recorded latency, or None: it is only shown and gated, never what the energy gate judges."""
    from ..measure.latency import from_record

    return from_record({"latency": value}) if isinstance(value, dict) else None


def parse_file(path: Path, data: Any) -> tuple[dict[str, Any], dict[str, Entry]]:
    """Validate a loaded baseline document; returns (fingerprint, entries)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        if data is None:
            found = "null"
        raise DataError(f"{path}: not a pytest-joules baseline file (schema {found!r}, expected {SCHEMA!r}); {FIX}")
    fp = data.get("fingerprint")
    entries = data.get("entries")
    if not isinstance(fp, dict) or not isinstance(entries, dict):
        raise DataError(f"{path}: 'fingerprint' and 'entries' must be objects; {FIX}")
    return fp, {key: _entry(path, key, item) for key, item in entries.items()}


class BaselineStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[dict[str, Any], dict[str, Entry]] | None] = {}
        #: staged, not yet written: file -> (fingerprint, {key: entry dict})
        self._pending: dict[Path, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
        self._last_flush = time.monotonic()
        self._last_write_s = 0.0
        #: the file an identity's baselines were read from, where it is an old-named one (migrate.py)
        self._sources: dict[Path, Path] = {}
        #: device directories migrated to full-identity names by this store, and what moved
        self._migrated_dirs: set[Path] = set()
        self.migrated: list[Any] = []
        #: staged entries that add their session to the entry's earlier ones: how many to keep
        self._keep: dict[tuple[Path, str], int] = {}

    def entries(self, fp: Mapping[str, Any]) -> dict[str, Entry]:
        """Every entry of the file of `fp` ({} for no file, or one of another fingerprint)."""
        path = self.path_for(fp)
        if path not in self._cache:
            self._cache[path] = self._read(path)
        cached = self._cache[path]
        return dict(cached[1]) if cached is not None and cached[0] == fp else {}

    def path_for(self, fp: Mapping[str, Any]) -> Path:
        return self.root / device_slug(fp) / f"{engine_stem(fp)}.json"

    def model_path_for(self, fp: Mapping[str, Any]) -> Path:
        return self.root / device_slug(fp) / f"{engine_stem(fp)}.model.json"

    def model_source_for(self, fp: Mapping[str, Any]) -> Path:
        """The model file to read for `fp`: the full-identity name, else a pre-0.2 one that
        belongs to `fp` (migrate.legacy_model), else the full-identity name (absent)."""
        path = self.model_path_for(fp)
        if os.path.lexists(path):
            return path
        from .migrate import legacy_model

        return legacy_model(self.root, fp, self.path_for) or path

    def _load(self, path: Path) -> Any:
        """The file's JSON; DataError (with the fix) when unreadable. `path` must exist."""
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read; a device is no baseline file
            raise DataError(f"{path}: not a regular file; {FIX}")
        try:
            return load_json(path)
        except DataError as exc:
            raise DataError(f"{exc}; {FIX}") from None

    def _read(self, path: Path) -> tuple[dict[str, Any], dict[str, Entry]] | None:
        """(fingerprint, entries), or None when there is no file (a file holding `null` is an error)."""
        if not os.path.lexists(path):
            return None
        if not path.exists():
            raise DataError(f"{path}: a symlink to {os.readlink(path)}, which does not exist; "
                            "restore its target or delete the link")
        return parse_file(path, self._load(path))

    def _mismatch(self, path: Path, recorded: Mapping[str, Any], fp: Mapping[str, Any]) -> FingerprintMismatch:
        diffs = "; ".join(differences(recorded, fp))
        return FingerprintMismatch(
            f"{path} was recorded on a different device or engine ({diffs}); it is not used. "
            "To record baselines for this one, run with --joules-update-baselines (replaces the "
            "file's entries; the old file is kept as .bak) or point --joules-baselines at a separate directory"
        )

    def _read_identity(self, fp: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Entry]] | None:
        """The file of `fp`'s identity; where only a file of the pre-0.2 name holds it, that one."""
        from .migrate import legacy_source

        path = self.path_for(fp)
        check_directory(path.parent)
        if os.path.lexists(path):
            return self._read(path)
        old = legacy_source(self.root, fp, self.path_for)
        if old is None:
            return None
        try:
            found = self._read(old)
        except DataError:
            if not os.path.lexists(old) and os.path.lexists(path):  # migrated meanwhile by another process
                return self._read(path)
            raise
        self._sources[path] = old
        return found

    def lookup(self, fp: Mapping[str, Any], key: str, workload: Workload) -> Lookup:
        """The baseline of test `key`; raises DataError (bad file) or FingerprintMismatch."""
        path = self.path_for(fp)
        if path not in self._cache:
            self._cache[path] = self._read_identity(fp)
        cached = self._cache[path]
        if cached is None:
            return Lookup(None)
        recorded, entries = cached
        if recorded != fp:
            raise self._mismatch(self._sources.get(path, path), recorded, fp)
        entry = entries.get(key)
        if entry is None:
            return Lookup(None)
        if not same_work(entry.workload, workload):
            was = _label(entry.workload)
            return Lookup(None, f"baseline was recorded for another workload ({was}); record it again")
        return Lookup(entry)

    def holds(self, fp: Mapping[str, Any]) -> bool:
        """Whether the store has a file for `fp`'s identity (of the new name or a pre-0.2 one)."""
        from .migrate import legacy_source

        path = self.path_for(fp)
        return os.path.lexists(path) or legacy_source(self.root, fp, self.path_for) is not None

    def inventory(self) -> list[tuple[Path, dict[str, Any], int]]:
        """Every readable baseline file of the store: (path, fingerprint, number of entries)."""
        from .migrate import inventory

        return inventory(self.root)

    # -- recording ----------------------------------------------------------------------------
    def stage(self, fp: Mapping[str, Any], key: str, workload: Workload | Mapping[str, Any], rounds: list[float],
              spread: float | None, latency: Mapping[str, float | None] | None = None, session: str | None = None,
              keep: int = 1) -> Path:
        """Keep one test's rounds for the next `flush`; DataError when its file could not be written.

        `session` names the session that measured them; with `keep` > 1 the flush keeps up to
        keep - 1 earlier sessions of the entry (same work) beside them, instead of replacing it."""
        if not rounds:
            raise ValueError("no valid rounds to record")
        path = self.path_for(fp)
        if path not in self._pending:
            self._check_writable(path)
            self._pending[path] = (dict(fp), {})
        self._pending[path][1][key] = {
            # a workload, or its dict as `workload_dict` made it (shipped from an xdist worker)
            "workload": workload_dict(workload) if isinstance(workload, Workload) else dict(workload),
            # full precision, as results JSON keeps them: the plugin and `joules compare` judge the
            # same numbers, so a change at the tolerance gets one verdict from both
            "rounds": [float(r) for r in rounds],
            "j_per_out_token": float(statistics.median(rounds)),
            "spread": None if spread is None else _short(spread) if spread else 0.0,
        }
        if latency:
            self._pending[path][1][key]["latency"] = {k: v for k, v in latency.items() if v is not None}
        if session is not None:
            self._pending[path][1][key]["session"] = session
        self._keep[(path, key)] = keep
        return path

    def _check_writable(self, path: Path) -> None:
        """Fail the first test recorded into an unwritable place, not the session's end."""
        check_directory(path.parent)
        directory = write_target(path).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise self._unwritable(path, exc) from None

    def check_writable(self, fp: Mapping[str, Any]) -> None:
        """DataError when `fp`'s baseline file could not be written (before measuring more)."""
        self._check_writable(self.path_for(fp))

    def pending_keys(self) -> list[str]:
        """The keys staged and not yet written (after a failed flush)."""
        return [key for _, entries in self._pending.values() for key in entries]

    @staticmethod
    def _unwritable(path: Path, exc: OSError) -> DataError:
        return DataError(f"cannot write baseline file {path}: {exc.strerror or exc}; {fix_for(exc, path)}")

    @property
    def pending(self) -> int:
        return sum(len(entries) for _, entries in self._pending.values())

    def due(self) -> bool:
        """Whether staged entries have waited long enough to be written before the session ends."""
        wait = max(FLUSH_EVERY_S, FLUSH_COST_RATIO * self._last_write_s)
        return bool(self._pending) and time.monotonic() - self._last_flush >= wait

    def flush(self) -> list[Replaced]:
        """Write every staged entry: one locked read-merge-write per file; returns the files of
        another fingerprint it replaced. On a DataError the entries of the files not yet written
        stay staged."""
        done: list[Replaced] = []
        start = time.monotonic()
        for path in list(self._pending):
            fp, entries = self._pending[path]
            try:
                replaced = self._write(path, fp, entries)
            except OSError as exc:  # a directory that cannot be created or written: name it, no traceback
                raise self._unwritable(path, exc) from None
            del self._pending[path]
            if replaced is not None:
                done.append(replaced)
        self._last_flush = time.monotonic()
        self._last_write_s = self._last_flush - start
        return done

    def record(self, fp: Mapping[str, Any], key: str, workload: Workload, rounds: list[float], spread: float | None) -> Path:
        """Stage one test's rounds and write them at once (a single test; sessions stage and flush)."""
        path = self.stage(fp, key, workload, rounds, spread)
        self.flush()
        return path

    def _migrate(self, directory: Path) -> None:
        """Once per device directory: rename its pre-0.2 files to full-identity names (migrate.py)."""
        if directory in self._migrated_dirs or not directory.is_dir():
            return
        from .migrate import migrate_directory

        with locked(directory):
            moved = migrate_directory(directory, self.path_for)
        self._migrated_dirs.add(directory)
        self.migrated += moved
        for m in moved:  # what was read under the old name is now under the new one
            self._sources = {k: v for k, v in self._sources.items() if str(v) != m.old}

    def _write(self, path: Path, fp: dict[str, Any], staged: dict[str, dict[str, Any]]) -> Replaced | None:
        """Merge `staged` into the file under the lock, with whatever other workers wrote meanwhile.

        A corrupted file raises DataError and stays as it is. A file with another fingerprint is
        replaced (that is what --joules-update-baselines asks for on a new device), its old
        content kept as `<file>.bak`.
        """
        self._migrate(path.parent)
        target = write_target(path)
        with locked(target.parent):
            remove_stale_temps(target)
            ensure_gitignore(path.parent)  # the store's own directory, not a link's target's
            existed = os.path.exists(target)
            data = self._load(target) if existed else None
            parsed = parse_file(path, data) if existed else None  # raises on a corrupted file: never overwrite it
            replaced = None
            if parsed is not None and parsed[0] == fp:
                assert isinstance(data, dict)  # parse_file accepted it
                entries: dict[str, Any] = dict(data["entries"])
                known = dict(parsed[1])
            else:
                entries, known = {}, {}
                if parsed is not None:
                    assert isinstance(data, dict)
                    backup = target.with_name(target.name + ".bak")
                    shutil.copyfile(target, backup)
                    replaced = Replaced(str(path), str(backup), sorted(data["entries"]), differences(parsed[0], fp))
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            for key, entry in staged.items():
                old = entries.get(key) or {}
                keep = self._keep.pop((path, key), 1)
                figures = {k: v for k, v in entry.items() if k != "session"}
                if {k: old.get(k) for k in figures} == figures:  # unchanged figures keep their date: no diff
                    continue
                same = isinstance(old.get("workload"), dict) and same_work(old["workload"], Workload(**entry["workload"]))
                entries[key] = {**with_earlier(entry, old, keep, same), "recorded": now}
                known[key] = _entry(path, key, entries[key])
            atomic_write_json(target, _sorted({"schema": SCHEMA, "fingerprint": fp, "entries": entries}))
            self._cache[path] = (fp, known)
        return replaced
