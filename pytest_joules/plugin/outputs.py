"""The session's output files, checked before anything is measured.

`--joules-json` and the exporters are written at the session's end: a path that cannot be one
(a directory, a file where a directory should be) was reported only after every measurement, and
a path inside the baseline store replaced a baseline file with a results file (exit 0; the next
run failed on it). Both are usage errors at the start now, naming the option and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def inside(path: Path, directory: Path) -> bool:
    """Whether `path` (through symlinks) lies in `directory` (through symlinks)."""
    target, root = os.path.realpath(path), os.path.realpath(directory)
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def problem(path: Path) -> str | None:
    """Why nothing can be written at `path` (None when it can): checked without creating anything."""
    if path.is_dir():
        return f"is a directory; give a file name such as {path / 'results.json'}"
    if os.path.lexists(path):
        return None if os.access(path, os.W_OK) or not path.exists() else "is not writable"
    parent = next((p for p in path.parents if os.path.lexists(p)), None)
    if parent is None:
        return None
    if not parent.is_dir():
        return f"cannot write there: {parent} is {'a dangling link' if not parent.exists() else 'a file, not a directory'}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write there: {parent} is not writable"
    return None


def check(options: Any) -> None:
    """pytest.UsageError for an output path of the session that cannot be written as asked."""
    for flag, path in (("--joules-json", options.json), ("--joules-export-gab", options.export_gab),
                       ("--joules-export-bmf", options.export_bmf)):
        if path is None:
            continue
        if inside(path, options.baselines):
            raise pytest.UsageError(
                f"{flag} {path}: is inside the baseline store {options.baselines}, where a results file would "
                "replace (or be read as) a baseline file; write it outside the store")
        why = problem(Path(path))
        if why:
            raise pytest.UsageError(f"{flag} {path}: {why}")
