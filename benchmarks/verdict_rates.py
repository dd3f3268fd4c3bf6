"""How often the gate is right on the SIMULATED device with realistic noise.

For each runtime (graphs: Llama-3.1-8B on an H100, the examples' setting; eager: Llama-3.2-1B on
an H200, the H200 data's setting), each rounds mode (fixed 3, auto) and each change (none, a 10%
rise via the simulator's slowdown), it records a baseline in one simulated session and judges a
rerun from another session with another seed, `--reruns` times, through the same code the plugin
runs (measure, rounds rules, verdict). It prints, per cell: the share of REGRESSION / NOISY / PASS
(and IMPROVED) verdicts, the median rounds and the median measured seconds of the rerun.

    python benchmarks/verdict_rates.py [--reruns 500] [--tolerance 0.05] [--json out.json]

Every number here is SIMULATED.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

SETTINGS = {
    "graphs": dict(model="Llama-3.1-8B", gpu="H100-SXM", n_in=512, n_out=256, requests=16),
    "eager": dict(model="Llama-3.2-1B", gpu="H200", n_in=512, n_out=256, requests=16),
}


def _measure(runtime: str, seed: int, slowdown: float, rule: Any, rounds: int) -> Any:
    from pytest_joules import registry
    from pytest_joules.engines.base import EngineSpec
    from pytest_joules.measure import measure
    from pytest_joules.meters.base import MeterSpec
    from pytest_joules.engines.workload import Workload

    s = SETTINGS[runtime]
    engine = registry.make_engine(EngineSpec("sim", model=s["model"], gpu=s["gpu"], options={
        "runtime": runtime, "seed": seed, "slowdown": slowdown}))
    meter = registry.make_meter(MeterSpec("sim"), engine)
    workload = Workload(s["n_in"], s["n_out"], requests=s["requests"], seed=seed)
    return measure(engine, meter, workload, rounds=rounds, warmup=1, rule=rule)


def one(args: tuple[str, str, float, int, float, float]) -> dict[str, Any]:
    """Record a baseline (seed 2i) and judge a rerun (seed 2i + 1): what the plugin would say."""
    from pytest_joules.measure import stopping as R
    from pytest_joules.judge import verdict as V

    runtime, mode, slowdown, i, tolerance, budget = args
    auto = mode == "auto"
    rule = R.Precise(tolerance=tolerance, max_seconds=budget) if auto else None
    base = _measure(runtime, 2 * i, 1.0, rule, 3)
    rule = R.Compare(tolerance=tolerance, max_seconds=budget, baseline=base.round_values) if auto else None
    now = _measure(runtime, 2 * i + 1, slowdown, rule, 3)
    verdict = V.judge(now.round_values, base.round_values, tolerance, confidence=now.confidence)
    return {
        "status": verdict.status,
        "rounds": len(now.rounds),
        "seconds": sum(r.seconds for r in now.rounds),
        "baseline_rounds": len(base.rounds),
        "delta": verdict.delta,
    }


def cell(runtime: str, mode: str, change: float, reruns: int, tolerance: float, budget: float, pool: Any) -> dict[str, Any]:
    jobs = [(runtime, mode, 1.0 + change, i, tolerance, budget) for i in range(reruns)]
    out = list(pool.map(one, jobs, chunksize=max(1, reruns // 32)))
    share = lambda s: sum(o["status"] == s for o in out) / len(out)  # noqa: E731
    return {
        "runtime": runtime, "rounds_mode": mode, "change": change, "reruns": reruns,
        "regression": share("regression"), "noisy": share("noisy"), "pass": share("pass"), "improved": share("improved"),
        "median_rounds": statistics.median(o["rounds"] for o in out),
        "median_seconds": statistics.median(o["seconds"] for o in out),
        "median_baseline_rounds": statistics.median(o["baseline_rounds"] for o in out),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reruns", type=int, default=500)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--max-seconds", type=float, default=60.0, help="per-test budget of auto (default 60)")
    p.add_argument("--runtime", choices=sorted(SETTINGS), action="append", help="default: both")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the table as JSON here")
    args = p.parse_args(argv)
    rows = []
    started = time.perf_counter()
    print(f"SIMULATED: {args.reruns} reruns per cell, tolerance {args.tolerance:.0%}, auto budget {args.max_seconds:g} s")
    print(f"{'runtime':8} {'rounds':6} {'change':>6}  {'regress':>8} {'noisy':>7} {'pass':>7} {'improv':>7}  "
          f"{'rounds':>6} {'seconds':>8} {'base rounds':>11}")
    with ProcessPoolExecutor(args.workers) as pool:
        for runtime in args.runtime or list(SETTINGS):
            for mode in ("3", "auto"):
                for change in (0.0, 0.10):
                    r = cell(runtime, mode, change, args.reruns, args.tolerance, args.max_seconds, pool)
                    rows.append(r)
                    print(f"{runtime:8} {mode:6} {change:>+6.0%}  {r['regression']:>8.1%} {r['noisy']:>7.1%} "
                          f"{r['pass']:>7.1%} {r['improved']:>7.1%}  {r['median_rounds']:>6g} "
                          f"{r['median_seconds']:>8.1f} {r['median_baseline_rounds']:>11g}", flush=True)
    print(f"({time.perf_counter() - started:.0f} s on this machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simulated": True, "tolerance": args.tolerance, "max_seconds": args.max_seconds,
                       "settings": SETTINGS, "cells": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
