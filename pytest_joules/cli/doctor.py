"""`joules doctor`: which engines, meters and GPUs are usable here, and why not, one line each.

Probes are cheap: package metadata, NVML init, sysfs permissions. No model is loaded. A module
that wants a precise line exposes ``probe() -> (usable: bool, reason: str)``; one without a probe
is reported as registered but not probed.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import ConfigError


@dataclass
class Check:
    kind: str  # "engine", "meter" or "gpu"
    name: str
    usable: bool | None  # None: registered, not probed
    reason: str


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor",
        help="show which engines, meters and GPUs are usable here, and why not",
        description="List every registered engine and meter and every GPU NVML sees, each usable "
        "or not with the reason in one line. Loads no model.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--require", action="append", default=[], metavar="NAME",
                   help="exit 1 unless this engine or meter (or 'gpu') is usable; repeatable")
    return p


def _module_for(kind: str, name: str, factory: Callable[..., Any]) -> str:
    # The built-ins are lazy factories living in pytest_joules.builtin; their modules follow
    # the naming rule of the registry. Third-party factories live in their own module.
    if getattr(factory, "__module__", None) == "pytest_joules.builtin":
        return f"pytest_joules.{kind}s.{name}"
    return getattr(factory, "__module__", "") or ""


def _probe(kind: str, name: str, factory: Callable[..., Any], nvml_result: tuple[bool, str, list]) -> Check:
    module_name = _module_for(kind, name, factory)
    if kind == "meter" and module_name == "pytest_joules.meters.nvml":
        return Check(kind, name, nvml_result[0], nvml_result[1])
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken plugin must not break the doctor
        return Check(kind, name, False, f"cannot import {module_name}: {type(exc).__name__}: {exc}")
    probe = getattr(module, "probe", None)
    if probe is None:
        if name == "sim":
            return Check(kind, name, True, "the SIMULATED H100 (a physical model); always available")
        return Check(kind, name, None, f"registered by {module_name}; it offers no probe")
    try:
        usable, reason = probe()[:2]
    except Exception as exc:
        return Check(kind, name, False, f"probe failed: {type(exc).__name__}: {exc}")
    if module_name == "pytest_joules.engines.trtllm" and usable and not nvml_result[0]:
        return Check(kind, name, False, f"{reason}, but no GPU is usable here ({nvml_result[1]})")
    return Check(kind, name, bool(usable), str(reason))


def _gpu_checks(nvml_result: tuple[bool, str, list]) -> list[Check]:
    ok, reason, gpus = nvml_result
    if not gpus:
        return [Check("gpu", "(none)", False, reason)]
    checks = []
    for g in gpus:
        label = f"{g.get('index')}: {g.get('name', '?')}"
        if g.get("usable"):
            limit = g.get("power_limit_w")
            text = f"{g.get('uuid')}, energy by {g.get('energy')}" + (f", power limit {limit:g} W" if limit else "")
        else:
            text = g.get("reason", "not usable")
        checks.append(Check("gpu", label, bool(g.get("usable")), text))
    return checks


def collect() -> list[Check]:
    from .. import registry
    from ..meters import nvml

    try:
        nvml_result = nvml.probe()
    except Exception as exc:  # nvidia-ml-py missing or broken
        nvml_result = (False, f"NVML probe failed: {type(exc).__name__}: {exc}", [])
    checks = [_probe("engine", n, f, nvml_result) for n, f in sorted(registry.engine_factories().items())]
    checks += [_probe("meter", n, f, nvml_result) for n, f in sorted(registry.meter_factories().items())]
    return checks + _gpu_checks(nvml_result)


def _word(usable: bool | None) -> str:
    return {True: "usable", False: "unusable", None: "unknown"}[usable]


def run(args: argparse.Namespace) -> int:
    checks = collect()
    failed = []
    for wanted in args.require:
        if wanted == "gpu":
            if not any(c.usable for c in checks if c.kind == "gpu"):
                failed.append("gpu")
            continue
        matches = [c for c in checks if c.name == wanted and c.kind != "gpu"]
        if not matches:
            known = sorted({c.name for c in checks if c.kind != "gpu"})
            raise ConfigError(f"--require {wanted!r}: no such engine or meter; known: {', '.join(known)}, gpu")
        if any(c.usable is False for c in matches):
            failed.append(wanted)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "required_unusable": failed}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for kind, title in (("engine", "engines"), ("meter", "meters"), ("gpu", "GPUs (NVML)")):
            print(f"{title}:")
            for c in (c for c in checks if c.kind == kind):
                print(f"  {c.name:<{width}}  {_word(c.usable):<8}  {c.reason}")
        for name in failed:
            print(f"required but unusable: {name}")
    return 1 if failed else 0
