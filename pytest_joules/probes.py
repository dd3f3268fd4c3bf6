"""Which engines, meters and GPUs are usable here, and why not: one `Check` each, for `joules
doctor` and the validation steps. Cheap: package metadata, NVML init, sysfs permissions; no model.

The module a registered factory lives in may declare ``probe() -> (usable, reason)``
(`meters.base.ProbeResult`); one whose answer depends on a GPU takes NVML's survey, taken once
here, as ``probe(gpus=survey)`` (a `meters.base.GpuSurvey`). A module without a probe is
reported as registered but not probed; a probe that raises, as unusable with the error.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from .meters.base import GpuSurvey


@dataclass
class Check:
    kind: str  # "engine", "meter" or "gpu"
    name: str
    usable: bool | None  # None: registered, not probed
    reason: str


def module_for(kind: str, name: str, factory: Callable[..., Any]) -> str:
    """The module a factory's engine or meter lives in, where its probe is looked for."""
    # The built-ins are lazy factories living in pytest_joules.builtin; their modules follow
    # the naming rule of the registry. Third-party factories live in their own module.
    if getattr(factory, "__module__", None) == "pytest_joules.builtin":
        return f"pytest_joules.{kind}s.{name}"
    return getattr(factory, "__module__", "") or ""


def gpu_survey() -> GpuSurvey:
    """What NVML sees here (the nvml meter's probe, called alone); a failure is its reason."""
    from .meters import nvml

    try:
        return GpuSurvey(*nvml.probe())
    except Exception as exc:  # nvidia-ml-py missing or broken
        return GpuSurvey(False, f"NVML probe failed: {type(exc).__name__}: {exc}", [])


def _takes_gpus(probe: Callable[..., Any]) -> bool:
    try:
        return "gpus" in inspect.signature(probe).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): call it bare
        return False


def probe_one(kind: str, name: str, factory: Callable[..., Any], gpus: GpuSurvey) -> Check:
    module_name = module_for(kind, name, factory)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken plugin must not break the doctor
        return Check(kind, name, False, f"cannot import {module_name}: {type(exc).__name__}: {exc}")
    probe = getattr(module, "probe", None)
    if probe is None:
        return Check(kind, name, None, f"registered by {module_name}; it offers no probe")
    try:
        usable, reason = (probe(gpus=gpus) if _takes_gpus(probe) else probe())[:2]
    except Exception as exc:
        return Check(kind, name, False, f"probe failed: {type(exc).__name__}: {exc}")
    return Check(kind, name, bool(usable), str(reason))


def gpu_checks(gpus: GpuSurvey) -> list[Check]:
    if not gpus.gpus:
        return [Check("gpu", "(none)", False, gpus.reason)]
    checks = []
    for g in gpus.gpus:
        label = f"{g.get('index')}: {g.get('name', '?')}"
        if g.get("usable"):
            limit = g.get("power_limit_w")
            text = f"{g.get('uuid')}, energy by {g.get('energy')}" + (f", power limit {limit:g} W" if limit else "")
        else:
            text = g.get("reason", "not usable")
        checks.append(Check("gpu", label, bool(g.get("usable")), text))
    return checks


def collect() -> list[Check]:
    """Every registered engine, then every meter, then every GPU NVML sees (or why none)."""
    from . import registry

    gpus = gpu_survey()
    checks = [probe_one("engine", n, f, gpus) for n, f in sorted(registry.engine_factories().items())]
    checks += [probe_one("meter", n, f, gpus) for n, f in sorted(registry.meter_factories().items())]
    return checks + gpu_checks(gpus)
