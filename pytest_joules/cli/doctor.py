"""`joules doctor`: which engines, meters and GPUs are usable here, and why not, one line each.

Probes are cheap: package metadata, NVML init, sysfs permissions. No model is loaded. The checks
come from pytest_joules/probes.py: each registered engine's and meter's own `probe`, and NVML's
look at the GPUs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from ..errors import ConfigError
from ..probes import collect


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
