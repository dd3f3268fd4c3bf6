"""PNG plots (matplotlib, imported only when called): the measurements and the fitted models
(`joules fit|sweep --plot`), and tests' J/output-token across saved runs (`joules history --plot`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..models.analytical import FittedModel, Point, tokens_per_joule_grid
from ..errors import ConfigError, DataError
from .heatmap import coarsen



def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install pytest-joules[plot]") from None
    return Figure, FigureCanvasAgg


#: what matplotlib's Agg canvas writes (FigureCanvasAgg.get_supported_filetypes(), matplotlib 3.7+)
FORMATS = ("avif", "eps", "gif", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg", "svgz",
           "tif", "tiff", "webp")


def check_plot_path(path: str | os.PathLike[str], flag: str = "--plot") -> None:
    """ConfigError unless `path` names a figure file matplotlib can write, checked before any work:
    a directory (`--plot .` wrote a hidden `./.png`), no extension, or one it cannot write."""
    target = Path(path)
    name = target.name or str(path)
    if target.is_dir() or not target.suffix or name.startswith(".") and name.count(".") == 1:
        raise ConfigError(f"{flag} {path}: give a file name with an extension, such as "
                          f"{'trend' if name in ('', '.', '..') or target.is_dir() else name}.png")
    if target.suffix.lower().lstrip(".") not in FORMATS:
        raise ConfigError(f"{flag} {path}: matplotlib cannot write {target.suffix!r} figures; use one of "
                          f".png, .svg, .pdf (all: {', '.join(FORMATS)})")


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
    check_plot_path(path)  # matplotlib would quietly write PATH.png instead of a path without an extension
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
            ax.text(j, i, f"{mark}{value:.4g}", ha="center", va="center", fontsize=8,
                    color=_ink(image.cmap(image.norm(value))), fontweight="bold" if mark else "normal")
    ax.set_xticks(range(len(n_out_values)), [str(v) for v in n_out_values])
    ax.set_yticks(range(len(n_in_values)), [str(v) for v in n_in_values])
    ax.set_xlabel("n_out (output tokens)")
    ax.set_ylabel("n_in (input tokens)")
    ax.set_title("tokens per joule (measured)")
    from matplotlib.ticker import FuncFormatter

    bar = ax.figure.colorbar(image, ax=ax, label="tokens / J")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 6, not 6×10⁰
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _ink(rgba: Sequence[float]) -> str:
    """White text on a dark cell, black on a light one (relative luminance, sRGB weights)."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 else "black"


def _draw_curves(ax, points: Sequence[Point], models: Sequence[FittedModel]) -> None:
    """One curve per n_in, of the best model only: the flops and memflops curves nearly coincide,
    and three models times seven inputs is 21 lines no one can read. The others are in the legend."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ..models.analytical import best_model

    drawn = best_model(list(models))
    n_in_values = sorted({p.n_in for p in points})
    # tab10: distinct, saturated colours (viridis ends in a yellow that vanishes on white)
    palette = colormaps["tab10"] if len(n_in_values) <= 10 else colormaps["viridis"]
    colours = [palette(k) if len(n_in_values) <= 10 else palette(0.8 * k / (len(n_in_values) - 1))
               for k in range(len(n_in_values))]
    for colour, n_in in zip(colours, n_in_values):
        row = sorted((p.n_out, p.j_per_out_token) for p in points if p.n_in == n_in)
        xs, ys = zip(*row)
        ax.plot(xs, ys, "o", color=colour, markersize=5, label=f"n_in={n_in}")
        if drawn is None:
            continue
        grid = np.geomspace(min(xs), max(xs), 200) if max(xs) > min(xs) else np.array([min(xs)])
        ax.plot(grid, drawn.predict(n_in, grid), "-", color=colour, linewidth=1.4)
        spot = drawn.sweet_spot(n_in)
        if spot.n_out_opt is not None and min(xs) <= spot.n_out_opt <= max(xs):
            ax.plot([spot.n_out_opt], [spot.j_per_out_token_min], "x", color=colour, markersize=8, markeredgewidth=2)
    n_out_values = sorted({p.n_out for p in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(n_out_values, [str(v) for v in n_out_values])  # the measured lengths, not 2^k
    ax.set_yscale("log")
    # labels at 1, 2 and 5 of each decade: 10^0 and 10^-1 alone do not say what a point reads
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("n_out (output tokens)")
    ax.set_ylabel("J per output token")
    what = f"{drawn.name} model (lines, × sweet spot)" if drawn else "measured"
    ax.set_title(f"J/out-token: measured (●) and the {what}" if drawn else "J/out-token: measured (●)")
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    for model in models:
        loo = model.loo_mape if model.loo_mape is not None else model.mape
        shown = "drawn" if model is drawn else "not drawn"
        handles.append(Line2D([], [], color="black" if model is drawn else "none", linestyle="-",
                              label=f"{model.name}: LOO MAPE {loo:.2%} ({shown})"))
    ax.legend(handles=handles, fontsize=8, loc="best")


def save_trend(path: str | os.PathLike[str], series: Sequence[Any]) -> None:
    """One line per series over the run ids (`runs.Series`)."""
    check_plot_path(path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--plot needs matplotlib, which is not installed: pip install 'pytest-joules[plot]'") from None
    runs = sorted({p.run for s in series for p in s.points})
    fig = Figure(figsize=(10, 5), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas directly: no pyplot, no global backend
    ax = fig.add_subplot()
    for s in series:
        xs = [runs.index(p.run) for p in s.points if p.j_per_out_token is not None]
        ys = [p.j_per_out_token for p in s.points if p.j_per_out_token is not None]
        ax.plot(xs, ys, marker="o", label=f"{s.name} (n_in={s.n_in}, n_out={s.n_out}, requests={s.requests})")
    ax.set_xticks(range(len(runs)), runs)
    ax.set_xlabel("saved run")
    ax.set_ylabel("J per output token")
    simulated = any(s.simulated for s in series)
    ax.set_title("Energy per output token across runs" + (" (SIMULATED device)" if simulated else ""))
    ax.legend(fontsize="small")
    try:
        fig.savefig(path, dpi=110)
    except ValueError as exc:  # a format matplotlib cannot write after all
        raise ConfigError(f"--plot {path}: {exc}") from None
    except OSError as exc:
        raise DataError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
