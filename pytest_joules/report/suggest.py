"""The `joules calibrate` command the summary suggests when no fitted model lies beside the
baselines: for this device, engine and model, covering the session's lengths, with its time
estimated from the session's own measurements.

The estimate runs the calibration's design (design.py) on predictions instead of
measurements: J/out-token and seconds per run from models fitted to the session's measured
points (the richest paper form they determine, a constant below 3 distinct points), and each
point's cost from the measurement structure the session showed (rounds, repetitions, overhead per
window). It is an estimate of device time: seconds on the simulated clock for the sim.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store.record import ResultRecord
    from .facts import Summary

#: the suggested number of points (`joules calibrate --points`)
POINTS = 8
#: a suggested range spans at least this factor per axis, so the design has lengths to vary
MIN_SPAN = 4
#: the range a model should cover (the paper's grid), widened only where the tests reach further:
#: a model fitted to the tests' own lengths puts every sweet spot outside its range
STANDARD_RANGE = (64, 4096)


@dataclass(frozen=True)
class Suggestion:
    command: str
    seconds: float | None
    #: how many of the session's measurements the estimate rests on
    basis: int
    simulated: bool
    #: the batching it calibrates for, when the session ran several
    batching_note: str = ""


def _span(values: Sequence[int]) -> tuple[int, int]:
    """The standard 64..4096, or wider where the tests' lengths reach beyond it."""
    low, high = min(STANDARD_RANGE[0], min(values)), max(STANDARD_RANGE[1], max(values))
    while high < MIN_SPAN * low:  # only for lengths far beyond the standard range
        low, high = max(1, low // 2), high * 2
    return low, high


def _measured(records: Sequence[ResultRecord], warmup: int) -> list[Any]:
    """The session's valid measurements as the design sees them (design.Measured)."""
    from ..models.design import Measured

    out = []
    for r in records:
        rounds = [x for x in r.rounds if isinstance(x, dict)]
        run_s, j = r.seconds, r.j_per_out_token
        if not rounds or not isinstance(run_s, (int, float)) or not isinstance(j, (int, float)) or run_s <= 0 or j <= 0:
            continue
        reps = sum(int(x.get("reps") or 1) for x in rounds)
        windows = sum(float(x.get("seconds") or 0.0) for x in rounds)
        out.append(Measured(int(r.n_in), int(r.n_out), float(j), (), float(run_s), warmup + reps, len(rounds),
                            windows + warmup * float(run_s)))
    return out


def _model(points: list[Any]) -> Any:
    """The richest paper model of `points`, or a constant (the linear form with a = c = 0)."""
    import statistics

    from ..models.analytical import FittedModel
    from ..models.design import richest_fit
    from ..errors import DataError

    try:
        return richest_fit(points)
    except DataError:
        ns, ms = [p.n_in for p in points], [p.n_out for p in points]
        level = statistics.fmean(p.j_per_out_token for p in points)
        return FittedModel("linear", (0.0, level, 0.0), 0.0, None, len(points), (min(ns), max(ns)), (min(ms), max(ms)))


def estimate_seconds(measured: list[Any], grid: list[tuple[int, int]], requests: int, warmup: int,
                     min_window_s: float) -> float | None:
    """Device seconds of a `POINTS`-point calibration over `grid`, forecast from `measured`."""
    import statistics

    from ..models import design
    from ..models.analytical import Point
    from ..errors import JoulesError

    if not measured:
        return None
    energy = _model([m.point for m in measured])
    time = _model([Point(m.n_in, m.n_out, m.run_seconds / (requests * m.n_out)) for m in measured])
    overhead = statistics.median(max(0.0, (m.cost_s - m.executions * m.run_seconds) / m.rounds) for m in measured)
    costs = design.CostModel(time, requests, warmup, float(statistics.median(m.rounds for m in measured)),
                                min_window_s, overhead)

    def predicted(n_in: int, n_out: int) -> Any:
        run = costs.run_seconds(n_in, n_out)
        return design.Measured(n_in, n_out, max(float(energy.predict(n_in, n_out)), 1e-12), (), run,
                                  warmup + round(costs.rounds), round(costs.rounds), costs.cost(n_in, n_out))

    try:
        plan = design.Plan("memflops", grid, requests, warmup=warmup, min_window_s=min_window_s, rounds=None,
                              points=min(POINTS, len(grid)))
        return design.run(plan, predicted).cost_s
    except JoulesError:  # a range too narrow for the design: no estimate, the command still stands
        return None


def suggest(options: Any, records: Sequence[ResultRecord], model_path: Path) -> Suggestion | None:
    """The calibrate command for the session's engine and device, or None without a valid measurement."""
    from ..models import design

    valid = [r for r in records if r.j_per_out_token and r.n_in and r.n_out]
    if not valid:
        return None
    batchings = Counter((r.requests or 1, r.max_batch_size) for r in valid)
    (requests, max_batch), _ = batchings.most_common(1)[0]
    chosen = [r for r in valid if ((r.requests or 1), r.max_batch_size) == (requests, max_batch)]
    n_in_range, n_out_range = _span([int(r.n_in) for r in chosen]), _span([int(r.n_out) for r in chosen])
    first = chosen[0]
    engine, device = first.engine, first.device
    simulated = first.simulated

    args = ["joules", "calibrate", "--engine", options.engine]
    model = options.model or engine.get("model")
    if model:
        args += ["--model", str(model)]
    gpu = (options.gpu or device.get("gpu")) if options.engine == "sim" else None  # only the sim picks its GPU
    if gpu:
        args += ["--gpu", str(gpu)]
    for key, value in sorted((options.engine_options or {}).items()):
        # a new seed each run, like the plugin; a slowdown is a regression demo, not the device
        if key not in ("seed", "slowdown"):
            args += ["--engine-option", f"{key}={value}"]
    if options.meter:
        args += ["--meter", options.meter]
    for key, value in sorted((options.meter_options or {}).items()):
        args += ["--meter-option", f"{key}={value}"]
    args += ["--requests", str(requests)]
    if max_batch is not None:
        args += ["--max-batch-size", str(max_batch)]
    args += ["--n-in-range", "{}:{}".format(*n_in_range), "--n-out-range", "{}:{}".format(*n_out_range),
             "--points", str(POINTS), "--save", str(model_path)]

    window = float((options.meter_options or {}).get("min_window_s", 1.0))
    grid = design.candidate_grid(design.levels(*n_in_range), design.levels(*n_out_range))
    measured = _measured(chosen, options.warmup)
    seconds = estimate_seconds(measured, grid, requests, options.warmup, window)
    note = ""
    if len(batchings) > 1:
        setting = f"requests={requests}" + (f" max_batch_size={max_batch}" if max_batch is not None else "")
        note = f"for {setting}, the most common batching here; a model holds one batching"
    return Suggestion(shlex.join(args), seconds, len(measured), simulated, note)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def no_model_lines(state: Summary, records: Sequence[ResultRecord]) -> list[Any]:
    """The summary's lines where no fitted model lies beside the baselines: what to run to make one."""
    from rich.text import Text

    from ..errors import JoulesError
    if not records or all(r.j_per_out_token is None for r in records) or state.model_file is None:
        return []  # a dry run read no energy: no model can be fitted from this meter, say nothing
    path = state.model_file
    try:
        s = suggest(state.options, records, _relative(path))
    except (JoulesError, ValueError, ArithmeticError) as exc:  # a hint must not break the summary: say why there is none
        return [Text(f"no fitted model beside the baselines ({path}); `joules calibrate --save {path}` makes one "
                     f"(no estimate: {type(exc).__name__}: {exc})", style="dim")]
    if s is None:
        return [Text(f"no fitted model beside the baselines; `joules calibrate --save {_relative(path)}` makes one", style="dim")]
    clock = "on the simulated clock" if s.simulated else "of device time"
    when = (f"about {_duration(s.seconds)} {clock} for {POINTS} points, estimated from this session's "
            f"{s.basis} measurement{'s' if s.basis != 1 else ''}") if s.seconds is not None else "time unknown"
    head = f"no fitted model beside the baselines; make one for this device ({when}"
    head += f"; {s.batching_note})" if s.batching_note else ")"
    return [Text(head + ":", style="dim"), Text(f"  {s.command}")]


def _relative(path: Path) -> Path:
    """The path relative to the working directory when below it: shorter, and copy-pasteable."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else Path(rel)
