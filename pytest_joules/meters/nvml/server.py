"""The GPUs of a server the plugin did not start (the openai engine), for the nvml meter.

`devices=0,1` (NVML indices) or `devices=GPU-aa,GPU-bb` names them. Where NVML lists each GPU's
compute processes, the server's processes (found by the engine from its listening port, see
engines/host.py) must be on every metered GPU and on no other: a tensor-parallel server is
metered whole, and an idle GPU's energy is not its work. Its processes are then ours for the
"another process used the GPU" check.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import ConfigError


def device_list(value: Any) -> tuple[str, ...]:
    """devices=0,1 / devices=GPU-aa,GPU-bb (a lone index arrives as an int) -> the entries; () if not a list."""
    if isinstance(value, bool):
        return ()
    parts = [p.strip() for p in str(value).split(",")]
    if not parts or not all(p.isdigit() or p.startswith("GPU-") for p in parts):
        return ()
    return tuple(parts)


def server_pids(engine: Any) -> set[int]:
    """The processes of a server the engine measures from outside (the openai engine), if any."""
    get = getattr(engine, "server_pids", None)
    try:
        return set(get()) if callable(get) else set()
    except Exception:  # /proc unreadable: nothing to check against
        return set()


def with_server(pids: Callable[[], set[int]], server: set[int]) -> Callable[[], set[int]]:
    """Our processes and the server's: the server on the metered GPU is the work, not another tenant."""
    return lambda: pids() | server


def check_server_gpus(api: Any, engine: Any, metered: list[Any], server: set[int]) -> None:
    """Where NVML lists the processes on each GPU: the server must be on the metered GPUs, and on
    no GPU that is not metered (every GPU of a tensor-parallel group counts)."""
    on: dict[str, bool] = {}
    for index in range(api.device_count()):
        try:
            handle = api.handle_by_index(index)
            on[api.uuid(handle)] = bool(server & set(api.compute_pids(handle)))
        except Exception:  # NvmlCallError: this driver does not say, so nothing can be checked
            return
    labels = {g.label for g in metered}
    idle = [g.label for g in metered if not on.get(g.label, False)]
    missed = [uuid for uuid, used in on.items() if used and uuid not in labels]
    who = f"the server of engine {engine.kind!r} (pids {', '.join(map(str, sorted(server)))})"
    if missed:
        raise ConfigError(f"{who} also runs on GPU(s) {', '.join(missed)}, which are not metered; name every GPU it "
                          "uses with --joules-meter-option devices=... (all of a tensor-parallel group)")
    if idle:
        raise ConfigError(f"{who} does not run on metered GPU(s) {', '.join(idle)}: their energy is not the server's "
                          "work; name only the GPUs it uses with --joules-meter-option devices=... (nvidia-smi lists "
                          "its processes)")
