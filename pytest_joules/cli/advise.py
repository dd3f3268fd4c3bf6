"""`joules advise MIX --model MODEL.json`: what a length mix costs, and what simple policies save.

The serving team's question, answered from a fitted model: the expected J per output token and
cost of the traffic in MIX (a CSV or JSONL of per-request n_in, n_out[, weight], as exported from
serving logs), its energy by length band, and the saving of truncating inputs, capping outputs
and (with a model fitted at another batching, --batch-model) a batch cap, each with the model's
band. See docs/mixes.md for what the model's per-point formula does and does not carry to a mix.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .argtypes import positive_float, token_list, tokens


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "advise",
        help="expected J/output-token and cost of a length mix, and what truncating or capping would save",
        description=("The energy of a length mix (CSV/JSONL of per-request n_in, n_out[, weight]) under a fitted "
                     "model, by length band, and the saving of simple policies, each with the model's band."),
    )
    p.add_argument("mix", metavar="MIX", help="CSV (header n_in,n_out[,weight]) or JSONL of the requests")
    p.add_argument("--model", dest="model_file", metavar="MODEL.json", required=True,
                   help="a model file written by `joules fit --save` (e.g. baselines/<device>/<engine>.model.json)")
    p.add_argument("--fit", metavar="NAME", default="best",
                   help="which model of the file: flops, memflops, linear, or best (the lowest leave-one-out MAPE)")
    p.add_argument("--truncate-inputs", type=token_list, nargs="+", metavar="N[,N...]",
                   help="input lengths to truncate to (default: powers of two at the mix's median and 90th percentile)")
    p.add_argument("--cap-outputs", type=token_list, nargs="+", metavar="M[,M...]",
                   help="output lengths to cap at (default: powers of two at the mix's median and 90th percentile)")
    p.add_argument("--batch-model", action="append", default=[], metavar="MODEL.json",
                   help="a model fitted at another batching (e.g. joules sweep --max-batch-size 4): its saving as a batch cap")
    p.add_argument("--context", type=tokens, metavar="TOKENS",
                   help="the served model's context: a request with n_in + n_out beyond it is an error")
    p.add_argument("--price", type=positive_float, metavar="PER_KWH", help="electricity price per kWh, for the cost")
    p.add_argument("--plot", metavar="FILE.png", help="also write a figure: energy by band and the policies")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p


def _load_model(path: str, choice: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, its bootstrap replicates or None, the file's document)."""
    from ..models import analytical, uncertainty
    from ..store.results import load_json

    raw = load_json(path)
    models = analytical.models_from_data(raw, path)
    model = analytical.best_model(models)
    if choice != "best":
        found = [m for m in models if m.name == choice]
        if not found:
            raise DataError(f"{path}: has no {choice!r} model; it holds: {', '.join(m.name for m in models)}")
        model = found[0]
    assert model is not None  # models_from_data refuses a file without models
    return model, uncertainty.from_document(raw, path).get(model.name), raw if isinstance(raw, dict) else {}


def _replicates(model: Any, found: Any, raw: dict[str, Any], path: str) -> tuple[Any, str]:
    """The model's replicates and where they come from: the file, or a bootstrap of the points
    it was fitted to (its "source") when the file has none."""
    from ..models import uncertainty

    if found is not None:
        return found, f"95%, from the {found.samples.shape[0]} bootstrap replicates in {Path(path).name}"
    source = raw.get("source")
    if isinstance(source, str) and model.name != "linear":
        from ..models.points import read_points

        for candidate in (Path(source), Path(path).parent / Path(source).name):
            if candidate.is_file():
                u = uncertainty.bootstrap(model, read_points(candidate).points)
                return u, (f"95%, bootstrapped now from {candidate} ({Path(path).name} keeps no replicates; "
                           f"`joules fit {candidate} --save {path}` stores them)")
    return None, (f"none: {Path(path).name} keeps no bootstrap replicates and its points were not found; "
                  "fit it again with `joules fit POINTS --save` to store them")


def _check_context(mix: Any, context: int | None, path: str) -> None:
    if context is None:
        return
    over = [(n, m) for n, m, _ in mix.entries if n + m > context]
    if over:
        n, m = max(over, key=sum)
        raise ConfigError(f"mix file {path}: {len(over)} length(s) exceed the context of {context} tokens "
                          f"(the longest: n_in + n_out = {n} + {m} = {n + m}); drop or truncate them, or give "
                          "the served model's --context")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..engines import mix as M
    from ..models.mix import Lengths, MixModel, advise, default_levels
    from ..report.advise import Context, render, save_plot, to_json

    mix = M.from_file(args.mix)
    _check_context(mix, args.context, args.mix)
    model, found, raw = _load_model(args.model_file, args.fit)
    u, band_note = _replicates(model, found, raw, args.model_file)
    lengths = Lengths.of(mix.entries)
    truncate = sorted({n for g in args.truncate_inputs for n in g}, reverse=True) if args.truncate_inputs \
        else default_levels(lengths.n_in, lengths.weight)
    cap = sorted({n for g in args.cap_outputs for n in g}, reverse=True) if args.cap_outputs \
        else default_levels(lengths.n_out, lengths.weight)
    others = []
    for path in args.batch_model:
        other, other_found, other_raw = _load_model(path, args.fit)
        others.append(MixModel(other, _replicates(other, other_found, other_raw, path)[0]))
    advice = advise(MixModel(model, u), lengths, truncate, cap, others)
    notes = []
    if not args.batch_model:
        notes.append("batch cap: give --batch-model with a model fitted at that batching (joules sweep "
                     "--max-batch-size N, then joules fit --save): one model knows one batching")
    simulated = raw.get("simulated") is True
    ctx = Context(mix=f"{Path(args.mix).name} ({mix.rows} rows, {len(mix.entries)} lengths)",
                  model_file=args.model_file, model=model.name, batching=model.batching_label(),
                  simulated=simulated, band_note=band_note, price=args.price, notes=tuple(notes))
    if args.plot:
        save_plot(args.plot, advice, ctx)
    if args.json:
        print(json.dumps(to_json(advice, ctx), allow_nan=False))
        return 0
    console = Console()
    render(advice, ctx, console)
    if args.plot:
        console.print(f"wrote plot to {args.plot}", soft_wrap=True, markup=False)
    return 0
