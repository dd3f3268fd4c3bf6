"""A PNG of the measurements and the fitted models (matplotlib, imported only when called)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from ..analytical import FittedModel, Point, tokens_per_joule_grid
from ..errors import ConfigError
from .heatmap import coarsen

_LINESTYLES = {"flops": "--", "memflops": "-", "linear": ":"}


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install pytest-joules[plot]") from None
    return Figure, FigureCanvasAgg


def save_plot(
    path: str | os.PathLike[str],
    points: Sequence[Point],
    models: Sequence[FittedModel] = (),
    title: str = "Energy per output token",
) -> None:
    """Write a figure: tokens/J heatmap (left) and J/out-token against n_out per n_in (right).

    Measured points are markers; each model is drawn as lines over the measured n_out range,
    one line style per model, one colour per n_in. The format follows the file's extension.
    """
    points = list(points)
    if not points:
        raise ConfigError("nothing to plot: no points")
    if Path(path).is_dir() or not Path(path).suffix:
        # matplotlib would quietly write PATH.png instead, and the report would name a file that is not there
        raise ConfigError(f"cannot write plot {path}: give a file name with an extension, such as {Path(path).name or 'plot'}.png")
    Figure, FigureCanvasAgg = _matplotlib()  # the Agg canvas directly: no pyplot, no global backend
    fig = Figure(figsize=(14, 6), layout="constrained")
    FigureCanvasAgg(fig)
    points, note = coarsen(points)
    if note:
        title = f"{title}\n({note})"
    fig.suptitle(title)
    _draw_heatmap(fig.add_subplot(1, 2, 1), points)
    _draw_curves(fig.add_subplot(1, 2, 2), points, models)
    path = Path(path)
    try:
        fig.savefig(path, dpi=110)
    except ValueError as exc:  # unknown extension
        raise ConfigError(f"cannot write plot {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot write plot {path}: {exc.strerror or exc}") from None


def _draw_heatmap(ax, points: Sequence[Point]) -> None:
    import numpy as np
    from matplotlib.colors import LogNorm

    n_in_values, n_out_values, grid = tokens_per_joule_grid(points)
    masked = np.ma.masked_invalid(grid)
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.max() > finite.min() else None
    image = ax.imshow(masked, cmap="RdYlGn", norm=norm, origin="upper", aspect="auto")
    best = np.unravel_index(np.nanargmax(grid), grid.shape)
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            mark = "★\n" if (i, j) == best else ""
            ax.text(j, i, f"{mark}{value:.3g}", ha="center", va="center", fontsize=8,
                    fontweight="bold" if mark else "normal")
    ax.set_xticks(range(len(n_out_values)), [str(v) for v in n_out_values])
    ax.set_yticks(range(len(n_in_values)), [str(v) for v in n_in_values])
    ax.set_xlabel("n_out (output tokens)")
    ax.set_ylabel("n_in (input tokens)")
    ax.set_title("tokens per joule (measured)")
    ax.figure.colorbar(image, ax=ax, label="tokens / J")


def _draw_curves(ax, points: Sequence[Point], models: Sequence[FittedModel]) -> None:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    n_in_values = sorted({p.n_in for p in points})
    colours = [colormaps["viridis"](k / max(len(n_in_values) - 1, 1) * 0.9) for k in range(len(n_in_values))]
    for colour, n_in in zip(colours, n_in_values):
        row = sorted((p.n_out, p.j_per_out_token) for p in points if p.n_in == n_in)
        xs, ys = zip(*row)
        ax.plot(xs, ys, "o", color=colour, markersize=5, label=f"n_in={n_in}")
        grid = np.geomspace(min(xs), max(xs), 200) if max(xs) > min(xs) else np.array([min(xs)])
        for model in models:
            ax.plot(grid, model.predict(n_in, grid), _LINESTYLES.get(model.name, "-."), color=colour, linewidth=1.2)
            spot = model.sweet_spot(n_in)
            if spot.n_out_opt is not None and min(xs) <= spot.n_out_opt <= max(xs):
                ax.plot([spot.n_out_opt], [spot.j_per_out_token_min], "x", color=colour, markersize=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n_out (output tokens, log2)")
    ax.set_ylabel("J per output token (log)")
    ax.set_title("J/out-token: measured (●) and models (lines, × sweet spot)")
    ax.grid(True, which="both", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    for model in models:
        mape = f"MAPE {model.mape:.1%}"
        handles.append(Line2D([], [], color="grey", linestyle=_LINESTYLES.get(model.name, "-."), label=f"{model.name} ({mape})"))
    ax.legend(handles=handles, fontsize=8, loc="best")
