"""Where baseline keys and the default store are anchored, whatever pytest took for its rootdir.

pytest chooses its rootdir and ini file before any plugin is loaded, from the command line's
free arguments. Our options are not known then, so the value of one written after a space
(`--joules-baselines /tmp/store`, `--joules-json /tmp/out.json`, `--joules-model /engines/x`)
counts as a test path when that path exists, and moves the rootdir: to `/tmp`, or to `/`, where
no ini file is found. Baseline keys and the default store followed the rootdir, so every test read
"new" and a regression passed; with `=` the same run failed as it should.

So the session works out the setup pytest would have chosen without those values (pytest's own
`determine_setup`, given the free arguments as parsed with our options known), and anchors to it:

- keys are test paths relative to the anchor, the same for `--opt value` and `--opt=value`;
- the anchor is the ini file's directory; without one, the directory of the nearest existing
  `baselines/` from the rootdir up to the repository's top, else the repository's top, else the
  rootdir (so keys match from any subdirectory, `--joules-baselines=../baselines` from tests/ too);
- when the values moved pytest's ini file (it read another one, or none), the session is refused
  with one line naming the option and the fix (`=`): pytest read the wrong configuration, which
  no plugin can undo.
"""

from __future__ import annotations

import inspect
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..paths import BASELINES_DIR, nearest_dir, repository_top


@dataclass(frozen=True)
class Anchor:
    #: baseline keys are test paths relative to this directory
    root: Path
    #: the default store (no --joules-baselines or ini key)
    store: Path
    #: the option values pytest took as test paths ("--joules-json /tmp/out.json")
    taken: tuple[str, ...] = ()


def _exists(base: Path, value: str) -> bool:
    try:
        return (base / value).exists()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def taken_as_paths(config: pytest.Config, flags: set[str]) -> list[str]:
    """Our options written `--flag value` whose value exists as a path: pytest's rootdir search
    counted each as a test path."""
    base = Path(config.invocation_params.dir)
    args = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + [str(a) for a in config.invocation_params.args]
    found = []
    for flag, value in zip(args, args[1:]):
        if flag in flags and not value.startswith("-") and _exists(base, value):
            found.append(f"{flag} {value}")
    return found


def _setup(config: pytest.Config, args: list[str]) -> tuple[Path, Path | None]:
    """(rootdir, ini file) as pytest chooses them for these free arguments."""
    from _pytest.config.findpaths import determine_setup

    ns = config.known_args_namespace
    given: dict[str, Any] = {
        "inifile": getattr(ns, "inifilename", None), "args": args,
        "rootdir_cmd_arg": getattr(ns, "rootdir", None) or None, "invocation_dir": Path(config.invocation_params.dir),
        "override_ini": getattr(ns, "override_ini", None), "config": config,
    }
    params = inspect.signature(determine_setup).parameters
    result = determine_setup(**{k: v for k, v in given.items() if k in params})
    return Path(result[0]), (Path(result[1]) if result[1] else None)


def find(config: pytest.Config, flags: set[str]) -> Anchor:
    """The session's anchor; pytest.UsageError when an option's value moved pytest's ini file."""
    taken = taken_as_paths(config, flags)
    free = [str(a) for a in (getattr(config.option, "file_or_dir", None) or [])]
    try:
        rootdir, inipath = _setup(config, free) if taken else (Path(config.rootpath), config.inipath)
    except Exception:  # pytest's internals moved: keep what pytest chose
        rootdir, inipath = Path(config.rootpath), config.inipath
    if taken and inipath != config.inipath:
        read = f"read {config.inipath}" if config.inipath else "read no ini file"
        shown = ", ".join(taken)
        fix = ", ".join("=".join(t.split(" ", 1)) for t in taken)
        raise pytest.UsageError(
            f"pytest took the value of {shown} for a test path when it chose its rootdir, so it {read} "
            f"instead of {inipath or 'none'} (and baseline keys would move with it); write {fix} (with '=')")
    if inipath is not None and inipath.is_file():  # `-c /dev/null` asks for no configuration: no anchor
        root = inipath.parent
        return Anchor(root, root / BASELINES_DIR, tuple(taken))
    store = default_baselines(rootdir, has_ini=False)
    return Anchor(store.parent, store, tuple(taken))


def default_baselines(rootdir: Path, has_ini: bool) -> Path:
    """The store when no --joules-baselines (or ini key) says where.

    With an ini file pytest's rootdir is that file's directory, the same from wherever pytest
    runs: `<rootdir>/baselines`. Without one, rootdir is the common ancestor of the arguments and
    the invocation directory, so `pytest` from a subdirectory gets another rootdir; then the nearest
    existing `baselines/` from rootdir up to the repository root is taken, and with none there a
    new store goes to the repository root (rootdir outside a repository).
    """
    top = None if has_ini else repository_top(rootdir)
    if top is None:
        return rootdir / BASELINES_DIR
    return nearest_dir(rootdir, BASELINES_DIR) or top / BASELINES_DIR
