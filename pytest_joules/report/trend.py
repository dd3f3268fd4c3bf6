"""A PNG of tests' J/output-token across saved runs (`joules history --plot`); matplotlib is
imported only when called (the `plot` extra)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..errors import ConfigError, DataError


def save_trend(path: str | os.PathLike[str], series: Sequence[Any]) -> None:
    """One line per series over the run ids (`history.Series`)."""
    from .plot import check_plot_path

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
