"""`joules doctor`'s look at NVML: whether it works here, why not, and each GPU it sees (the GPU
survey, pytest_joules/probes.py), which is also the nvml meter's own doctor line."""

from __future__ import annotations

from typing import Any, Callable

from ...errors import MeterUnavailable
from ..base import GpuSurvey
from .api import NOT_SUPPORTED, NvmlApi, NvmlCallError, open_api, quiet_shutdown


def probe(api_factory: Callable[[], Any] = NvmlApi, *, gpus: GpuSurvey | None = None) -> GpuSurvey:
    """For `joules doctor`: whether NVML works, why not, and each GPU it sees. The meter is usable
    exactly when a GPU can be metered: given the survey doctor already took (`gpus`), its line is
    that survey's; alone, it takes one."""
    if gpus is not None:
        return gpus
    return _survey(api_factory)


def _survey(api_factory: Callable[[], Any]) -> GpuSurvey:
    try:
        api = open_api(api_factory)
    except MeterUnavailable as exc:
        return GpuSurvey(False, str(exc), [])
    gpus: list[dict[str, Any]] = []
    try:
        for i in range(api.device_count()):
            entry: dict[str, Any] = {"index": i}
            try:
                handle = api.handle_by_index(i)
                entry.update(name=api.name(handle), uuid=api.uuid(handle))
                try:
                    entry["mig"] = api.mig_enabled(handle)
                except NvmlCallError:
                    entry["mig"] = False
                try:
                    entry["power_limit_w"] = api.power_limit_mw(handle) / 1000.0
                except NvmlCallError:
                    entry["power_limit_w"] = None
                try:
                    api.energy_mj(handle)
                    entry["energy"] = "counter"
                except NvmlCallError as exc:
                    entry["energy"] = "power sampling" if exc.code == NOT_SUPPORTED else None
                    entry["reason"] = f"energy counter: {exc}"
                entry["usable"] = entry["energy"] is not None and not entry["mig"]
                if entry["mig"]:
                    entry["reason"] = "MIG enabled: NVML cannot measure MIG slices"
            except NvmlCallError as exc:
                entry.update(usable=False, reason=str(exc))
            gpus.append(entry)
    except NvmlCallError as exc:
        return GpuSurvey(False, f"NVML failed: {exc}", gpus)
    finally:
        quiet_shutdown(api)
    if not gpus:
        return GpuSurvey(False, "NVML works but sees no GPU", gpus)
    usable = [g for g in gpus if g.get("usable")]
    if not usable:
        return GpuSurvey(False, "no GPU here can be metered (see the GPU lines)", gpus)
    return GpuSurvey(True, f"{len(usable)} of {len(gpus)} GPU(s) can be metered", gpus)
