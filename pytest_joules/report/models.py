"""Rich tables of fitted models and their sweet spots (used by `joules fit` and the plugin summary)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..models.analytical import PARAMETERS, TERMS, FittedModel
from ..numbers import sig, tokens


#: marks the best model, as ★ marks the best cell of the heatmap
BEST = "★"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def models_table(models: Sequence[FittedModel], title: str | Text = "Fitted energy models") -> Table:
    """One row per model: each parameter with the term it multiplies, MAPE, LOO MAPE, range."""
    # min_width: a title wider than the table would wrap onto a second line
    table = Table(title=title, title_justify="left", min_width=cell_len(str(title)))
    table.add_column("model", style="bold")
    table.add_column("parameter · term", no_wrap=True)
    table.add_column("MAPE", justify="right")
    table.add_column("LOO MAPE", justify="right")
    table.add_column("points", justify="right")
    table.add_column("fitted range", no_wrap=True)
    best = min((m.loo_mape for m in models if m.loo_mape is not None), default=None)
    for m in models:
        terms = "\n".join(
            f"{label} = {sig(value)}" + ("" if term == "1" else f" · {term}")
            for label, term, value in zip(PARAMETERS[m.name], TERMS[m.name], m.theta)
        )
        loo = _pct(m.loo_mape)
        if best is not None and m.loo_mape == best and len(models) > 1:
            loo = f"[green]{loo} {BEST}[/green]"  # the mark, not the colour alone: a CI log has none
        table.add_row(
            m.name,
            terms,
            _pct(m.mape),
            loo,
            str(m.n_points),
            f"n_in {m.n_in_range[0]}–{m.n_in_range[1]}\nn_out {m.n_out_range[0]}–{m.n_out_range[1]}",
            end_section=True,
        )
    table.caption = f"J/out-token = Σ parameter · term, n = n_in, m = n_out; {BEST} lowest LOO MAPE"
    table.caption_justify = "left"
    return table


#: marks a length beyond the measured range (the figure is an extrapolation)
BEYOND = "*"


def _interval_cell(u: Any, model: FittedModel, n_in: int) -> str:
    """n_out*'s confidence interval, "low–high", marked when it reaches past the measured n_out range."""
    iv = u.sweet_spot(n_in, model.n_out_range)
    if iv is None:
        return "—"
    high = "∞" if iv.n_out.high == float("inf") else tokens(iv.n_out.high)
    text = f"{tokens(iv.n_out.low)}–{high}"
    return f"[yellow]{text}{BEYOND}[/yellow]" if iv.leaves_range else text


def sweet_spot_table(
    models: Sequence[FittedModel], n_in_values: Sequence[int], title: str | Text = "Sweet spots",
    uncertainties: Mapping[str, Any] | None = None, verbose: bool = False,
) -> Group:
    """One row per n_in; per model the optimal n_out, J/out-token and tokens/J there, to three
    significant figures (as everywhere). Compact: 80 columns hold it with its interval.

    An optimum or n_in outside the fitted range is marked `*`: it is an extrapolation. With
    `uncertainties` (model name -> uncertainty.Uncertainty), each model that has one gets a column
    with n_out*'s confidence interval; how it was made is told only when `verbose` (and in the docs).
    """
    uncertainties = uncertainties or {}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    shown = [m for m in models if m.name != "linear"]
    # several models: a row per model under each n_in (columns of each model side by side would
    # not fit 80 columns with their intervals)
    several = len(shown) > 1
    with_ci = any(m.name in uncertainties for m in shown)
    table.add_column("n_in", justify="right", style="bold", no_wrap=True)
    if several:
        table.add_column("model", no_wrap=True)
    table.add_column("n_out*", justify="right", no_wrap=True)
    if with_ci:
        level = next(uncertainties[m.name].level for m in shown if m.name in uncertainties)
        table.add_column(f"{level:.0%} range", justify="right", no_wrap=True)
    table.add_column("J/tok", justify="right", no_wrap=True)
    table.add_column("tok/J", justify="right", no_wrap=True)
    beyond = False
    for n_in in n_in_values:
        outside = any(not (m.n_in_range[0] <= n_in <= m.n_in_range[1]) for m in shown)
        beyond = beyond or outside
        for i, m in enumerate(shown):
            first = f"[dim]{n_in}{BEYOND}[/dim]" if outside else str(n_in)
            cells = [first if i == 0 else ""] + ([m.name] if several else [])
            spot = m.sweet_spot(n_in)
            interval = ([_interval_cell(uncertainties[m.name], m, n_in)] if m.name in uncertainties else ["—"]) \
                if with_ci else []
            beyond = beyond or any(BEYOND in c for c in interval)
            if spot.n_out_opt is None:
                table.add_row(*cells, "none", *interval, "—", "—")
                continue
            n_out = tokens(spot.n_out_opt)
            if not spot.inside_range:
                n_out, beyond = f"[dim]{n_out}{BEYOND}[/dim]", True
            table.add_row(*cells, n_out, *interval, sig(spot.j_per_out_token_min), sig(spot.tokens_per_joule_max),
                          end_section=several and i == len(shown) - 1)
    notes = []
    if any(m.name == "linear" for m in models):
        notes.append("linear: no sweet spot (J/out-token only falls as n_out grows)")
    if beyond:
        notes.append(f"{BEYOND} beyond the measured lengths: an extrapolation")
    intervals = [(m.name, uncertainties[m.name]) for m in shown if m.name in uncertainties]
    if intervals:
        u = intervals[0][1]
        notes.append(f"{u.level:.0%} range: where n_out* lies, given the fit's scatter")
        if verbose:
            dfs = ", ".join(f"{name} {v.df}" for name, v in intervals)
            notes.append(f"  ({u.method}, {u.samples.shape[0]} replicates, widened for the residual degrees of "
                         f"freedom: {dfs})")
    reasons = {m.sweet_spot(n).reason for m in shown for n in n_in_values if m.sweet_spot(n).reason}
    notes += sorted(r for r in reasons if r)
    # title and notes on lines of their own, not wrapped to the figures' width
    head = title if isinstance(title, Text) else Text.from_markup(str(title))
    head.stylize("italic")
    return Group(head, table, *(Text(note, style="dim") for note in notes))
