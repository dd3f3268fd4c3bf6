"""Saved runs: `pytest --joules --joules-autosave` keeps each session's results JSON in `.joules/`.

Like pytest-benchmark's `.benchmarks/`: one file per run, numbered in order,
`0003_20250101T120000Z_ab12cd3.json` (number, UTC time, short commit, `-dirty` when tracked
files had changes), each a full results document with its machine and commit info. The
folder lies beside the baselines directory (options.JoulesOptions.autosave_dir); the CLI
finds it as the nearest `.joules/` from the working directory up to the repository root, or
takes `--storage DIR`.

A run is named by its number (`3`, `0003`), `last`, or `last~N` (N runs before the last).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..paths import RUNS_DIR, nearest_dir

_NAME = re.compile(r"^(\d{4,})_[^/]*\.json$")
_SPEC = re.compile(r"^(?:(\d+)|last(?:~(\d+))?)$")


@dataclass(frozen=True)
class SavedRun:
    number: int
    path: Path

    @property
    def id(self) -> str:
        return f"{self.number:04d}"


def find_storage(start: Path | None = None) -> Path | None:
    """The nearest existing `.joules/` from `start` (the working directory) up to the repository root."""
    return nearest_dir((start or Path.cwd()).resolve(), RUNS_DIR)


def list_runs(storage: Path) -> list[SavedRun]:
    """The saved runs in number order ([] for an empty or missing folder)."""
    try:
        names = os.listdir(storage)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataError(f"{storage}: cannot list the saved runs: {exc.strerror or exc}") from None
    runs = [SavedRun(int(m.group(1)), storage / name) for name in names if (m := _NAME.match(name))]
    return sorted(runs, key=lambda r: (r.number, r.path.name))


def file_name(number: int, document: dict[str, Any]) -> str:
    created = str(document.get("created") or "")
    stamp = re.sub(r"[^0-9TZ]", "", created.replace("+00:00", "Z")) or "notime"
    git = (document.get("machine") or {}).get("git") or {}
    commit = str(git.get("commit") or "nogit")[:7] + ("-dirty" if git.get("dirty") else "")
    return f"{number:04d}_{stamp}_{commit}.json"


def save_run(storage: Path, document: dict[str, Any]) -> SavedRun:
    """Write `document` as the next numbered run; the number is taken under a lock so two sessions
    saving at once get two numbers."""
    from .directories import locked as _locked
    from .results import atomic_write_json

    try:
        storage.mkdir(parents=True, exist_ok=True)
        with _locked(storage):
            runs = list_runs(storage)
            number = (runs[-1].number + 1) if runs else 1
            path = storage / file_name(number, document)
            atomic_write_json(path, document)
    except OSError as exc:
        raise DataError(f"--joules-autosave {storage}: cannot save the run: {exc.strerror or exc}") from None
    return SavedRun(number, path)


def is_run_spec(text: str) -> bool:
    return bool(_SPEC.match(text.strip()))


def resolve(spec: str, storage: Path | None) -> Path:
    """The file of run `spec` (`3`, `0003`, `last`, `last~1`); DataError naming the fix when absent."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise DataError(f"{spec!r} is not a run id: give a number such as 0003, last or last~1")
    if storage is None:
        raise DataError(f"run {spec}: no {RUNS_DIR}/ folder from here up to the repository root; save runs with "
                        f"`pytest --joules --joules-autosave`, or point --storage at the folder")
    runs = list_runs(storage)
    if not runs:
        raise DataError(f"run {spec}: {storage} holds no saved runs; save one with `pytest --joules --joules-autosave`")
    if match.group(1) is not None:
        number = int(match.group(1))
        found = [r for r in runs if r.number == number]
        if not found:
            raise DataError(f"run {spec}: not in {storage} (runs {runs[0].id} to {runs[-1].id}; `joules list` shows them)")
        return found[-1].path
    back = int(match.group(2) or 0)
    if back >= len(runs):
        raise DataError(f"run {spec}: {storage} holds only {len(runs)} run(s); `joules list` shows them")
    return runs[-1 - back].path


def results_path(arg: str, storage: Path | None) -> Path:
    """A command-line argument that names a results file or a saved run: an existing file wins."""
    if os.path.exists(arg) or not is_run_spec(arg):
        return Path(arg)
    return resolve(arg, storage)


def add_storage_argument(parser: Any) -> None:
    parser.add_argument("--storage", metavar="DIR", default=None,
                        help=f"folder of saved runs (default: the nearest {RUNS_DIR}/ up to the repository root)")


def require_storage(args: Any) -> Path:
    """The runs folder for `joules list` / `history`: --storage, or the nearest one; DataError saying
    how to make one when there is none."""
    storage = storage_from(args)
    if storage is None:
        raise DataError(f"no {RUNS_DIR}/ folder from here up to the repository root; save runs with "
                        "`pytest --joules --joules-autosave`, or point --storage at the folder")
    return storage


def storage_from(args: Any) -> Path | None:
    if getattr(args, "storage", None):
        path = Path(args.storage)
        if not path.is_dir():
            raise DataError(f"--storage {path}: not a directory; give the {RUNS_DIR}/ folder that "
                            "`pytest --joules --joules-autosave` writes")
        return path
    return find_storage()
