"""`joules sweetspot MODEL.json --n-in N`: the output length with the least energy per token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..numbers import sig, tokens
from .argtypes import DeprecatedAlias, token_list


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweetspot",
        help="the n_out that minimizes J per output token for a fitted model",
        description="Closed-form sweet spot n_out* = sqrt((θ1·n² + θ3·n + θ5)/θ4) of a fitted model.",
    )
    p.add_argument("model_file", metavar="MODEL.json", help="a file written by `joules fit --save` or `--json`")
    p.add_argument("--n-in", dest="n_in", type=token_list, nargs="+", required=True, metavar="N[,N...]",
                   help="input length(s) in tokens: 512, or a list 128,512")
    p.add_argument("--fit", metavar="NAME", default="best",
                   help="which model of the file: flops, memflops, linear, all, or best "
                        "(default: the lowest leave-one-out MAPE)")
    p.add_argument("--model", dest="fit", action=DeprecatedAlias, new="--fit", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def _choose(analytical: Any, models: list[Any], choice: str, path: str) -> tuple[list[Any], str | None]:
    """The models to show and, when the file's best was picked for the user, why (one line)."""
    if choice == "all":
        return models, None
    if choice == "best":
        best = analytical.best_model(models)
        if len(models) == 1:
            return [best], None
        scores = ", ".join(f"{m.name} {_pct(m.loo_mape if m.loo_mape is not None else m.mape)}" for m in models)
        return [best], (f"chose the {best.name} model: the lowest leave-one-out MAPE of the file's {len(models)} "
                        f"({scores}); --fit NAME picks another, --fit all shows each")
    if choice not in analytical.MODEL_NAMES:
        raise DataError(f"unknown model {choice!r}; known models: {', '.join(analytical.MODEL_NAMES)} (or best, all)")
    chosen = [m for m in models if m.name == choice]
    if not chosen:
        raise DataError(f"{path}: has no {choice!r} model; it holds: {', '.join(m.name for m in models)}")
    return chosen, None


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _spots_json(model: Any, n_in: list[int]) -> dict[str, Any]:
    return {
        "model": model.name,
        "loo_mape": model.loo_mape,
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
        } for s in (model.sweet_spot(n) for n in n_in)],
    }


def _rows(model: Any, n_in: list[int]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for s in (model.sweet_spot(n) for n in n_in):
        notes = []
        if not model.n_in_range[0] <= s.n_in <= model.n_in_range[1]:
            notes.append(f"n_in outside the fitted {model.n_in_range[0]}–{model.n_in_range[1]}")
        if s.n_out_opt is None:
            rows.append((str(s.n_in), "none", "—", "—", "; ".join([s.reason or "", *notes])))
            continue
        if not s.inside_range:
            notes.append(f"n_out* outside the fitted {model.n_out_range[0]}–{model.n_out_range[1]}")
        # the same rounding as the plugin's sweet-spot table (numbers.tokens / numbers.sig)
        rows.append((str(s.n_in), tokens(s.n_out_opt), sig(s.j_per_out_token_min),
                     sig(s.tokens_per_joule_max), "; ".join(notes) or "inside the fitted range"))
    return rows


def run(args: argparse.Namespace) -> int:
    from ..models import analytical
    from ..store.results import load_json

    n_in = list(dict.fromkeys(n for group in args.n_in for n in group))  # 128,512 512 -> 128, 512
    raw = load_json(args.model_file)
    models = analytical.models_from_data(raw, args.model_file)
    simulated = raw.get("simulated", False) if isinstance(raw, dict) else False
    if not isinstance(simulated, bool):  # a string "false" would read as true
        raise DataError(f"{args.model_file}: 'simulated' must be true or false, got {simulated!r}")
    shown, why = _choose(analytical, models, args.fit, args.model_file)

    if args.json:
        if args.fit == "all":
            document: dict[str, Any] = {"simulated": simulated, "models": [_spots_json(m, n_in) for m in shown]}
        else:
            document = {**_spots_json(shown[0], n_in), "simulated": simulated,
                        "chosen_by": "lowest loo_mape" if args.fit == "best" else "--fit"}
        print(json.dumps(document, allow_nan=False))
        return 0

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    prefix = "SIMULATED " if simulated else ""
    what = f"the {shown[0].name} model" if len(shown) == 1 else f"{len(shown)} models"
    # the title is its own line, not the table's: a title wider than the table would wrap
    console.print(Text(f"{prefix}Sweet spot of {what}: {Path(args.model_file).name}"), soft_wrap=True)
    table = Table()
    if len(shown) > 1:
        table.add_column("model")
    for name in ("n_in", "n_out*", "J/out-token there", "tokens/J there", "note"):
        table.add_column(name, justify="left" if name == "note" else "right")
    for model in shown:
        for row in _rows(model, n_in):
            table.add_row(*([model.name] if len(shown) > 1 else []), *row)
    console.print(table)
    if why:
        console.print(why, markup=False, highlight=False)  # wrapped at words, not cut
    return 0
