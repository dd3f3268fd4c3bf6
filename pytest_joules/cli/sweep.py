"""`joules sweep`: measure a grid of (n_in, n_out) on an engine, show it and fit the models.

Every grid point goes through `measure.measure`, the same path the pytest plugin uses, with an
engine and meter built through the registry, so `--engine` / `--meter` take any registered name.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..numbers import sig
from ..errors import ConfigError, DataError
from .argtypes import check_writable, non_negative_int, positive_float, positive_int, requests, rounds, seconds, warmup


def _length_list(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; duplicates dropped, order kept."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 64,128,256, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"lengths must be positive, got {value} in {text!r}")
        if value not in values:
            values.append(value)
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="measure a grid of input/output lengths on an engine and fit the models",
        description=(
            "Measure J per output token over every (n_in, n_out) of a grid through the same "
            "measurement path as the pytest plugin, show a table and a tokens-per-joule heatmap, "
            "and fit the analytical models. The default engine is the simulated H100 (SIMULATED)."
        ),
    )
    p.add_argument("--engine", default="sim", help="registered engine name (default: sim)")
    p.add_argument("--meter", default=None, help="registered meter name (default: the engine's own, e.g. sim, nvml)")
    p.add_argument("--meter-option", action="append", default=[], metavar="KEY=VALUE",
                   help="meter setting, repeatable (nvml: min_window_s, idle_s, devices=all; see docs/hardware.md)")
    p.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                   help="engine setting, repeatable (sim: runtime, noise, slowdown, seed; hf: runtime, device, dtype; "
                        "trtllm: tensor_parallel_size)")
    p.add_argument("--model", default=None, help="architecture (sim: e.g. Llama-3.1-8B) or checkpoint/engine path")
    p.add_argument("--gpu", default=None, help="simulated GPU (sim only: H100-SXM, H100-PCIe, H200, A100-SXM-80GB)")
    p.add_argument("--dtype", default=None, help="engine dtype (default: the engine's, bf16 for the sim)")
    p.add_argument("--n-in", type=_length_list, required=True, metavar="LIST", help="input lengths, e.g. 64,128,256")
    p.add_argument("--n-out", type=_length_list, required=True, metavar="LIST", help="output lengths, e.g. 64,128,256")
    p.add_argument("--requests", type=requests, default=1, help="requests per workload (default 1; the paper uses 10-1000)")
    p.add_argument("--max-batch-size", type=positive_int, default=None, help="most requests in flight at once (default: the engine's)")
    p.add_argument("--rounds", type=rounds, default=3, help="measured rounds per point (default 3)")
    p.add_argument("--warmup", type=warmup, default=1, help="unmeasured runs before the rounds (default 1)")
    p.add_argument("--min-window-s", type=seconds, default=None, help="shortest measurement window (default: the meter's)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of prompts and of the sim's noise (default: a new one each run; the results record it)")
    p.add_argument("--sim-slowdown", type=positive_float, default=None, metavar="X", help="sim only: make every step X times slower (1.1 = a 10%% regression)")
    p.add_argument("--skip-invalid", action="store_true", help="skip grid points beyond the model's positions instead of failing")
    p.add_argument("--out", metavar="results.json", help="write the results JSON (read by `joules fit` and `joules compare`)")
    p.add_argument("--plot", metavar="FILE.png", help="also write a figure: heatmap and efficiency curves with the fits (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout instead of tables")
    return p


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """--engine-option with --seed and --sim-slowdown merged in; a flag and an option of the same
    setting must agree. The seed is always there (the prompts take it too), as in the plugin."""
    from ..engines.base import parse_engine_options

    if args.engine != "sim":
        if args.sim_slowdown is not None:
            raise ConfigError(f"--sim-slowdown applies to the sim engine only, not to --engine {args.engine}")
        if args.gpu is not None:
            raise ConfigError(f"--gpu picks the simulated GPU (sim engine only), not one for --engine {args.engine}; "
                              "choose a real GPU with CUDA_VISIBLE_DEVICES")
    options = parse_engine_options(args.engine_option, "--engine-option")
    for key, flag, value in (("seed", "--seed", args.seed), ("slowdown", "--sim-slowdown", args.sim_slowdown)):
        if value is None:
            continue
        if key in options and options[key] != value:
            raise ConfigError(f"{flag} {value} and --engine-option {key}={options[key]} disagree; set the {key} once")
        options[key] = value
    if "seed" not in options:  # like the plugin: a new seed each run unless told (results record it)
        from ..plugin.options import random_seed

        options["seed"] = random_seed()
    seed = options["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--engine-option seed must be a non-negative integer, got {seed!r}")
    return options


def _grid(args: argparse.Namespace, max_positions: int | None, model: str) -> tuple[list[tuple[int, int]], list[str]]:
    """The points to measure, and notes on skipped ones; ConfigError names every point too long."""
    points = [(n, m) for n in args.n_in for m in args.n_out]
    if max_positions is None:
        return points, []
    beyond = [(n, m) for n, m in points if n + m > max_positions]
    if not beyond:
        return points, []
    named = ", ".join(f"n_in={n}+n_out={m}" for n, m in beyond)
    if not args.skip_invalid:
        raise ConfigError(
            f"{len(beyond)} grid point(s) exceed {model}'s {max_positions} positions: {named}; "
            "use shorter lengths or pass --skip-invalid to leave them out"
        )
    kept = [p for p in points if p not in beyond]
    if not kept:
        raise ConfigError(f"every grid point exceeds {model}'s {max_positions} positions; use shorter lengths")
    return kept, [f"skipped {len(beyond)} point(s) beyond {model}'s {max_positions} positions: {named}"]


def _measure_grid(engine: Any, meter: Any, args: argparse.Namespace, grid: list[tuple[int, int]], seed: int,
                  err_console: Any) -> list[Any]:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..measure.path import measure
    from ..engines.workload import Workload

    results = []
    # the label keeps one width (the bar does not jump as lengths change); the ETA is rich's
    digits = max(len(str(v)) for point in grid for v in point)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(_label(grid[0], digits), total=len(grid))
        for n_in, n_out in grid:
            workload = Workload(n_in, n_out, requests=args.requests, max_batch_size=args.max_batch_size, seed=seed)
            progress.update(task, description=_label((n_in, n_out), digits))
            results.append(
                measure(engine, meter, workload, rounds=args.rounds, warmup=args.warmup,
                        min_window_s=args.min_window_s, name=f"sweep[{workload.label()}]")
            )
            progress.advance(task)
    return results


def _label(point: tuple[int, int], digits: int) -> str:
    return f"n_in={point[0]:>{digits}} n_out={point[1]:>{digits}}"


def _fit(points: list[Any], notes: list[str]) -> list[Any]:
    """Fit every model the points can determine; say which could not be fitted."""
    from ..models import analytical

    models, skipped = analytical.fit_possible(points)
    distinct = len({(p.n_in, p.n_out) for p in points})
    for name in skipped:
        notes.append(
            f"not fitted: the {name} model has {len(analytical.PARAMETERS[name])} parameters, "
            f"the grid has {distinct} point(s)"
        )
    return models


def _results_table(measurements: list[Any], title: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    def fmt(value: float | None, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    from rich.cells import cell_len

    notes = [Text("dry run" if m.dry_run else "; ".join(m.problems)) for m in measurements]
    # the model's name is the user's: Text, no markup; min_width: a long title does not wrap
    table = Table(title=Text(title), title_justify="left", min_width=cell_len(title))
    for name in ("n_in", "n_out", "J/out-token", "tokens/J", "avg W", "seconds", "spread"):
        table.add_column(name, justify="right")
    if any(n.plain for n in notes):  # an empty column is noise
        table.add_column("notes")
    for m, note in zip(measurements, notes):
        w = m.workload
        table.add_row(  # 3 significant figures, as every figure shown
            str(w.n_in), str(w.n_out), sig(m.j_per_out_token), sig(m.tokens_per_joule),
            sig(m.avg_watts), sig(m.seconds), fmt(m.spread, ".1%"), *([note] if table.columns[-1].header == "notes" else []),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    if args.plot:
        from ..report.plot import check_plot_path

        check_plot_path(args.plot)  # before the sweep, not after it

    from .. import registry
    from ..store import results
    from ..engines.base import EngineSpec
    from ..meters.base import MeterSpec, parse_options

    if args.out:
        check_writable("--out", args.out)  # before a sweep that may take hours, not after it
    options = _engine_options(args)
    spec = EngineSpec(name=args.engine, model=args.model, gpu=args.gpu, dtype=args.dtype, options=options)
    err_console = Console(stderr=True)
    # loading a checkpoint takes minutes: say what, while it loads (a spinner on a terminal, gone
    # once loaded; nothing in a log, where a bad name stays a one-line error)
    what = f"loading the {args.engine} engine" + (f" with {args.model}" if args.model else "") + "…"
    with err_console.status(Text(what)):
        engine = registry.make_engine(spec)
    try:
        model_name = engine.identity().get("model") or args.model or args.engine
        grid, notes = _grid(args, engine.max_positions, model_name)
        meter_options = parse_options(args.meter_option, "--meter-option")
        meter = registry.make_meter(MeterSpec(args.meter or engine.default_meter, meter_options), engine)
        try:
            measurements = _measure_grid(engine, meter, args, grid, options["seed"], err_console)
        finally:
            meter.close()
        simulated = bool(engine.simulated)
        device = measurements[0].device if measurements else {}
        gpus = [d.name for d in engine.devices() if d.name]
    finally:
        engine.close()

    from ..models.analytical import Point

    points = [Point(m.workload.n_in, m.workload.n_out, m.j_per_out_token) for m in measurements if m.valid]
    if not points:
        notes.append("no valid energy readings (dry run or invalid windows): nothing to fit or draw")
    models = _fit(points, notes) if points else []
    from ..models.uncertainty import for_models, model_entry

    intervals = for_models(models, points)
    entries = [model_entry(m, intervals.get(m.name)) for m in models]
    bad = [m.workload.label() for m in measurements if not m.valid and not m.dry_run]
    if bad:
        notes.append(f"{len(bad)} point(s) without a valid measurement: {', '.join(bad)}")

    if args.out:
        try:
            results.write_results(args.out, measurements, models=entries)
        except OSError as exc:
            raise DataError(f"--out {args.out}: cannot write the results: {exc.strerror or exc}") from None
    prefix = "SIMULATED " if simulated else ""
    where = f"{model_name} on {device.get('gpu') or device.get('name') or ', '.join(gpus) or engine.kind}"
    setting = f"requests={args.requests}" + (f", max_batch_size={args.max_batch_size}" if args.max_batch_size else "")
    if args.plot and points:
        from ..report.plot import save_plot

        save_plot(args.plot, points, models, title=f"{prefix}Energy per output token: {where} ({setting})")

    if args.json:
        document = results.results_document(measurements, models=entries)
        print(json.dumps(document, allow_nan=False))
        for note in notes:
            print(f"joules sweep: note: {note}", file=sys.stderr)
        return 1 if bad else 0

    from ..report.heatmap import heatmap
    from ..report.models import models_table, sweet_spot_table

    console = Console()
    console.print(_results_table(measurements, f"{prefix}Sweep: {where} ({setting})"))
    if points:
        console.print(heatmap(points, title=Text(f"{prefix}Tokens per joule: {where}")))
    if models:
        console.print(models_table(models, title=f"{prefix}Fitted energy models ({len(points)} points)"))
        if any(m.name != "linear" for m in models):
            console.print(sweet_spot_table(models, sorted({p.n_in for p in points}), title=f"{prefix}Sweet spots",
                                           uncertainties=intervals))
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True, markup=False)
    if args.out:
        console.print(f"wrote {len(measurements)} result(s) to {args.out}", soft_wrap=True, markup=False)
    if args.plot and points:
        console.print(f"wrote plot to {args.plot}", soft_wrap=True, markup=False)
    return 1 if bad else 0
