"""Where and from what code a run was measured: host, CPU, Python, package versions, git commit.

Every results JSON carries this under "machine" (as pytest-benchmark's saved runs carry
machine_info and commit_info), so a number read months later says what produced it. Stdlib
only; git is asked with a short timeout, and its absence is a fact to record, not an error.
Heavy packages are reported only when the run already imported them: looking up a version
must not load torch.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

#: packages whose version moves joules per token, reported when already imported
OPTIONAL_PACKAGES = ("pytest", "torch", "transformers", "tensorrt_llm")

#: seconds git may take: a hung network filesystem must not hold up writing the results
GIT_TIMEOUT_S = 2.0


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty or just 'x86_64' on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_versions() -> dict[str, str]:
    """pytest-joules always; the others only if this process already imported them."""
    from .. import __version__

    versions = {"pytest-joules": __version__}
    for name in OPTIONAL_PACKAGES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is not None:
            versions[name] = str(version)
    return versions


def git_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """{"commit", "branch", "dirty"} of the repository around `cwd`; None outside one or without git.

    One `git status` call gives all three. Dirty means tracked files differ from the commit
    (untracked files are left out: build outputs and results files would make every run dirty).
    """
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = branch = None
    dirty = False
    for line in out.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split()[2]
        elif line.startswith("# branch.head "):
            branch = line.split()[2]
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None or commit == "(initial)":
        return None
    return {"commit": commit, "branch": None if branch == "(detached)" else branch, "dirty": dirty}


def machine_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The "machine" object of a results JSON."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "git": git_info(Path(cwd) if cwd is not None else None),
    }
