"""`joules fit FILE`: fit the analytical energy models to measured points and show sweet spots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import DataError
from .argtypes import DeprecatedAlias

CHOICES = ("flops", "memflops", "linear", "all")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit the energy models to a measurements CSV or results JSON",
        description=(
            "Fit the sweet-spot paper's energy models to measured points. FILE is CSV with a header "
            "n_in,n_out and j_per_out_token, or energy_j (total joules) with an optional requests "
            "column; or a results JSON written by `joules sweep` / `pytest --joules --joules-json`."
        ),
    )
    p.add_argument("file", metavar="FILE", help="measurements CSV or results JSON")
    p.add_argument("--fit", choices=CHOICES, default="all", help="which analytical model to fit (default: all)")
    p.add_argument("--model", dest="fit", choices=CHOICES, action=DeprecatedAlias, new="--fit", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="also write a figure of the data and the fits")
    p.add_argument("--save", metavar="MODEL.json", help="write the fitted model(s) for `joules sweetspot` and the plugin")
    return p


def _sweet_spots(model: Any, n_in_values: list[int], u: Any = None) -> list[dict[str, Any]]:
    spots = []
    for n_in in n_in_values:
        s = model.sweet_spot(n_in)
        iv = None if u is None else u.sweet_spot(n_in, model.n_out_range)
        spots.append({
            "n_in": n_in,
            "n_out_opt": s.n_out_opt,
            "j_per_out_token_min": s.j_per_out_token_min,
            "inside_range": s.inside_range,
            "reason": s.reason,
            # the bootstrap interval of n_out* (uncertainty.py); null high: unbounded
            "n_out_low": None if iv is None else iv.n_out.low,
            "n_out_high": None if iv is None or iv.n_out.high == float("inf") else iv.n_out.high,
            "interval_leaves_range": None if iv is None else iv.leaves_range,
        })
    return spots


def _fit(analytical: Any, data: Any, choice: str) -> list[Any]:
    """Fit the chosen model, or with "all" every model the points can determine (the same rule
    as `joules sweep`): a model with more parameters than distinct points is skipped with a note,
    and only when none can be fitted is it an error."""
    if choice != "all":
        try:
            return [analytical.fit(choice, data.points)]
        except DataError as exc:
            raise DataError(f"{data.path}: {exc}") from None
    models, skipped = analytical.fit_possible(data.points)
    if not models:  # name the least demanding model: even it cannot be fitted
        least = min(skipped, key=lambda name: len(analytical.PARAMETERS[name]))
        raise DataError(f"{data.path}: {skipped[least]}")
    for reason in skipped.values():
        print(f"joules fit: note: not fitted: {reason}", file=sys.stderr)
    return models


def run(args: argparse.Namespace) -> int:
    from ..models import analytical, uncertainty
    from ..models.points import read_points

    data = read_points(args.file)
    models = _fit(analytical, data, args.fit)
    n_in_values = sorted({p.n_in for p in data.points})
    for note in data.notes:
        print(f"joules fit: note: {note}", file=sys.stderr)

    # batching changes J/out-token: the plugin compares only measurements of the same batching
    models = [dataclasses.replace(m, batching=dict(data.batching)) for m in models]
    intervals = uncertainty.for_models(models, data.points)
    if args.save:
        identity = {"fingerprint": data.fingerprint} if data.fingerprint else {}  # the plugin judges only its own
        uncertainty.save(args.save, [(m, intervals.get(m.name)) for m in models], simulated=data.simulated,
                         source=str(data.path), **identity)
        print(f"joules fit: {_batching_note(data.batching)}", file=sys.stderr)
    if args.plot:
        from ..report.plot import save_plot

        # the figure names what was measured where; a CSV, which does not say, by its file name
        what = data.source or Path(data.path).name
        save_plot(args.plot, data.points, models,
                  title=f"{'SIMULATED ' if data.simulated else ''}Energy per output token: {what}")

    if args.json:
        document = {
            "models": [{**m.to_dict(), "sweet_spots": _sweet_spots(m, n_in_values, intervals.get(m.name))} for m in models],
            "simulated": data.simulated,
        }
        print(json.dumps(document, allow_nan=False))
        return 0

    from rich.console import Console

    from ..report.heatmap import coarsen, heatmap
    from ..report.models import models_table, sweet_spot_table

    from rich.text import Text

    console = Console()
    # titles hold the file's name: Text, so "[bold]" in a name is shown, not taken as markup
    console.print(heatmap(data.points, title=Text(_title("Tokens per joule", data.simulated, data.path))))
    console.print(models_table(models, title=Text(_title(f"Fitted energy models ({len(data.points)} points)", data.simulated, data.path))))
    if any(m.name != "linear" for m in models):
        rows = sorted({p.n_in for p in coarsen(data.points)[0]})  # not 1,000 rows for scattered lengths
        console.print(sweet_spot_table(models, rows, title=Text(_title("Sweet spots", data.simulated, data.path)),
                                       uncertainties=intervals))
    if args.save:
        console.print(f"saved {len(models)} model(s) to {args.save}", soft_wrap=True, markup=False)
    if args.plot:
        console.print(f"wrote plot to {args.plot}", soft_wrap=True, markup=False)
    return 0


def _batching_note(batching: dict[str, Any]) -> str:
    """What --save recorded about the batching, so a user sees which tests the model will judge."""
    mixed = [k for k, v in batching.items() if v == "mixed"]
    if mixed:
        return (f"note: the points mix {' and '.join(mixed)} values; the model records {mixed[0]}=mixed "
                "and the plugin compares it with no test: fit one batching setting at a time")
    if not batching:
        return ("note: the points carry no requests/max_batch_size (add those CSV columns to record them); "
                "the plugin compares the model with every test")
    shown = " ".join(f"{k}={v}" for k, v in batching.items())
    missing = [k for k in ("requests", "max_batch_size") if k not in batching]
    return f"model fitted at {shown}" + (f" ({', '.join(missing)} unknown)" if missing else "") + "; the plugin compares it only with tests of the same batching"


def _title(what: str, simulated: bool, path: Any) -> str:
    return f"{'SIMULATED ' if simulated else ''}{what}: {Path(path).name}"
