"""Which processes on this host serve a TCP port, and their children (Linux /proc; stdlib only).

The `openai` engine measures a server it did not start: to check that the GPUs being metered are
the ones the server runs on, and to not count the server as "another process on the GPU", it
needs the server's process ids. A server listening on 127.0.0.1:8000 is found through the socket
inode in /proc/net/tcp{,6} and the /proc/PID/fd link that holds it; its engine and worker
processes (vLLM's EngineCore, tensor-parallel workers) are its descendants. Sockets of another
user's processes cannot be read without privileges: then nothing is found, and the checks that
need it are skipped (the report says so).
"""

from __future__ import annotations

import os

LISTEN = "0A"  # TCP state in /proc/net/tcp


def _listening_inodes(port: int, proc: str = "/proc") -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", name)) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def listening_pids(port: int, proc: str = "/proc") -> set[int]:
    """Processes holding a listening socket on `port` (empty when none can be seen)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return set()
    wanted = {f"socket:[{i}]" for i in inodes}
    found: set[int] = set()
    for entry in _pids(proc):
        fd_dir = os.path.join(proc, str(entry), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    found.add(entry)
                    break
            except OSError:
                continue
    return found


def _pids(proc: str) -> list[int]:
    try:
        return [int(e) for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return []


def parents(proc: str = "/proc") -> dict[int, int]:
    """pid -> parent pid of every process that can be read."""
    out: dict[int, int] = {}
    for pid in _pids(proc):
        try:
            with open(os.path.join(proc, str(pid), "stat")) as fh:
                # the command name may hold spaces and parentheses; fields after the last ')' are fixed
                out[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def with_descendants(roots: set[int], proc: str = "/proc") -> set[int]:
    """`roots` and every process below them."""
    tree = parents(proc)
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in tree.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def is_local(host: str | None) -> bool:
    """Whether a URL's host is this machine (only then can its processes be found)."""
    return (host or "").strip("[]").lower() in ("127.0.0.1", "localhost", "::1", "0.0.0.0") or \
        (host or "").startswith("127.")
