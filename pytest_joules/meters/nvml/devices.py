"""Which GPUs: CUDA_VISIBLE_DEVICES, CUDA indices, UUIDs and PCI bus ids mapped to NVML handles;
how many GPUs NVML sees; which processes are ours.

NVML ignores CUDA_VISIBLE_DEVICES and numbers GPUs its own way (by PCI bus), so an engine's device
is found by UUID, then PCI bus id, and a bare CUDA index through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...errors import ConfigError, MeterUnavailable
from .api import NvmlApi, open_api, quiet_shutdown

if TYPE_CHECKING:
    from ...engines.base import DeviceRef


def parse_visible(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES "2,3,5,7" or "GPU-aa,GPU-bb" -> its entries (blank entries dropped)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def visible_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries, None when unset (all GPUs visible)."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return parse_visible(raw)


def gpu_count(api_factory: Callable[[], Any] = NvmlApi) -> int:
    """GPUs NVML sees; 0 when NVML (the driver or nvidia-ml-py) is not available."""
    try:
        api = open_api(api_factory)
    except Exception:  # no driver, no library: no GPU to hand out
        return 0
    try:
        return api.device_count()
    finally:
        quiet_shutdown(api)

def _mig_error(what: str) -> MeterUnavailable:
    return MeterUnavailable(
        f"{what} is a MIG slice; NVML cannot measure the energy of MIG slices (only the whole GPU, "
        "which includes every tenant); run on a whole GPU"
    )


def resolve_device(api: Any, ref: DeviceRef, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """The NVML handle of one engine device, and how it was found.

    NVML ignores CUDA_VISIBLE_DEVICES and numbers GPUs its own way, so map by UUID, then PCI bus
    id; a bare CUDA index goes through CUDA_VISIBLE_DEVICES.
    """
    if ref.uuid:
        if ref.uuid.startswith("MIG-"):
            raise _mig_error(f"device {ref.uuid}")
        return api.handle_by_uuid(ref.uuid), f"uuid {ref.uuid}"
    if ref.pci_bus_id:
        return api.handle_by_pci_bus_id(ref.pci_bus_id), f"pci bus id {ref.pci_bus_id}"
    if ref.index is None:
        raise ConfigError("the engine reported a GPU without uuid, pci_bus_id or index; the nvml meter cannot find it")
    visible = visible_devices(env)
    if visible is None:
        return api.handle_by_index(ref.index), f"NVML index {ref.index} (CUDA_VISIBLE_DEVICES unset)"
    if ref.index >= len(visible):
        raise ConfigError(
            f"the engine uses CUDA device {ref.index} but CUDA_VISIBLE_DEVICES={','.join(visible)!r} "
            f"lists only {len(visible)}"
        )
    entry = visible[ref.index]
    if entry.startswith("MIG-"):
        raise _mig_error(f"CUDA device {ref.index} ({entry})")
    if entry.startswith("GPU-"):
        return api.handle_by_uuid(entry), f"uuid {entry} from CUDA_VISIBLE_DEVICES"
    try:
        nvml_index = int(entry)
    except ValueError:
        raise ConfigError(
            f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index nor a GPU-/MIG- UUID"
        ) from None
    how = f"NVML index {nvml_index} from CUDA_VISIBLE_DEVICES"
    order = (env if env is not None else os.environ).get("CUDA_DEVICE_ORDER")
    if order != "PCI_BUS_ID":
        # CUDA numbers fastest-first, NVML by PCI bus; they agree only on identical GPUs.
        how += " (set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA and NVML agree on numbering)"
    return api.handle_by_index(nvml_index), how


def own_pids() -> set[int]:
    """This process and its descendants (engines such as TRT-LLM run workers in child processes)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {me}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # the command name may hold spaces; fields after the last ')' are fixed
                fields = fh.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    mine = {me}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return mine
