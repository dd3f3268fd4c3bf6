"""`joules calibrate` against the full 7x7 sweep and a naive 8-point choice, on the SIMULATED device.

    python benchmarks/calibrate_design.py [--reps 200] [--workers 2] [--json out.json]

For each setting (Llama-3.1-8B and Qwen2-7B on the simulated H100 SXM and H200, 100 requests,
the optimised runtime with its realistic noise) and each repetition (a seed), three sessions:

- full:   the paper's way: every point of the 7x7 grid 64..4096 (3 rounds, 1 warm-up, as
          `joules sweep`), Memory+FLOPs fitted to all 49;
- design: `joules calibrate --points 8`: the pilot and the sequential design (calibrate.py), each
          point measured until its median is known to 2.5% (`--rounds auto`);
- naive:  8 fixed points, the 3x3 grid {64, 512, 4096}² minus its centre, measured the same way;
- budget: `joules calibrate --budget-minutes T` with T the naive choice's own time in that
          repetition: what the design buys with the same GPU time, choosing per predicted second.

The calibrations run with the repetition's seed, the full sweep with another (another session,
as a model is used on another day). Reported per setting, mean over the repetitions:
- MAPE of each fit against the full sweep's measured 49 points (the full fit in-sample), and
  against the exact device (noise=0): what each model gets wrong about the device itself;
- seconds on the simulated clock (what the GPU would spend) and on this machine;
- sweet spots: the share of the 7 n_in rows (x repetitions) whose 95% interval (uncertainty.py)
  holds the device's true optimum n_out* (found by search on the exact device, not from the
  model), and the share holding the full-grid fit's n_out*; the median interval width.
- the cost model: mean absolute error of each chosen point's predicted cost.

Every number here is SIMULATED.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Any

SETTINGS = [
    ("Llama-3.1-8B", "H100-SXM"),
    ("Llama-3.1-8B", "H200"),
    ("Qwen2-7B", "H100-SXM"),
    ("Qwen2-7B", "H200"),
]
LEVELS = [64, 128, 256, 512, 1024, 2048, 4096]
GRID = [(n, m) for n in LEVELS for m in LEVELS]
NAIVE = [(n, m) for n in (64, 512, 4096) for m in (64, 512, 4096) if (n, m) != (512, 512)]
REQUESTS = 100
KINDS = ("full", "design", "naive", "budget")
MODEL = "memflops"
TOLERANCE = 0.05


def _session(model: str, gpu: str, seed: int) -> tuple[Any, Any]:
    from pytest_joules import registry
    from pytest_joules.engines.base import EngineSpec
    from pytest_joules.meters.base import MeterSpec

    engine = registry.make_engine(EngineSpec("sim", model=model, gpu=gpu, options={"seed": seed}))
    return engine, registry.make_meter(MeterSpec("sim"), engine)


@lru_cache(maxsize=None)
def truth(model: str, gpu: str) -> tuple[dict[tuple[int, int], float], dict[int, float]]:
    """The exact device (noise=0): J/out-token on the grid, and each n_in's optimum n_out* by search."""
    import numpy as np

    from pytest_joules.sim.device import SimDevice
    from pytest_joules.engines.workload import Workload

    engine, _ = _session(model, gpu, 0)
    device = SimDevice(engine.arch, engine.gpu, seed=0, noise=0)

    def j(n: int, m: int) -> float:  # a whole run: the GPU's steps and the host's time between them
        return device.run(Workload(n, m, requests=REQUESTS)).joules / (REQUESTS * m)

    grid = {(n, m): j(n, m) for n, m in GRID}
    spots = {}
    for n in LEVELS:
        top = min(16384, engine.arch.max_positions - n)
        coarse = sorted({int(v) for v in np.round(np.geomspace(16, top, 40))})
        k = int(np.argmin([j(n, m) for m in coarse]))
        lo, hi = coarse[max(k - 1, 0)], coarse[min(k + 1, len(coarse) - 1)]
        while hi - lo > 2:  # golden-section search on the integers: J/out-token is unimodal here
            a, b = lo + round(0.382 * (hi - lo)), lo + round(0.618 * (hi - lo))
            if j(n, a) <= j(n, b):
                hi = b
            else:
                lo = a
        spots[n] = float(min(range(lo, hi + 1), key=lambda m: j(n, m)))
    return grid, spots


def _mape(fitted: Any, reference: dict[tuple[int, int], float]) -> float:
    return statistics.fmean(abs(fitted.predict(n, m) - y) / y for (n, m), y in reference.items())


def _judge(points: list[Any], model_full: Any, spots: dict[int, float], sweep: dict, exact: dict, seed: int) -> dict[str, Any]:
    from pytest_joules.models import analytical, uncertainty

    fitted = analytical.fit(MODEL, points)
    u = uncertainty.bootstrap(fitted, points, seed=seed)
    truth_in, full_in, widths = 0, 0, []
    for n in LEVELS:
        iv = u.sweet_spot(n, fitted.n_out_range)
        truth_in += iv.n_out.contains(spots[n])
        full_spot = model_full.sweet_spot(n).n_out_opt
        full_in += full_spot is not None and iv.n_out.contains(full_spot)
        widths.append(iv.n_out.high / iv.n_out.low - 1 if iv.n_out.low > 0 else float("inf"))
    return {"mape_sweep": _mape(fitted, sweep), "mape_exact": _mape(fitted, exact),
            "truth_in": truth_in, "full_in": full_in, "width": statistics.median(widths)}


def one(job: tuple[str, str, int]) -> dict[str, Any]:
    """One repetition of one setting: the full sweep, the design and the naive choice."""
    from pytest_joules.models import analytical, design as calibrate, sources as calibrate_sources
    from pytest_joules.measure import measure
    from pytest_joules.engines.workload import Workload

    model, gpu, seed = job
    exact, spots = truth(model, gpu)
    out: dict[str, Any] = {}

    start = time.perf_counter()
    engine, meter = _session(model, gpu, 1_000_000 + seed)
    sweep = {}
    for n, m in GRID:
        r = measure(engine, meter, Workload(n, m, requests=REQUESTS, seed=seed), rounds=3, warmup=1)
        sweep[(n, m)] = r.j_per_out_token
    full = analytical.fit(MODEL, [analytical.Point(n, m, y) for (n, m), y in sweep.items()])
    out["full"] = {"mape_sweep": full.mape, "mape_exact": _mape(full, exact), "sim_s": engine.sim_device.clock_s,
                   "wall_s": time.perf_counter() - start, "points": len(GRID)}

    def source(engine: Any, meter: Any) -> Any:
        return calibrate_sources.live(engine, meter, requests=REQUESTS, max_batch_size=None, seed=seed, warmup=1,
                                      rounds=None, tolerance=TOLERANCE, max_seconds=60.0)

    start = time.perf_counter()
    engine, meter = _session(model, gpu, seed)
    plan = calibrate.Plan(MODEL, GRID, requests=REQUESTS, rounds=None, points=8)
    cal = calibrate.run(plan, source(engine, meter))
    judged = _judge(cal.points, full, spots, sweep, exact, seed)
    cost_errors = [abs(s.predicted_cost_s / s.measured.cost_s - 1) for s in cal.steps if s.predicted_cost_s]
    out["design"] = {**judged, "sim_s": engine.sim_device.clock_s, "wall_s": time.perf_counter() - start,
                     "points": len(cal.steps), "cost_error": statistics.fmean(cost_errors) if cost_errors else None,
                     "chosen": [(s.measured.n_in, s.measured.n_out) for s in cal.steps]}

    start = time.perf_counter()
    engine, meter = _session(model, gpu, seed)
    measure_point = source(engine, meter)
    points = [measure_point(n, m).point for n, m in NAIVE]
    out["naive"] = {**_judge(points, full, spots, sweep, exact, seed), "sim_s": engine.sim_device.clock_s,
                    "wall_s": time.perf_counter() - start, "points": len(points)}

    start = time.perf_counter()
    budget = out["naive"]["sim_s"]
    engine, meter = _session(model, gpu, seed)
    plan = calibrate.Plan(MODEL, GRID, requests=REQUESTS, rounds=None, budget_s=budget)
    cal = calibrate.run(plan, source(engine, meter))
    out["budget"] = {**_judge(cal.points, full, spots, sweep, exact, seed), "sim_s": engine.sim_device.clock_s,
                     "wall_s": time.perf_counter() - start, "points": len(cal.steps), "budget_s": budget}
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in KINDS:
        items = [r[kind] for r in rows]
        s = {key: statistics.fmean(i[key] for i in items) for key in ("mape_sweep", "mape_exact", "sim_s", "wall_s", "points")}
        s["mape_sweep_max"] = max(i["mape_sweep"] for i in items)
        if kind != "full":
            cells = len(items) * len(LEVELS)
            s["truth_coverage"] = sum(i["truth_in"] for i in items) / cells
            s["full_coverage"] = sum(i["full_in"] for i in items) / cells
            s["all_rows_covered"] = sum(i["truth_in"] == len(LEVELS) for i in items) / len(items)
            s["median_width"] = statistics.median(i["width"] for i in items)
        if kind == "budget":
            s["over_budget"] = sum(i["sim_s"] > i["budget_s"] for i in items) / len(items)
            s["most_over"] = max(i["sim_s"] / i["budget_s"] - 1 for i in items)
        if kind == "design":
            s["cost_error"] = statistics.fmean(i["cost_error"] for i in items if i["cost_error"] is not None)
            s["chosen_most_often"] = statistics.mode(tuple(i["chosen"]) for i in items)
        summary[kind] = s
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=200, help="repetitions (seeds) per setting (default 200)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    started = time.perf_counter()
    print(f"SIMULATED: {args.reps} repetitions per setting, {REQUESTS} requests, {MODEL} fits, 95% intervals")
    header = (f"{'setting':22} {'fit':6} {'pts':>5} {'MAPE sweep':>10} {'(max)':>6} {'MAPE exact':>10} "
              f"{'sim s':>7} {'wall s':>7} {'n_out* in CI':>12} {'full n_out* in CI':>17} {'CI width':>8}")
    print(header)
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for model, gpu in SETTINGS:
            truth(model, gpu)
            rows = list(pool.map(one, [(model, gpu, seed) for seed in range(args.reps)], chunksize=max(1, args.reps // 16)))
            s = summarize(rows)
            results.append({"model": model, "gpu": gpu, "reps": args.reps, **s})
            for kind in KINDS:
                r = s[kind]
                cover = (f"{r['truth_coverage']:>12.1%} {r['full_coverage']:>17.1%} {r['median_width']:>8.1%}"
                         if kind != "full" else f"{'':>12} {'':>17} {'':>8}")
                print(f"{model + ' ' + gpu:22} {kind:6} {r['points']:>5.1f} {r['mape_sweep']:>10.2%} {r['mape_sweep_max']:>6.2%} "
                      f"{r['mape_exact']:>10.2%} {r['sim_s']:>7.0f} {r['wall_s']:>7.3f} {cover}", flush=True)
            d = s["design"]
            b = s["budget"]
            print(f"{'':22} design: predicted point costs off by {d['cost_error']:.1%} on average; all 7 rows covered in "
                  f"{d['all_rows_covered']:.0%} of repetitions (naive {s['naive']['all_rows_covered']:.0%}); most often chose "
                  f"{list(d['chosen_most_often'])}; budget overrun in {b['over_budget']:.0%} of repetitions, "
                  f"by at most {max(b['most_over'], 0):.1%}")
    print(f"({time.perf_counter() - started:.0f} s on this machine, {args.workers} workers)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simulated": True, "settings": results}, fh, indent=1, default=list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
