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

import contextlib
import datetime as _dt
import math
import os
import re
import shutil
import stat
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeGuard

from ..errors import DataError
from .fingerprint import device_slug, differences, engine_stem
from .results import atomic_write_json, finite_number, load_json, temp_prefix, write_target
from .baseline_sessions import Earlier, parse_earlier, with_earlier
from ..engines.workload import Workload

SCHEMA = "pytest-joules/baselines/1"
FIX = "restore it from version control or delete it, then record again with --joules-update-baselines"

#: written into each device directory the store creates (never over one that exists)
GITIGNORE = (
    "# pytest-joules: temporary files of interrupted writes, and baseline files a fingerprint\n"
    "# change replaced (kept for you to compare; not baselines)\n"
    ".*.tmp\n"
    "*.bak\n"
    ".joules.lock\n"
)

#: staged entries are written at the end of the session, and meanwhile at most this often (so a
#: crash hours into a GPU session loses minutes of recording, not all of it) ...
FLUSH_EVERY_S = 60.0
#: ... and never more often than 20 times the last write took: writes cost at most ~5% of the time
FLUSH_COST_RATIO = 20.0


class FingerprintMismatch(DataError):
    """The baseline file was recorded on another device or engine."""


@dataclass(frozen=True)
class Entry:
    workload: dict[str, Any]
    rounds: list[float]
    j_per_out_token: float
    spread: float | None
    recorded: str
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
IDENTITY = ("n_in", "n_out", "requests", "max_batch_size")
WORKLOAD_KEYS = (*IDENTITY, "seed")


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
    try:
        return Workload(**workload)
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
        session=session,
        earlier=parse_earlier(where, item.get("earlier_sessions"), FIX),
    )


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


#: the lock file of a store directory (and of `.joules/`), held across read-merge-write
LOCK_NAME = ".joules.lock"
#: how long a writer waits for another process's lock before saying which file holds it
LOCK_TIMEOUT_S = 120.0


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the directory, held across read-merge-write, through `filelock` (an OS
    lock on `.joules.lock`: released by the OS if the process dies, so a stale file never blocks)."""
    from filelock import FileLock, Timeout

    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise DataError(f"{directory / LOCK_NAME}: another pytest-joules process has held this store's lock for "
                        f"{LOCK_TIMEOUT_S:.0f} s; let it finish (or stop it) and run again") from None
    try:
        yield
    finally:
        lock.release()


def _remove_stale_temps(target: Path) -> list[Path]:
    """Delete what killed writes of `target` left (atomic_write_json's names); call under the lock,
    where no live write of this file can be under way."""
    pattern = re.compile(re.escape(temp_prefix(target)) + r"[A-Za-z0-9_]{8}\.tmp")
    removed = []
    for entry in os.scandir(target.parent):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _ensure_gitignore(directory: Path) -> None:
    ignore = directory / ".gitignore"
    if not os.path.lexists(ignore):
        tmp = directory / ".gitignore.joules-tmp"  # under the lock: no other writer of this name
        tmp.write_text(GITIGNORE, encoding="utf-8")
        os.replace(tmp, ignore)


class BaselineStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[dict[str, Any], dict[str, Entry]] | None] = {}
        #: staged, not yet written: file -> (fingerprint, {key: entry dict})
        self._pending: dict[Path, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
        self._last_flush = time.monotonic()
        self._last_write_s = 0.0
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
            was = Workload(**entry.workload).label()  # validated by _entry
            return Lookup(None, f"baseline was recorded for another workload ({was}); record it again")
        return Lookup(entry)

    # -- recording ----------------------------------------------------------------------------
    def stage(self, fp: Mapping[str, Any], key: str, workload: Workload, rounds: list[float], spread: float | None,
              session: str | None = None, keep: int = 1) -> Path:
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
            "workload": workload_dict(workload),
            # full precision, as results JSON keeps them: the plugin and `joules compare` judge the
            # same numbers, so a change at the tolerance gets one verdict from both
            "rounds": [float(r) for r in rounds],
            "j_per_out_token": float(statistics.median(rounds)),
            "spread": None if spread is None else _short(spread) if spread else 0.0,
        }
        if session is not None:
            self._pending[path][1][key]["session"] = session
        self._keep[(path, key)] = keep
        return path

    def unstage(self, fp: Mapping[str, Any], key: str) -> bool:
        """Drop a staged entry before it is written (its test failed); False when none was staged."""
        path = self.path_for(fp)
        staged = self._pending.get(path)
        if staged is None or key not in staged[1]:
            return False
        del staged[1][key]
        self._keep.pop((path, key), None)
        if not staged[1]:
            del self._pending[path]
        return True

    def _check_writable(self, path: Path) -> None:
        """Fail the first test recorded into an unwritable place, not the session's end."""
        directory = write_target(path).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise self._unwritable(path, exc) from None

    @staticmethod
    def _unwritable(path: Path, exc: OSError) -> DataError:
        return DataError(
            f"cannot write baseline file {path}: {exc.strerror or exc}; make {path.parent} writable "
            "or point --joules-baselines at a writable directory"
        )

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

    def _write(self, path: Path, fp: dict[str, Any], staged: dict[str, dict[str, Any]]) -> Replaced | None:
        """Merge `staged` into the file under the lock, with whatever other workers wrote meanwhile.

        A corrupted file raises DataError and stays as it is. A file with another fingerprint is
        replaced (that is what --joules-update-baselines asks for on a new device), its old
        content kept as `<file>.bak`.
        """
        target = write_target(path)
        with _locked(target.parent):
            _remove_stale_temps(target)
            _ensure_gitignore(path.parent)  # the store's own directory, not a link's target's
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
