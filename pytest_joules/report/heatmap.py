"""Terminal heatmap of tokens per joule over (n_in, n_out): the paper's Figure 3 in rich."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from rich.style import Style
from rich.table import Table
from rich.text import Text

from ..models.analytical import Point, tokens_per_joule_grid

# Worst to best: red, amber, green. Dark text stays readable on all three.
_STOPS = ((0xC0, 0x39, 0x2B), (0xF3, 0x9C, 0x12), (0x27, 0xAE, 0x60))


def _colour(fraction: float) -> str:
    """Hex colour for a position 0..1 on the red-amber-green scale."""
    fraction = min(max(fraction, 0.0), 1.0) * (len(_STOPS) - 1)
    i = min(int(fraction), len(_STOPS) - 2)
    t = fraction - i
    rgb = [round(a + (b - a) * t) for a, b in zip(_STOPS[i], _STOPS[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


#: more distinct lengths than this on an axis are binned to powers of two for display
MAX_AXIS = 16


def coarsen(points: Sequence[Point], limit: int = MAX_AXIS) -> tuple[list[Point], str | None]:
    """Points fit for a grid display, and a note saying what was done to them (None: nothing).

    Scattered lengths (say 1,000 random points) would make a grid with 1,000 columns; an axis
    with more than `limit` distinct values is snapped to the nearest power of two, and each bin
    keeps the median J/out-token of its points.
    """
    points = list(points)
    snap_in = len({p.n_in for p in points}) > limit
    snap_out = len({p.n_out for p in points}) > limit
    if not (snap_in or snap_out):
        return points, None

    def snap(v: int, on: bool) -> int:
        return 2 ** round(math.log2(v)) if on else v

    bins: dict[tuple[int, int], list[float]] = {}
    for p in points:
        bins.setdefault((snap(p.n_in, snap_in), snap(p.n_out, snap_out)), []).append(p.j_per_out_token)
    binned = [Point(n, m, statistics.median(v)) for (n, m), v in sorted(bins.items())]
    axes = " and ".join(name for name, on in (("n_in", snap_in), ("n_out", snap_out)) if on)
    return binned, f"{axes} binned to the nearest power of two (median J/out-token per bin)"


def _fmt(value: float) -> str:
    from ..numbers import sig

    return sig(value)  # 3 significant figures, as every figure shown


def heatmap(points: Sequence[Point], title: str | Text = "Tokens per joule") -> Table:
    """n_in rows × n_out columns; each measured cell shows tokens/J on a colour graded by it.

    The grading is logarithmic (efficiency spans orders of magnitude across the grid); the best
    cell is marked ★; unmeasured cells stay blank. Scattered lengths are binned (see `coarsen`).
    """
    points, note = coarsen(points)
    n_in_values, n_out_values, grid = tokens_per_joule_grid(points)
    finite = [float(v) for v in grid.flat if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 1.0)
    span = math.log(hi / lo) if hi > lo else 0.0
    caption = "tokens per joule (higher is better); ★ best" + (f"\n{note}" if note else "")
    from rich.cells import cell_len

    # as wide as its title and caption, which would otherwise wrap ("★ / best") in a narrow grid
    widest = max(cell_len(line) for line in [str(title), *caption.splitlines()])
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", min_width=widest)
    table.add_column("n_in \\ n_out", justify="right", style="bold")
    for m in n_out_values:
        table.add_column(str(m), justify="right")
    for i, n in enumerate(n_in_values):
        cells: list[Text | str] = [str(n)]
        for j in range(len(n_out_values)):
            value = float(grid[i, j])
            if not math.isfinite(value):
                cells.append("")
                continue
            fraction = math.log(value / lo) / span if span else 1.0
            best = value == hi
            label = ("★ " if best else "") + _fmt(value)
            cells.append(Text(label, style=Style(color="black", bgcolor=_colour(fraction), bold=best)))
        table.add_row(*cells)
    return table
