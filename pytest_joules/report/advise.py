"""`joules advise` output: what a length mix costs and what simple policies would save.

Renders a `models.mix.Advice` (computed there) as rich tables, as one JSON object, or as a PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..models.mix import Advice, Estimate
from .footprint import J_PER_KWH

#: energy and cost are per this many output tokens
PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Context:
    """What the advice was computed from, for its headings."""

    mix: str
    model_file: str
    model: str
    batching: str
    simulated: bool
    band_note: str  # where the band comes from, or why there is none
    price: float | None = None
    notes: tuple[str, ...] = ()


def _value(e: Estimate, digits: str = ".4g") -> str:
    """"0.1524 ±0.2%": the band as its larger side, relative (the JSON keeps both ends)."""
    if e.low is None or e.high is None or not e.value:
        return f"{e.value:{digits}}"
    return f"{e.value:{digits}} ±{max(e.high - e.value, e.value - e.low) / abs(e.value):.1%}"


def _change(e: Estimate) -> str:
    """"-13.1% ±0.4": a relative change and its band's larger side, in percentage points."""
    if e.low is None or e.high is None:
        return f"{e.value:+.1%}"
    return f"{e.value:+.1%} ±{100 * max(e.high - e.value, e.value - e.low):.1f}"


def _kwh(j_per_token: float) -> float:
    return j_per_token * PER_TOKENS / J_PER_KWH


def render(advice: Advice, ctx: Context, console: Console) -> None:
    prefix = "SIMULATED " if ctx.simulated else ""
    out = Text(f"{prefix}Energy of the mix {ctx.mix} (model {ctx.model} of {ctx.model_file}, fitted at "
               f"{ctx.batching or 'unknown batching'})\n")
    j = advice.j_per_token
    out.append(f"  J per output token      {_value(j)}\n", style="bold")
    out.append(f"  J per request           {_value(advice.j_per_request, '.4g')}"
               f"   (mean {advice.input_tokens:.0f} tokens in, {advice.output_tokens:.0f} out)\n")
    def scaled(k: float) -> Estimate:
        return Estimate(k * j.value, None if j.low is None else k * j.low, None if j.high is None else k * j.high)

    out.append(f"  per 1M output tokens    {_value(scaled(_kwh(1.0)))} kWh")
    if ctx.price is not None:
        out.append(f" · cost {_value(scaled(_kwh(1.0) * ctx.price))} at {ctx.price:g}/kWh")
    else:
        out.append(" · cost: give --price (per kWh)")
    console.print(out, soft_wrap=True)
    console.print(Text(f"  ±: the model's band, {ctx.band_note}. It is the fit's uncertainty at its own batching; "
                       "a mix served otherwise (requests finishing at different times, arrivals over time) "
                       "can differ far more: docs/mixes.md", style="dim"), soft_wrap=True)
    if advice.outside > 0:
        console.print(Text(f"  {advice.outside:.0%} of the energy is in requests outside the model's fitted range "
                           "(extrapolated)", style="yellow"), soft_wrap=True)
    for note in ctx.notes:
        console.print(Text(f"  {note}", style="yellow"), soft_wrap=True)
    console.print(bands_table(advice))
    if advice.policies:
        console.print(policies_table(advice))


def bands_table(advice: Advice) -> Table:
    table = Table(title="Energy by length band (tokens)", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("n_in", "n_out", "requests", "out tokens", "energy", "J/out-token"):
        table.add_column(name, justify="left" if name in ("n_in", "n_out") else "right", no_wrap=True)
    for r in advice.bands:
        table.add_row(r.n_in, r.n_out, f"{r.requests:.1%}", f"{r.output_tokens:.1%}", f"{r.energy:.1%}",
                      _value(r.j_per_token))
    return table


def policies_table(advice: Advice) -> Table:
    table = Table(title="Policies (each alone, on the whole mix; against it as it is)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("policy", "J/out-token", "J/request", "tokens kept", "changes"):
        table.add_column(name, justify="left" if name in ("policy", "changes") else "right",
                         no_wrap=name != "policy")
    for p in advice.policies:
        table.add_row(p.name, _change(p.per_token), _change(p.per_request), f"{p.tokens_kept:.0%}", p.note)
    table.caption = Text("± in percentage points (paired bootstrap replicates). Capping outputs saves energy per "
                         "request by generating less: it pays only if the cut tokens were not needed.")
    table.caption_justify = "left"
    return table


def _estimate(e: Estimate) -> dict[str, Any]:
    return {"value": e.value, "low": e.low, "high": e.high}


def to_json(advice: Advice, ctx: Context) -> dict[str, Any]:
    j = advice.j_per_token
    return {
        "mix": ctx.mix, "model_file": ctx.model_file, "model": ctx.model, "batching": ctx.batching,
        "simulated": ctx.simulated, "band": ctx.band_note, "notes": list(ctx.notes),
        "j_per_out_token": _estimate(j), "j_per_request": _estimate(advice.j_per_request),
        "mean_n_in": advice.input_tokens, "mean_n_out": advice.output_tokens,
        "kwh_per_1m_output_tokens": _kwh(j.value),
        "cost_per_1m_output_tokens": None if ctx.price is None else _kwh(j.value) * ctx.price,
        "price_per_kwh": ctx.price, "outside_fitted_range": advice.outside,
        "bands": [{"n_in": r.n_in, "n_out": r.n_out, "requests": r.requests, "output_tokens": r.output_tokens,
                   "energy": r.energy, "j_per_out_token": _estimate(r.j_per_token)} for r in advice.bands],
        "policies": [{"policy": p.name, "j_per_out_token": _estimate(p.j_per_token),
                      "change_j_per_out_token": _estimate(p.per_token),
                      "change_energy_per_request": _estimate(p.per_request),
                      "output_tokens_kept": p.tokens_kept, "note": p.note} for p in advice.policies],
    }


def save_plot(path: str | os.PathLike[str], advice: Advice, ctx: Context) -> None:
    """Energy share by length band (left) and each policy's change of energy per request and of
    J per output token with their bands (right)."""
    from .plot import _matplotlib

    if Path(path).is_dir() or not Path(path).suffix:
        raise ConfigError(f"cannot write plot {path}: give a file name with an extension, such as advice.png")
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{'SIMULATED ' if ctx.simulated else ''}{ctx.mix}: {advice.j_per_token.value:.4g} J/out-token "
                 f"(model {ctx.model}, {ctx.batching or 'unknown batching'})")
    left = fig.add_subplot(1, 2, 1)
    names = [f"in {r.n_in}\nout {r.n_out}" for r in advice.bands]
    left.barh(names[::-1], [100 * r.energy for r in advice.bands][::-1], color="tab:orange", label="energy")
    left.barh(names[::-1], [100 * r.requests for r in advice.bands][::-1], height=0.3, color="tab:blue", label="requests")
    left.set_xlabel("share of the mix (%)")
    left.set_title("Energy by length band")
    left.legend(loc="lower right")
    right = fig.add_subplot(1, 2, 2)
    if advice.policies:
        ys = list(range(len(advice.policies)))[::-1]
        for offset, key, colour, label in ((0.15, "per_request", "tab:green", "energy per request"),
                                           (-0.15, "per_token", "tab:purple", "J per output token")):
            values = [getattr(p, key) for p in advice.policies]
            x = [100 * v.value for v in values]
            err = [[100 * (v.value - v.low) if v.low is not None else 0 for v in values],
                   [100 * (v.high - v.value) if v.high is not None else 0 for v in values]]
            right.errorbar(x, [y + offset for y in ys], xerr=err, fmt="o", color=colour, label=label, capsize=3)
        right.set_yticks(ys, [p.name for p in advice.policies])
        right.axvline(0, color="grey", lw=0.8)
        right.set_xlabel("change against the mix as it is (%), with the model's 95% band")
        right.legend(loc="best")
    right.set_title("Policies")
    try:
        fig.savefig(Path(path), dpi=110)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot write plot {path}: {getattr(exc, 'strerror', None) or exc}") from None
