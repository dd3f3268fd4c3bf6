"""Rich tables of fitted models and their sweet spots (used by `joules fit` and the plugin summary)."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table

from ..analytical import PARAMETERS, TERMS, FittedModel


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def models_table(models: Sequence[FittedModel], title: str = "Fitted energy models") -> Table:
    """One row per model: each parameter with the term it multiplies, MAPE, LOO MAPE, range."""
    table = Table(title=title, title_justify="left")
    table.add_column("model", style="bold")
    table.add_column("parameter · term", no_wrap=True)
    table.add_column("MAPE", justify="right")
    table.add_column("LOO MAPE", justify="right")
    table.add_column("points", justify="right")
    table.add_column("fitted range", no_wrap=True)
    best = min((m.loo_mape for m in models if m.loo_mape is not None), default=None)
    for m in models:
        terms = "\n".join(
            f"{label} = {value:.4g}" + ("" if term == "1" else f" · {term}")
            for label, term, value in zip(PARAMETERS[m.name], TERMS[m.name], m.theta)
        )
        loo = _pct(m.loo_mape)
        if best is not None and m.loo_mape == best and len(models) > 1:
            loo = f"[green]{loo}[/green]"
        table.add_row(
            m.name,
            terms,
            _pct(m.mape),
            loo,
            str(m.n_points),
            f"n_in {m.n_in_range[0]}–{m.n_in_range[1]}\nn_out {m.n_out_range[0]}–{m.n_out_range[1]}",
            end_section=True,
        )
    table.caption = "J/out-token = Σ parameter · term, n = n_in, m = n_out; best LOO MAPE in green"
    table.caption_justify = "left"
    return table


def sweet_spot_table(
    models: Sequence[FittedModel], n_in_values: Sequence[int], title: str = "Sweet spots"
) -> Table:
    """One row per n_in; per model the optimal n_out, J/out-token and tokens/J there.

    An optimum outside the fitted n_out range is shown dim and flagged: it is an extrapolation.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("n_in", justify="right", style="bold", no_wrap=True)
    shown = [m for m in models if m.name != "linear"]
    for m in shown:
        table.add_column(f"{m.name} n_out*", justify="right")
        table.add_column(f"{m.name} J/out-tok", justify="right")
        table.add_column(f"{m.name} tok/J", justify="right")
    for n_in in n_in_values:
        outside = any(not (m.n_in_range[0] <= n_in <= m.n_in_range[1]) for m in shown)
        cells = [f"[dim]{n_in} (outside fit)[/dim]" if outside else str(n_in)]
        for m in shown:
            spot = m.sweet_spot(n_in)
            if spot.n_out_opt is None:
                cells += ["none", "—", "—"]
                continue
            n_out = f"{spot.n_out_opt:.0f}"
            if not spot.inside_range:
                n_out = f"[dim]{n_out} (outside fit)[/dim]"
            cells += [n_out, f"{spot.j_per_out_token_min:.4g}", f"{spot.tokens_per_joule_max:.4g}"]
        table.add_row(*cells)
    linear = [m for m in models if m.name == "linear"]
    notes = []
    if linear:
        notes.append("linear: no sweet spot (J/out-token only falls as n_out grows)")
    if shown and any(not m.sweet_spot(n).inside_range for m in shown for n in n_in_values if m.sweet_spot(n).n_out_opt):
        notes.append("n_out* (outside fit): beyond the measured n_out range, an extrapolation")
    if any(not (m.n_in_range[0] <= n <= m.n_in_range[1]) for m in shown for n in n_in_values):
        notes.append("n_in (outside fit): beyond the measured n_in range, an extrapolation")
    reasons = {m.sweet_spot(n).reason for m in shown for n in n_in_values if m.sweet_spot(n).reason}
    notes += sorted(reasons)
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table
