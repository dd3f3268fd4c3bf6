"""`joules calibrate`: a fitted energy model, with its uncertainty, from a handful of chosen points.

Chooses which (n_in, n_out) to measure (design.py: a pilot, then the sequential I-optimal
design), measures them through `measure.measure` like the plugin and `joules sweep` do, fits the
model, bootstraps its uncertainty (uncertainty.py) and saves both where the plugin reads them.
`--replay RESULTS.json` answers from a results file's measured points instead of an engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .argtypes import (bootstrap_arg, check_writable, levels_arg, non_negative_int, positive_float, positive_int,
                       requests, rounds, seconds, tolerance_arg, warmup)

#: the paper's grid
DEFAULT_RANGE = (64, 4096)
DEFAULT_POINTS = 8
#: flags that choose or configure an engine: meaningless with --replay
LIVE_ONLY = ("engine", "model", "gpu", "dtype", "meter", "engine_option", "meter_option", "seed", "sim_slowdown",
             "requests", "max_batch_size", "rounds", "warmup", "min_window_s", "out", "levels")


def length_range(text: str) -> tuple[int, int]:
    """'64:4096' -> (64, 4096)."""
    low, sep, high = text.partition(":")
    try:
        values = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH in tokens, such as 64:4096, got {text!r}") from None
    if values[0] <= 0 or values[1] < values[0]:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH with 0 < LOW <= HIGH, such as 64:4096, got {text!r}")
    return values


def rounds_arg(text: str) -> int | None:
    """'auto' -> None (until the median is known), or a positive number of rounds."""
    if text.strip().lower() == "auto":
        return None
    return int(rounds(text))



def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="fit an energy model, with confidence intervals, from a few well-chosen measured points",
        description=(
            "Choose which (n_in, n_out) to measure for the energy model (a pilot of the range's corners, "
            "centre and one point that determines the FLOPs model, then each next point where it most "
            "reduces the prediction uncertainty over the range; per second of measuring with "
            "--budget-minutes), measure them like the plugin does, fit, "
            "bootstrap the uncertainty and save the model where the plugin reads it. The default engine is "
            "the simulated H100 (SIMULATED)."
        ),
    )
    p.add_argument("--engine", default=None, help="registered engine name (default: sim)")
    p.add_argument("--model", default=None, help="architecture (sim: e.g. Llama-3.1-8B) or checkpoint/engine path")
    p.add_argument("--gpu", default=None, help="simulated GPU (sim only: H100-SXM, H100-PCIe, H200, A100-SXM-80GB)")
    p.add_argument("--dtype", default=None, help="engine dtype (default: the engine's)")
    p.add_argument("--meter", default=None, help="registered meter name (default: the engine's own)")
    p.add_argument("--engine-option", action="append", default=None, metavar="KEY=VALUE",
                   help="engine setting, repeatable (sim: runtime, noise, slowdown, seed; hf: device, dtype)")
    p.add_argument("--meter-option", action="append", default=None, metavar="KEY=VALUE", help="meter setting, repeatable")
    p.add_argument("--requests", type=requests, default=None, help="requests per workload (default 1)")
    p.add_argument("--max-batch-size", type=positive_int, default=None, help="most requests in flight at once")
    p.add_argument("--n-in-range", type=length_range, default=None, metavar="LOW:HIGH",
                   help="input lengths to cover (default 64:4096; with --replay: the file's)")
    p.add_argument("--n-out-range", type=length_range, default=None, metavar="LOW:HIGH",
                   help="output lengths to cover (default 64:4096; with --replay: the file's)")
    p.add_argument("--levels", type=levels_arg, default=None,
                   help="candidate lengths per axis, spaced geometrically (default 7: 64..4096 in powers of two)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--points", type=positive_int, default=None, metavar="K",
                      help=f"measure K points (default {DEFAULT_POINTS})")
    size.add_argument("--budget-minutes", type=positive_float, default=None, metavar="T",
                      help="measure while the predicted cost of the next point fits in T minutes of device time")
    p.add_argument("--fit", choices=("memflops", "flops"), default="memflops", help="model to fit (default memflops)")
    p.add_argument("--rounds", type=rounds_arg, default=None, metavar="auto|N",
                   help="rounds per point: auto (default: until the median is known to half the tolerance) or N")
    p.add_argument("--tolerance", type=tolerance_arg, default=0.05, metavar="T",
                   help="auto rounds: know each median to half of this (default 5%%)")
    p.add_argument("--max-seconds", type=positive_float, default=60.0,
                   help="auto rounds: measured seconds per point at most (default 60)")
    p.add_argument("--warmup", type=warmup, default=None, help="unmeasured runs before each point's rounds (default 1)")
    p.add_argument("--min-window-s", type=seconds, default=None, help="shortest measurement window (default: the meter's)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of prompts and of the sim's noise (default: a new one)")
    p.add_argument("--sim-slowdown", type=positive_float, default=None, metavar="X", help="sim only: every step X times slower")
    p.add_argument("--bootstrap", type=bootstrap_arg, default=None, metavar="B",
                   help="bootstrap replicates for the intervals (default 200; saved in the model file)")
    p.add_argument("--replay", metavar="RESULTS.json",
                   help="take the points from a results file (joules sweep --out, pytest --joules-json) instead of measuring")
    p.add_argument("--save", metavar="MODEL.json", required=True,
                   help="write the model and its bootstrap replicates (put it beside the baselines for the plugin)")
    p.add_argument("--out", metavar="results.json", help="also write the measured points as a results JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also write a figure of the points and the fit (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p


# -- setting up a source ------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """Where the points come from and what to say about them."""

    source: Any
    grid: list[tuple[int, int]]
    requests: int
    batching: dict[str, Any]
    simulated: bool
    where: str
    clock: str  # what the costs are measured on
    seed: int
    warmup: int
    rounds: int | None
    min_window_s: float
    kept: list[Any] = dataclasses.field(default_factory=list)
    engine: Any = None
    meter: Any = None
    #: replay: every point of the file, for the comparison with a fit of all of them
    all_points: list[Any] = dataclasses.field(default_factory=list)
    all_cost_s: float | None = None
    #: the device and engine of the points, saved in the model (the plugin judges only its own)
    fingerprint: dict[str, Any] | None = None

    def close(self) -> None:
        for thing in (self.meter, self.engine):
            if thing is not None:
                thing.close()


def _live(args: argparse.Namespace) -> Setup:
    from ..models import design, sources
    from .. import registry
    from ..engines.base import EngineSpec
    from ..meters.base import MeterSpec, parse_options
    from .sweep import _engine_options

    args.engine = args.engine or "sim"
    args.engine_option = args.engine_option or []
    options = _engine_options(args)  # --seed / --sim-slowdown merged; the sim-only flags checked
    requests = args.requests or 1
    warmup = 1 if args.warmup is None else args.warmup
    n_in_range = args.n_in_range or DEFAULT_RANGE
    n_out_range = args.n_out_range or DEFAULT_RANGE
    count = args.levels or design.GRID_LEVELS
    spec = EngineSpec(name=args.engine, model=args.model, gpu=args.gpu, dtype=args.dtype, options=options)
    engine = registry.make_engine(spec)
    try:
        grid = design.candidate_grid(design.levels(n_in_range[0], n_in_range[1], count),
                                     design.levels(n_out_range[0], n_out_range[1], count),
                                        engine.max_positions)
        meter_options = parse_options(args.meter_option or [], "--meter-option")
        meter = registry.make_meter(MeterSpec(args.meter or engine.default_meter, meter_options), engine)
    except BaseException:
        engine.close()
        raise
    kept: list[Any] = []
    source = sources.live(
        engine, meter, requests=requests, max_batch_size=args.max_batch_size, seed=options["seed"], warmup=warmup,
        rounds=args.rounds, tolerance=args.tolerance, max_seconds=args.max_seconds, min_window_s=args.min_window_s,
        keep=kept)
    model = engine.identity().get("model") or args.model or args.engine
    gpus = [d.name for d in engine.devices() if d.name]
    device = meter.device_info()
    where = f"{model} on {device.get('gpu') or ', '.join(gpus) or engine.kind}"
    window = meter.min_window_s if args.min_window_s is None else args.min_window_s
    from ..models.identity import of_results

    return Setup(source, grid, requests, {"requests": requests, "max_batch_size": args.max_batch_size},
                 bool(engine.simulated), where, "simulated clock" if engine.simulated else "wall clock",
                 options["seed"], warmup, args.rounds, float(window or 0.0), kept, engine, meter,
                 fingerprint=of_results(engine.identity(), device, bool(engine.simulated)))


def _replay(args: argparse.Namespace) -> Setup:
    from ..models import analytical, sources
    from ..models.analytical import Point
    from ..models.identity import of_results
    from ..models.points import batching_of
    from ..store.results import read_results

    given = [name for name in LIVE_ONLY if getattr(args, name) not in (None, [], False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"--replay takes its points, engine and settings from {args.replay}; "
                          f"{flags} {'does' if len(given) == 1 else 'do'} not apply")
    results = read_results(args.replay)
    settings: dict[str, set[Any]] = {"requests": set(), "max_batch_size": set()}
    for row in results.rows:
        settings["requests"].add(row.workload.requests)
        settings["max_batch_size"].add(row.workload.max_batch_size)
    batching = batching_of(settings)
    if "mixed" in batching.values():
        raise DataError(f"{args.replay}: its points mix requests/max_batch_size values; a model holds one batching: "
                        "replay a file of one setting")
    rows = [r for r in results.rows if _in_ranges(r.workload.n_in, r.workload.n_out, args)]
    source, grid = sources.replay(rows, warmup=1, path=args.replay)
    need = len(analytical.PARAMETERS[args.fit]) + 1
    if len(grid) < need:
        raise DataError(f"{args.replay}: holds {len(grid)} measured point(s) in the range; the {args.fit} model needs at "
                        f"least {need}: replay a larger sweep")
    everything = [source(n, m) for n, m in grid]
    engine = results.engine
    gpu = results.device.get("gpu") or results.device.get("name") or engine.get("kind") or "?"
    where = f"{engine.get('model') or '?'} on {gpu}"
    return Setup(source, grid, int(batching.get("requests") or 1), batching, results.simulated,
                 f"{where}, replayed from {Path(args.replay).name}", "recorded windows", 0, 1, None, 0.0,
                 all_points=[Point(x.n_in, x.n_out, x.j_per_out_token) for x in everything],
                 all_cost_s=sum(x.cost_s for x in everything),
                 fingerprint=of_results(results.engine, results.device, results.simulated))


def _in_ranges(n_in: int, n_out: int, args: argparse.Namespace) -> bool:
    ok_in = args.n_in_range is None or args.n_in_range[0] <= n_in <= args.n_in_range[1]
    ok_out = args.n_out_range is None or args.n_out_range[0] <= n_out <= args.n_out_range[1]
    return ok_in and ok_out


# -- running ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from ..models import analytical, design, uncertainty

    check_writable("--save", args.save)
    if args.out:
        check_writable("--out", args.out)
    if args.plot:
        from ..report.plot import check_plot_path

        check_plot_path(args.plot)  # before measuring, not after
    budget_s = args.budget_minutes * 60.0 if args.budget_minutes is not None else None
    points = args.points if args.points is not None or budget_s is not None else DEFAULT_POINTS
    design.check_points(args.fit, points)  # before an engine loads a model for minutes
    setup = _replay(args) if args.replay else _live(args)
    try:
        plan = design.Plan(args.fit, setup.grid, setup.requests, warmup=setup.warmup, min_window_s=setup.min_window_s,
                              rounds=setup.rounds, points=points, budget_s=budget_s)
        progress = _progress(args.json)
        cal = design.run(plan, setup.source, on_step=progress)
    finally:
        setup.close()

    fitted = dataclasses.replace(analytical.fit(args.fit, cal.points), batching=dict(setup.batching))
    replicates = args.bootstrap or uncertainty.DEFAULT_REPLICATES
    u = uncertainty.bootstrap(fitted, cal.points, replicates=replicates, seed=setup.seed)
    grid_cost = setup.all_cost_s if args.replay else _grid_cost(cal, plan)
    document = _document(args, setup, cal, fitted, u, grid_cost)
    identity = {"fingerprint": setup.fingerprint} if setup.fingerprint else {}  # the plugin judges only its own
    uncertainty.save(args.save, [(fitted, u)], simulated=setup.simulated, source="joules calibrate",
                     calibration=document["calibration"], **identity)
    if args.out and setup.kept:
        from ..store.results import write_results

        try:
            write_results(args.out, setup.kept, models=[uncertainty.model_entry(fitted, u)])
        except OSError as exc:
            raise DataError(f"--out {args.out}: cannot write the results: {exc.strerror or exc}") from None
    prefix = "SIMULATED " if setup.simulated else ""
    if args.plot:
        from ..report.plot import save_plot

        save_plot(args.plot, cal.points, [fitted], title=f"{prefix}Calibrated energy model: {setup.where}")
    if args.json:
        print(json.dumps(document, allow_nan=False))
        return 0
    _print(args, setup, cal, fitted, u, document, prefix)
    return 0


def _progress(quiet: bool) -> Any:
    """A line on stderr per measured point (a calibration can take hours on a GPU)."""
    def show(step: Any) -> None:
        if quiet:
            return
        m = step.measured
        print(f"joules calibrate: {step.reason:6} n_in={m.n_in} n_out={m.n_out}: {m.j_per_out_token:.5g} J/out-token, "
              f"{m.rounds} round(s), {m.cost_s:.1f} s", file=sys.stderr, flush=True)

    return show


def _grid_cost(cal: Any, plan: Any) -> float | None:
    """What measuring every candidate would have cost: the measured points' own cost, the
    others' predicted by the final cost model."""
    from ..models.design import cost_model

    try:
        costs = cost_model(cal.measured, plan.requests, plan.warmup, plan.min_window_s, plan.rounds)
    except DataError:
        return None
    done = {(m.n_in, m.n_out): m.cost_s for m in cal.measured}
    return sum(done.get(c) or costs.cost(*c) for c in plan.grid)


def _spot_rows(fitted: Any, u: Any, n_in_values: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in n_in_values:
        s = fitted.sweet_spot(n)
        iv = u.sweet_spot(n, fitted.n_out_range)
        rows.append({
            "n_in": n, "n_out_opt": s.n_out_opt, "j_per_out_token_min": s.j_per_out_token_min,
            "n_out_low": None if iv is None else iv.n_out.low,
            "n_out_high": None if iv is None or iv.n_out.high == float("inf") else iv.n_out.high,
            "interval_leaves_range": None if iv is None else iv.leaves_range,
            "reason": s.reason,
        })
    return rows


def _band(fitted: Any, u: Any, grid: list[tuple[int, int]]) -> dict[str, Any]:
    """The band's relative half-width over the candidate grid: median and widest."""
    import numpy as np

    n, m = np.asarray(grid, dtype=float).T
    low, high = u.band(n, m)
    centre = np.asarray(fitted.predict(n, m), dtype=float)
    half = (high - low) / 2 / centre
    worst = int(np.argmax(half))
    return {"level": u.level, "median_half_width": float(np.median(half)), "max_half_width": float(half[worst]),
            "widest_at": {"n_in": int(n[worst]), "n_out": int(m[worst])}}


def _document(args: argparse.Namespace, setup: Setup, cal: Any, fitted: Any, u: Any, grid_cost: float | None) -> dict[str, Any]:
    from ..models import analytical, uncertainty

    n_in_values = sorted({n for n, _ in setup.grid})
    calibration = {
        "design": "pilot (corners, centre, a point for the FLOPs model), then sequential I-optimal on relative prediction variance"
                  + (" per predicted second" if args.budget_minutes is not None else ""),
        "points": [[m.n_in, m.n_out] for m in cal.measured],
        "candidates": len(setup.grid),
        "cost_s": cal.cost_s,
        "grid_cost_s": grid_cost,
        "clock": setup.clock,
        "stopped": cal.stopped,
    }
    doc: dict[str, Any] = {
        "simulated": setup.simulated,
        "where": setup.where,
        "model": uncertainty.model_entry(fitted, None),
        "uncertainty": {"method": u.method, "level": u.level, "replicates": int(u.samples.shape[0]), "df": u.df},
        "sweet_spots": _spot_rows(fitted, u, n_in_values),
        "band": _band(fitted, u, setup.grid),
        "steps": [{"n_in": s.measured.n_in, "n_out": s.measured.n_out, "reason": s.reason,
                   "j_per_out_token": s.measured.j_per_out_token, "rounds": s.measured.rounds,
                   "cost_s": s.measured.cost_s, "predicted_cost_s": s.predicted_cost_s, "gain": s.gain}
                  for s in cal.steps],
        "calibration": calibration,
    }
    if setup.all_points:  # replay: how the model does on every point of the file
        full = analytical.fit(args.fit, setup.all_points) if len({(p.n_in, p.n_out) for p in setup.all_points}) >= len(
            analytical.PARAMETERS[args.fit]) else None
        ys = [(fitted.predict(p.n_in, p.n_out), p.j_per_out_token) for p in setup.all_points]
        doc["replay"] = {
            "file_points": len(setup.all_points),
            "mape_over_file": sum(abs(a - y) / y for a, y in ys) / len(ys),
            "full_fit_mape": None if full is None else full.mape,
            "full_fit_loo_mape": None if full is None else full.loo_mape,
        }
    return doc


def _duration(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _print(args: argparse.Namespace, setup: Setup, cal: Any, fitted: Any, u: Any, doc: dict[str, Any], prefix: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report.models import models_table, sweet_spot_table

    console = Console()
    setting = f"requests={setup.requests}" + (f", max_batch_size={setup.batching['max_batch_size']}"
                                              if setup.batching.get("max_batch_size") else "")
    table = Table(title=f"{prefix}Calibration: {setup.where} ({setting})", title_justify="left")
    for name in ("#", "n_in", "n_out", "why", "var. cut", "pred. s", "took s", "rounds", "J/out-tok"):
        table.add_column(name, justify="left" if name == "why" else "right")
    for i, s in enumerate(cal.steps, 1):
        m = s.measured
        table.add_row(str(i), str(m.n_in), str(m.n_out), s.reason, "—" if s.gain is None else f"{s.gain:.0%}",
                      "—" if s.predicted_cost_s is None else f"{s.predicted_cost_s:.1f}", f"{m.cost_s:.1f}",
                      str(m.rounds), f"{m.j_per_out_token:.5g}")
    table.caption = ("pilot: the range's corners and centre, and a point that determines the FLOPs model; design: "
                     "the candidate that cuts the summed prediction variance over the range the most"
                     + (" per predicted second" if args.budget_minutes else "")
                     + " (var. cut: the share it was predicted to cut)")
    table.caption_justify = "left"
    console.print(table)
    console.print(models_table([fitted], title=f"{prefix}Fitted energy model ({len(cal.points)} points)"))
    n_in_values = sorted({n for n, _ in setup.grid})
    console.print(sweet_spot_table([fitted], n_in_values, title=f"{prefix}Sweet spots", uncertainties={fitted.name: u}))
    c = doc["calibration"]
    full = f"; every one of the {c['candidates']} candidates: {_duration(c['grid_cost_s'])}" if c["grid_cost_s"] else ""
    lines = [
        f"measured {len(cal.steps)} of {c['candidates']} candidate points in {_duration(c['cost_s'])} "
        f"({c['clock']}){full}; stopped: {cal.stopped}",
    ]
    b = doc["band"]
    lines.append(f"{b['level']:.0%} band of the predicted J/out-token (the model's curve, not one measurement) over the "
                 f"candidates: median ±{b['median_half_width']:.1%}, widest ±{b['max_half_width']:.1%} at "
                 f"n_in={b['widest_at']['n_in']} n_out={b['widest_at']['n_out']} ({u.samples.shape[0]} replicates)")
    if "replay" in doc:
        r = doc["replay"]
        full_fit = ("" if r["full_fit_mape"] is None else
                    f"; the fit of all {r['file_points']}: MAPE {r['full_fit_mape']:.2%}"
                    + ("" if r["full_fit_loo_mape"] is None else f" (LOO {r['full_fit_loo_mape']:.2%})"))
        lines.append(f"on all {r['file_points']} points of the file this model's MAPE is {r['mape_over_file']:.2%}{full_fit}")
    lines.append(f"saved the model and its replicates to {args.save}")
    if args.out and setup.kept:
        lines.append(f"wrote {len(setup.kept)} result(s) to {args.out}")
    if args.plot:
        lines.append(f"wrote plot to {args.plot}")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)
