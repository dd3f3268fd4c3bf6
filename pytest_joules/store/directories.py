"""The store's directories: their lock, the .gitignore and stale temporary files each one gets, and
what is wrong with one, said so that the fix is the right one:
a device directory that is a file or a dangling link (read as absent, it would make every test
"new"), and a write that failed for a full disk, a quota, a read-only file system or permissions."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .results import temp_prefix


def check_directory(directory: Path) -> None:
    """DataError when a device directory exists but is no directory: read as absent, it would make
    every test "new" and pass. Git checks a symlink out as a small file holding its target where
    symlinks are off (Git on Windows by default)."""
    if not os.path.lexists(directory) or directory.is_dir():
        return
    if os.path.islink(directory):
        raise DataError(f"{directory}: a symlink to {os.readlink(directory)}, which does not exist; restore its "
                        "target or replace the link with the device's baseline directory")
    hint = ""
    try:
        text = directory.read_text(encoding="utf-8", errors="replace")[:200].strip()
    except OSError:
        text = ""
    if text and "\n" not in text and len(text) < 200:
        hint = (f" (it holds {text!r}: a symlink that git checked out as a file, as Git on Windows does without "
                "core.symlinks; enable symlinks and check it out again, or replace it with the directory)")
    raise DataError(f"{directory}: is a file, not a directory of baselines{hint}; "
                    "the tests of this device cannot be compared with their baselines")


def fix_for(exc: OSError, path: Path) -> str:
    """What to do about a write that failed: a full disk is not a permission problem."""
    import errno

    elsewhere = "or point --joules-baselines at another disk"
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {path.parent} is full: free space on it, {elsewhere}"
    if exc.errno == getattr(errno, "EDQUOT", -1):
        return f"your disk quota for {path.parent} is used up: free some of it, {elsewhere}"
    if exc.errno == errno.EROFS:
        return f"{path.parent} is on a read-only file system: point --joules-baselines at a writable directory"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"a part of {path.parent} is a file, not a directory: point --joules-baselines at a writable directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"make {path.parent} writable or point --joules-baselines at a writable directory"
    return f"check {path.parent}, or point --joules-baselines at another directory"


#: written into each device directory the store creates (never over one that exists)
GITIGNORE = (
    "# pytest-joules: temporary files of interrupted writes, and baseline files a fingerprint\n"
    "# change replaced (kept for you to compare; not baselines)\n"
    ".*.tmp\n"
    "*.bak\n"
    ".joules.lock\n"
)


#: the lock file of a store directory (and of `.joules/`), held across read-merge-write
LOCK_NAME = ".joules.lock"
#: how long a writer waits for another process's lock before saying which file holds it
LOCK_TIMEOUT_S = 120.0


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
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


def remove_stale_temps(target: Path) -> list[Path]:
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


def ensure_gitignore(directory: Path) -> None:
    ignore = directory / ".gitignore"
    if not os.path.lexists(ignore):
        tmp = directory / ".gitignore.joules-tmp"  # under the lock: no other writer of this name
        try:
            tmp.write_text(GITIGNORE, encoding="utf-8")
            os.replace(tmp, ignore)
        except BaseException:  # a full disk: leave no empty file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
