"""Where pytest-joules looks for its folders (ground floor: stdlib only).

The default baseline store and the saved runs are found by walking up from a directory to the
top of its repository: one walk, used by both, so they always agree on where a repository ends.
"""

from __future__ import annotations

import os
from pathlib import Path

#: what marks the top of a repository, where every upward search stops
REPOSITORY_MARKERS = (".git", ".hg", ".svn")
#: saved runs (`--joules-autosave`), beside the baselines directory
RUNS_DIR = ".joules"
#: the default baseline store's folder name
BASELINES_DIR = "baselines"


def upward(start: Path) -> list[Path]:
    """`start` and its parents up to and including the repository's top; every parent when
    `start` is in no repository."""
    chain = [start, *start.parents]
    for i, directory in enumerate(chain):
        if any(os.path.exists(directory / marker) for marker in REPOSITORY_MARKERS):
            return chain[: i + 1]
    return chain


def repository_top(start: Path) -> Path | None:
    """The nearest directory from `start` up that holds .git, .hg or .svn; None outside a repository."""
    chain = upward(start)
    top = chain[-1]
    return top if any(os.path.exists(top / marker) for marker in REPOSITORY_MARKERS) else None


def nearest_dir(start: Path, name: str) -> Path | None:
    """The nearest existing `<dir>/<name>/` from `start` up to the repository's top."""
    return next((d / name for d in upward(start) if (d / name).is_dir()), None)
