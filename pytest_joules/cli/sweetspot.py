"""`joules sweetspot MODEL.json --n-in N`: the output length with the least energy per token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from .argtypes import tokens


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweetspot",
        help="the n_out that minimizes J per output token for a fitted model",
        description="Closed-form sweet spot n_out* = sqrt((θ1·n² + θ3·n + θ5)/θ4) of a fitted model.",
    )
    p.add_argument("model_file", metavar="MODEL.json", help="a file written by `joules fit --save` or `--json`")
    p.add_argument("--n-in", dest="n_in", type=tokens, nargs="+", required=True, metavar="N",
                   help="input length(s) in tokens")
    p.add_argument("--model", metavar="NAME", help="which model, when the file holds several")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import analytical
    from ..results import load_json

    raw = load_json(args.model_file)
    models = analytical.models_from_data(raw, args.model_file)
    simulated = bool(raw.get("simulated")) if isinstance(raw, dict) else False
    if args.model is not None:
        if args.model not in analytical.MODEL_NAMES:
            raise DataError(f"unknown model {args.model!r}; known models: {', '.join(analytical.MODEL_NAMES)}")
        chosen = [m for m in models if m.name == args.model]
        if not chosen:
            raise DataError(f"{args.model_file}: has no {args.model!r} model; it holds: {', '.join(m.name for m in models)}")
        model = chosen[0]
    elif len(models) > 1:
        raise DataError(
            f"{args.model_file}: holds {len(models)} models ({', '.join(m.name for m in models)}); "
            "pick one with --model NAME"
        )
    else:
        model = models[0]

    spots = [model.sweet_spot(n) for n in args.n_in]
    if args.json:
        print(json.dumps({
            "model": model.name,
            "simulated": simulated,
            "n_in_range": list(model.n_in_range),
            "n_out_range": list(model.n_out_range),
            "sweet_spots": [{
                "n_in": s.n_in,
                "n_out_opt": s.n_out_opt,
                "j_per_out_token_min": s.j_per_out_token_min,
                "tokens_per_joule_max": s.tokens_per_joule_max,
                "inside_range": s.inside_range,
                "n_in_inside_range": model.n_in_range[0] <= s.n_in <= model.n_in_range[1],
                "reason": s.reason,
            } for s in spots],
        }, allow_nan=False))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{'SIMULATED ' if simulated else ''}Sweet spot of the {model.name} model ({Path(args.model_file).name})",
        title_justify="left",
    )
    for name in ("n_in", "n_out*", "J/out-token there", "tokens/J there", "note"):
        table.add_column(name, justify="left" if name == "note" else "right")
    for s in spots:
        notes = []
        if not model.n_in_range[0] <= s.n_in <= model.n_in_range[1]:
            notes.append(f"n_in outside the fitted {model.n_in_range[0]}–{model.n_in_range[1]}")
        if s.n_out_opt is None:
            table.add_row(str(s.n_in), "none", "—", "—", "; ".join([s.reason or "", *notes]))
            continue
        if not s.inside_range:
            notes.append(f"n_out* outside the fitted {model.n_out_range[0]}–{model.n_out_range[1]}")
        table.add_row(str(s.n_in), f"{s.n_out_opt:.1f}", f"{s.j_per_out_token_min:.6g}",
                      f"{s.tokens_per_joule_max:.6g}", "; ".join(notes) or "inside the fitted range")
    Console().print(table)
    return 0
