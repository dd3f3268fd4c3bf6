"""Store file names that hold the whole engine identity, and the stores named before them.

Up to 0.1 a baseline file was named `<kind>-<model's last part>.json`, while the runtime, the
dtype and the full model path sat in its fingerprint only: two configurations of one engine
(runtime eager and graphs; two dtypes; `/engines/a/fp8` and `/engines/b/fp8`) shared one file,
and recording one replaced the other's baselines. Files are now named by
`fingerprint.engine_stem` (kind, model, dtype, runtime, a hash of a model path). Old stores
migrate without losing an entry:

- reading: where a file of the new name is absent, the old name is read if the fingerprint in it
  maps to the new name (a read-only CI job on an old store gates as before; nothing is written);
- the first write into a device directory renames every baseline file whose name is not its own
  fingerprint's, under the store's lock. Where a file of the new name exists already with the same
  fingerprint, the old file's entries it lacks are merged in (of a key both hold, the later
  recording wins) and the old file is kept as `<old>.json.bak`; with another fingerprint (an
  older version) the old file is kept as `.bak` beside it. A fitted model `<old>.model.json`
  moves with the baseline file of its old name and gets that file's fingerprint written in.

Files that cannot be read are never touched: the lookup that meets one names it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import DataError
from .fingerprint import device_slug, legacy_engine_stem
from .results import atomic_write_json, load_json

BASELINE_SCHEMA = "pytest-joules/baselines/1"
MODEL_SUFFIX = ".model.json"
#: files beside the baselines that are not baseline files (`joules sweep --out` beside them, ours)
_NOT_BASELINES = (MODEL_SUFFIX, ".sweep.json", ".bak")

NameFor = Callable[[Mapping[str, Any]], Path]


@dataclass(frozen=True)
class Migrated:
    """One file renamed (or merged) to its full-identity name."""

    old: str
    new: str
    merged: bool = False
    backup: str | None = None

    def describe(self) -> str:
        if self.merged:
            return f"merged {self.old} into {self.new} (the old file is kept as {self.backup})"
        return f"renamed {self.old} to {self.new} (file names now hold the whole engine identity)"


def legacy_path(root: Path, fp: Mapping[str, Any], suffix: str = ".json") -> Path:
    return Path(root) / device_slug(fp) / f"{legacy_engine_stem(fp)}{suffix}"


def fingerprint_of(path: Path) -> dict[str, Any] | None:
    """The fingerprint of a readable baseline file; None for anything else (never raises)."""
    try:
        if not path.is_file():
            return None
        data = load_json(path)
    except (DataError, OSError):
        return None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        return None
    fp = data.get("fingerprint")
    return fp if isinstance(fp, dict) and isinstance(data.get("entries"), dict) else None


def legacy_source(root: Path, fp: Mapping[str, Any], name_for: NameFor) -> Path | None:
    """The old-named file that holds `fp`'s baselines, when the new name is absent: one whose
    fingerprint maps to the same new name. A file the fingerprint cannot be read from is returned
    too when it sits at this identity's old name (the lookup then names what is wrong with it)."""
    old = legacy_path(root, fp)
    new = name_for(fp)
    if old == new or not os.path.lexists(old):
        return None
    recorded = fingerprint_of(old)
    if recorded is None:
        return old  # corrupt, or a dangling link: the reader says so rather than reading "new"
    return old if name_for(recorded) == new else None


def legacy_model(root: Path, fp: Mapping[str, Any], name_for: NameFor) -> Path | None:
    """An old-named model file for `fp`, where the new name is absent: one carrying `fp`'s
    fingerprint, or none but sitting beside the old-named baseline file that belongs to `fp`."""
    old = legacy_path(root, fp, MODEL_SUFFIX)
    if old == model_name(name_for(fp)) or not old.is_file():
        return None
    try:
        data = load_json(old)
    except DataError:
        return old  # the loader names the problem
    recorded = data.get("fingerprint") if isinstance(data, dict) else None
    if isinstance(recorded, dict):
        return old if name_for(recorded) == name_for(fp) else None
    return old if legacy_source(root, fp, name_for) is not None else None


def model_name(baseline: Path) -> Path:
    return baseline.with_name(baseline.name[: -len(".json")] + MODEL_SUFFIX)


def is_baseline_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and not name.endswith(_NOT_BASELINES)


def migrate_directory(directory: Path, name_for: NameFor) -> list[Migrated]:
    """Rename every baseline file of one device directory to its full-identity name (call under
    the store's lock: no other writer is in the directory)."""
    done: list[Migrated] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return done
    for name in names:
        path = directory / name
        if not is_baseline_name(name):
            continue
        fp = fingerprint_of(path)
        if fp is None:
            continue  # unreadable: left as it is, named by whoever looks it up
        target = name_for(fp)
        if target.parent != directory or target.name == name:
            continue  # already named by its identity (or belongs to another device directory)
        done.append(_move(path, target, fp))
        _move_model(model_name(path), model_name(target), fp)
    return done


def _move(path: Path, target: Path, fp: dict[str, Any]) -> Migrated:
    if not os.path.lexists(target):
        os.rename(path, target)  # a symlink is renamed itself: it still points at its file
        return Migrated(str(path), str(target))
    backup = path.with_name(path.name + ".bak")
    existing = load_json(target) if target.exists() else None
    if isinstance(existing, dict) and existing.get("fingerprint") == fp and isinstance(existing.get("entries"), dict):
        old = load_json(path)
        merged = dict(existing["entries"])
        for key, entry in old["entries"].items():
            mine = merged.get(key)
            if mine is None or str(entry.get("recorded", "")) > str(mine.get("recorded", "")):
                merged[key] = entry
        if merged != existing["entries"]:
            atomic_write_json(target, {**existing, "entries": {k: merged[k] for k in sorted(merged)}})
    os.replace(path, backup)  # nothing of it is lost: merged, or kept beside the newer file
    return Migrated(str(path), str(target), merged=True, backup=str(backup))


def _move_model(old: Path, new: Path, fp: dict[str, Any]) -> None:
    """A model file follows its baseline file and records the fingerprint it was used with."""
    if not old.is_file() or os.path.lexists(new):
        return
    if old.is_symlink():
        os.rename(old, new)
        return
    try:
        data = load_json(old)
    except DataError:
        return
    if isinstance(data, dict) and "fingerprint" not in data:
        atomic_write_json(new, {**data, "fingerprint": fp})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)
    else:
        os.rename(old, new)


def inventory(root: Path) -> list[tuple[Path, dict[str, Any], int]]:
    """Every readable baseline file of the store: (path, fingerprint, number of entries).
    Files that cannot be read are left out: a lookup names them."""
    found = []
    for path in sorted(root.glob("*/*.json")):
        if not is_baseline_name(path.name) or not path.is_file():
            continue
        try:
            data = load_json(path)
        except DataError:
            continue
        if isinstance(data, dict) and data.get("schema") == BASELINE_SCHEMA and isinstance(data.get("fingerprint"), dict) \
                and isinstance(data.get("entries"), dict):
            found.append((path, data["fingerprint"], len(data["entries"])))
    return found
