"""How often the gate is right when sessions drift: per test and per session, before and after
the drift model (docs/drift.md), on the SIMULATED device with its realistic noise.

Every rerun is a new session (a new seed: a new per-session power offset and noise) of TESTS
tests, judged test by test through the code the plugin runs (the `auto` rounds rule, the verdict,
the session's end), against baselines from a pool of other sessions:

- before: the rule without drift (stopping.Compare, verdict.judge), a baseline of one session;
- after, no history: the drift model with its prior, a baseline of one session;
- after, history: the drift model, a baseline of BASELINE_SESSIONS sessions and SAVED_RUNS saved
  runs before (their common shifts from rounds measured as a recording measures them), the spread
  estimated from both.

Changes: none; every test of the session dearer (the sim's slowdown: +5%, +10%); one test dearer
(its own slowdown). Columns: false regressions per test and per session (unchanged sessions:
any failing verdict, or a whole-session regression), verdicts of unchanged tests, detection of
each change (share of changed tests called a regression), median rounds and measured seconds per
test (unchanged sessions). The sim's true between-session spread is measured from its devices.

    python benchmarks/drift_rates.py [--reruns 300] [--tests 8] [--pool 300] [--json out.json]

Every number here is SIMULATED.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, not an installed one

SETTINGS = {
    "graphs": dict(model="Llama-3.1-8B", gpu="H100-SXM"),
    "eager": dict(model="Llama-3.2-1B", gpu="H200"),
}
#: the examples' workloads, 16 requests each (the first TESTS of them make a session)
WORKLOADS = [(512, 256), (128, 128), (1024, 64), (2048, 256), (128, 1024), (512, 64), (4096, 256), (2048, 32),
             (2048, 128), (128, 64), (512, 1024), (2048, 1024)]
REQUESTS = 16
BASELINE_SESSIONS = 5
SAVED_RUNS = 20
POOL_SEED, RERUN_SEED = 1_000_000, 2_000_000
CHANGES = [("none", 0.0, "all"), ("+5% all", 0.05, "all"), ("+10% all", 0.10, "all"),
           ("+5% one", 0.05, "one"), ("+10% one", 0.10, "one")]
VARIANTS = ("before", "no history", "history")


class Stream:
    """The rounds of one test in one simulated session, measured as far as asked (the same code
    path as measure(): label, warm-up, then one metered window per round)."""

    def __init__(self, runtime: str, seed: int, index: int, slowdown: float) -> None:
        from pytest_joules import registry
        from pytest_joules.engines.base import EngineSpec
        from pytest_joules.engines.workload import Workload
        from pytest_joules.meters.base import MeterSpec

        s = SETTINGS[runtime]
        self.engine = registry.make_engine(EngineSpec("sim", model=s["model"], gpu=s["gpu"], options={
            "runtime": runtime, "seed": seed, "slowdown": slowdown}))
        self.meter = registry.make_meter(MeterSpec("sim"), self.engine)
        n_in, n_out = WORKLOADS[index]
        self.workload = Workload(n_in, n_out, requests=REQUESTS, seed=seed)
        self.engine.begin_measurement(f"test_{index}")
        self.engine.run(self.workload)  # warm-up
        self.rounds: list[tuple[float, float]] = []  # (J/output-token, seconds)

    def take(self, n: int) -> list[tuple[float, float]]:
        from pytest_joules.measure.path import run_round

        while len(self.rounds) < n:
            r = run_round(self.engine, self.meter, self.workload, self.meter.min_window_s)
            self.rounds.append((r.j_per_out_token, r.seconds))  # type: ignore[arg-type]
        return self.rounds[:n]

    def run(self, rule: Any) -> list[tuple[float, float]]:
        """The rounds the rule stops at (measure()'s loop)."""
        n, spent = 0, 0.0
        while True:
            n += 1
            got = self.take(n)
            spent += got[-1][1]
            if rule.stop([v for v, _ in got], n, spent):
                return got


_POOLS: dict[tuple[str, int, int], list[list[Stream]]] = {}


def _pool(runtime: str, size: int, tests: int) -> list[list[Stream]]:
    """The sessions baselines and saved runs come from: built once per worker process, and their
    rounds measured as far as any rerun asked."""
    key = (runtime, size, tests)
    if key not in _POOLS:
        _POOLS.clear()
        _POOLS[key] = [[Stream(runtime, POOL_SEED + j, i, 1.0) for i in range(tests)] for j in range(size)]
    return _POOLS[key]


def _baseline(pool: list[list[Stream]], j: int, i: int, tolerance: float, budget: float) -> list[float]:
    from pytest_joules.measure.stopping import Precise

    return [v for v, _ in pool[j][i].run(Precise(tolerance=tolerance, max_seconds=budget))]


def _session(streams: list[Stream], variant: str, sessions: list[list[list[float]]], spread: Any,
             tolerance: float, budget: float) -> dict[str, Any]:
    """Judge one session's tests in order; the final verdicts, rounds, seconds, session status."""
    from pytest_joules.judge import drift as D
    from pytest_joules.judge import verdict as V
    from pytest_joules.judge.drift_session import Item, finish
    from pytest_joules.measure.drift_rule import CompareInSession
    from pytest_joules.measure.stopping import Compare

    out: dict[str, Any] = {"verdicts": [], "rounds": [], "seconds": [], "session": None}
    items, changes = [], []
    for i, stream in enumerate(streams):
        base = sessions[i]
        if variant == "before":
            rule = Compare(tolerance=tolerance, max_seconds=budget, baseline=base[0])
            got = stream.run(rule)
            values = [v for v, _ in got]
            out["verdicts"].append(V.judge(values, base[0], tolerance, confidence=rule.confidence).status)
        else:
            shift = D.common_shift(changes)
            rule = CompareInSession(tolerance=tolerance, max_seconds=budget, sessions=base, spread=spread, shift=shift)
            got = stream.run(rule)
            values = [v for v, _ in got]
            verdict, change = D.judge_rounds(values, base, tolerance, spread, shift, confidence=rule.confidence)
            out["verdicts"].append(verdict)
            if change is not None:
                changes.append(change)
                items.append(Item(str(i), "frame", change, verdict, tolerance, rule.confidence))
        out["rounds"].append(len(got))
        out["seconds"].append(sum(s for _, s in got))
    if variant != "before":
        result = finish(items, spread, tolerance)
        out["verdicts"] = [result.verdicts.get(str(i), v).status for i, v in enumerate(out["verdicts"])]
        out["session"] = result.main.status if result.main else None
    return out


def _history_spread(pool: list[list[Stream]], picks: list[int], sessions: list[list[list[float]]],
                    tolerance: float, budget: float) -> Any:
    """The spread the plugin would estimate: the baseline's sessions, and the saved runs' shifts
    (each run's tests measured as a recording measures them, against the baseline)."""
    from pytest_joules.judge import drift as D
    from pytest_joules.judge import drift_history as H

    def mean_var(s: list[float]) -> tuple[float, float]:
        logs = [math.log(v) for v in s]
        return statistics.fmean(logs), (statistics.variance(logs) / len(logs) if len(logs) > 1 else 0.0)

    tests = [{str(k): mean_var(s) for k, s in enumerate(per_test)} for per_test in sessions]
    runs = []
    for j in picks:
        changes = [D.measure_change(_baseline(pool, j, i, tolerance, budget), sessions[i]) for i in range(len(sessions))]
        shift = D.common_shift([c for c in changes if c is not None])
        if shift is not None:
            runs.append(("frame", shift.value, shift.var))
    return H.posterior([H.from_sessions(tests), H.from_runs(runs)])


def one(args: tuple[str, list[int], int, int, list[float], float]) -> list[dict[str, Any]]:
    """Every cell's outcome for the reruns `indices` of one runtime."""
    import numpy as np
    from pytest_joules.judge import drift as D

    runtime, indices, tests, pool_size, tolerances, budget = args
    pool = _pool(runtime, pool_size, tests)
    rows = []
    for r in indices:
        picks = [int(p) for p in np.random.default_rng([r, 17]).permutation(pool_size)[:BASELINE_SESSIONS + SAVED_RUNS]]
        seed = RERUN_SEED + r
        plain = [Stream(runtime, seed, i, 1.0) for i in range(tests)]
        streams = {"none": plain}
        for name, rise, where in CHANGES[1:]:
            streams[name] = ([Stream(runtime, seed, i, 1 + rise) for i in range(tests)] if where == "all"
                             else [Stream(runtime, seed, 0, 1 + rise)] + plain[1:])
        offset = math.log(getattr(plain[0].engine.sim_device, "power_factor", 1.0))
        for tol in tolerances:
            one_base = [[_baseline(pool, picks[0], i, tol, budget)] for i in range(tests)]
            many = [[_baseline(pool, j, i, tol, budget) for j in picks[:BASELINE_SESSIONS]] for i in range(tests)]
            spreads = {"no history": D.prior(), "history": _history_spread(pool, picks[BASELINE_SESSIONS:], many, tol, budget)}
            for variant in VARIANTS:
                sessions = many if variant == "history" else one_base
                for name, _, _ in CHANGES:
                    res = _session(streams[name], variant, sessions, spreads.get(variant), tol, budget)
                    rows.append({"runtime": runtime, "tolerance": tol, "variant": variant, "change": name, "rerun": r,
                                 "offset": offset, "spread": getattr(spreads.get(variant), "sd", None), **res})
    return rows


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        cells.setdefault((row["runtime"], row["tolerance"], row["variant"]), {}).setdefault(row["change"], []).append(row)
    out = []
    for (runtime, tol, variant), by in cells.items():
        none = by["none"]
        verdicts = [v for s in none for v in s["verdicts"]]
        share = lambda xs, s: sum(x == s for x in xs) / len(xs)  # noqa: E731
        fail_session = [("regression" in s["verdicts"]) or s["session"] == "regression" for s in none]
        cell = {"runtime": runtime, "tolerance": tol, "variant": variant, "reruns": len(none),
                "false_per_test": share(verdicts, "regression"), "false_per_session": sum(fail_session) / len(none),
                "noisy": share(verdicts, "noisy"), "improved": share(verdicts, "improved"), "pass": share(verdicts, "pass"),
                "median_rounds": statistics.median(n for s in none for n in s["rounds"]),
                "median_seconds": statistics.median(x for s in none for x in s["seconds"]),
                "spread_used": statistics.median(s["spread"] for s in none) if none[0]["spread"] is not None else None}
        for name, _, where in CHANGES[1:]:
            changed = [s["verdicts"] if where == "all" else s["verdicts"][:1] for s in by[name]]
            cell[f"detect {name}"] = share([v for vs in changed for v in vs], "regression")
            if where == "one":  # the unchanged tests beside the changed one
                cell[f"false beside {name}"] = share([v for s in by[name] for v in s["verdicts"][1:]], "regression")
        out.append(cell)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--reruns", type=int, default=300)
    p.add_argument("--tests", type=int, default=8, help=f"tests per session (at most {len(WORKLOADS)})")
    p.add_argument("--pool", type=int, default=300, help="sessions that baselines and saved runs are drawn from")
    p.add_argument("--tolerance", type=float, action="append", help="default: 0.02 and 0.05")
    p.add_argument("--max-seconds", type=float, default=60.0, help="per-test budget of auto (default 60)")
    p.add_argument("--runtime", choices=sorted(SETTINGS), action="append", help="default: both")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the cells (and the sim's true spread) as JSON here")
    args = p.parse_args(argv)
    tolerances = args.tolerance or [0.02, 0.05]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for runtime in args.runtime or ["graphs", "eager"]:
            chunks = [list(range(k, args.reruns, args.workers)) for k in range(args.workers)]
            jobs = [(runtime, c, args.tests, args.pool, tolerances, args.max_seconds) for c in chunks if c]
            for part in pool.map(one, jobs):
                rows += part
    offsets = [r["offset"] for r in rows if r["variant"] == "before" and r["change"] == "none" and r["tolerance"] == tolerances[0]]
    true_sd = statistics.stdev(offsets[: args.reruns])
    cells = table(rows)
    print(f"SIMULATED: {args.reruns} reruns (sessions) per cell, {args.tests} tests a session, rounds auto "
          f"({args.max_seconds:g} s a test); the sim's between-session sd, measured over the reruns' devices: {true_sd:.2%}")
    head = (f"{'runtime':7} {'tol':>4} {'variant':11} {'false/test':>10} {'false/sess':>10} {'noisy':>6} "
            f"{'+5% all':>8} {'+10% all':>8} {'+5% one':>8} {'+10% one':>8} {'rounds':>6} {'seconds':>7} {'spread':>6}")
    print(head)
    for c in cells:
        spread = "-" if c["spread_used"] is None else f"{c['spread_used']:.2%}"
        print(f"{c['runtime']:7} {c['tolerance']:>4.0%} {c['variant']:11} {c['false_per_test']:>10.2%} "
              f"{c['false_per_session']:>10.2%} {c['noisy']:>6.1%} {c['detect +5% all']:>8.1%} {c['detect +10% all']:>8.1%} "
              f"{c['detect +5% one']:>8.1%} {c['detect +10% one']:>8.1%} {c['median_rounds']:>6g} {c['median_seconds']:>7.1f} "
              f"{spread:>6}", flush=True)
    print(f"({time.perf_counter() - started:.0f} s on this machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simulated": True, "reruns": args.reruns, "tests": args.tests, "pool": args.pool,
                       "baseline_sessions": BASELINE_SESSIONS, "saved_runs": SAVED_RUNS, "true_spread": true_sd,
                       "max_seconds": args.max_seconds, "settings": SETTINGS, "cells": cells}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
