"""The report pieces of the fit: terminal heatmap, model tables, and the PNG plot."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from rich.console import Console

from pytest_joules.models.analytical import FittedModel, Point, fit_all
from pytest_joules.cli import main
from pytest_joules.errors import ConfigError
from pytest_joules.report.heatmap import heatmap
from pytest_joules.report.models import models_table, sweet_spot_table
from pytest_joules.numbers import sig, tokens
from pytest_joules.report.plot import save_plot

GRID = [64, 256, 1024, 4096]
TRUE = FittedModel("memflops", (0.05, 2e-7, 1e-5, 3e-4, 2e-5, 1.5), 0.0, None, 1, (64, 4096), (64, 4096))


def points(limit: int = 8192) -> list[Point]:
    rng = np.random.default_rng(0)
    return [Point(n, m, TRUE.predict(n, m) * (1 + 0.01 * rng.standard_normal()))
            for n in GRID for m in GRID if n + m <= limit]


def render(renderable) -> str:
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    return console.export_text(styles=False)


def rows(text: str) -> dict[str, list[str]]:
    """Table body rows keyed by their first cell; cells stripped (empty string for a hole)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = cells[1:]
    return out


# -- terminal heatmap --------------------------------------------------------------------------------
def test_heatmap_cells_best_mark_and_holes():
    pts = points(limit=4096 + 256)  # leaves holes where n_in + n_out > 4352
    text = render(heatmap(pts, title="SIMULATED tokens per joule"))
    assert text.startswith("SIMULATED tokens per joule")
    body = rows(text)
    assert list(body) == [str(n) for n in GRID]
    assert body["4096"][2:] == ["", ""] and all(body["4096"][:2])
    assert body["1024"][3] == "" and all(body["1024"][:3])
    by_cell = {(p.n_in, p.n_out): 1 / p.j_per_out_token for p in pts}
    best = max(by_cell, key=by_cell.get)
    marked = [(n, GRID[j]) for n in GRID for j, cell in enumerate(body[str(n)]) if cell.startswith("★")]
    assert marked == [best]
    assert body["64"][0] == sig(by_cell[(64, 64)])  # 3 significant figures, as every figure shown
    assert text.count("★") == 2  # the best cell and the caption


def test_heatmap_colour_grades_worst_red_best_green():
    console = Console(width=200, color_system="truecolor", force_terminal=True)
    table = heatmap([Point(64, 64, 1.0), Point(64, 128, 0.1), Point(128, 64, 0.5)])
    colours = {seg.text.strip(): seg.style.bgcolor.get_truecolor() for seg in console.render(table)
               if seg.style is not None and seg.style.bgcolor is not None and seg.text.strip()}
    assert tuple(colours["1.00"]) == (0xC0, 0x39, 0x2B)  # worst: 1 token/J, red
    assert tuple(colours["★ 10.0"]) == (0x27, 0xAE, 0x60)  # best: 10 tokens/J, green
    red, green, _ = colours["2.00"]  # log scale: 2 tokens/J is 30% of the way, between red and amber
    assert 0xC0 < red < 0xF3 and 0x39 < green < 0x9C


def test_heatmap_single_point_and_repeated_measurements():
    text = render(heatmap([Point(64, 64, 0.5), Point(64, 64, 0.25), Point(64, 64, 1.0)]))
    assert rows(text)["64"] == ["★ 2.00"]  # median 0.5 J/token -> 2 tokens/J


# -- model tables --------------------------------------------------------------------------------------
def test_models_and_sweet_spot_tables():
    models = fit_all(points())
    text = render(models_table(models, title="SIMULATED fitted"))
    assert text.startswith("SIMULATED fitted")
    for m in models:
        assert m.name in text and f"{m.mape:.2%}" in text and f"{m.loo_mape:.2%}" in text
    assert "θ5 = " in text and "a = " in text
    spots = render(sweet_spot_table(models, [64, 1024, 100_000], title="Sweet"))
    lines = [line.split() for line in spots.splitlines()]
    at = next(i for i, cells in enumerate(lines) if cells[:2] == ["1024", "flops"])
    memflops = models[1].sweet_spot(1024)
    # two paper models: a row each under the n_in (80 columns hold it), three significant figures
    assert lines[at + 1][:3] == ["memflops", tokens(memflops.n_out_opt), sig(memflops.j_per_out_token_min)]
    assert ["100000*", "flops"] in [cells[:2] for cells in lines]
    assert "linear: no sweet spot" in spots
    assert "* beyond the measured lengths" in spots


def test_sweet_spot_table_shows_missing_optimum():
    model = FittedModel("flops", (0.05, 2e-7, 1e-5, 3e-4, 0.0), 0.01, 0.02, 9, (64, 512), (64, 512))
    text = render(sweet_spot_table([model], [64], title="Sweet"))
    assert [line.split() for line in text.splitlines() if line.strip().startswith("64")] == [["64", "none", "—", "—"]]
    assert "θ4 = 0" in text


# -- PNG -----------------------------------------------------------------------------------------------
def test_save_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    pts = points(limit=4096)
    path = tmp_path / "fit.png"
    save_plot(path, pts, fit_all(pts), title="SIMULATED test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_save_plot_without_models_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "fit.svg"
    save_plot(path, points())
    assert path.read_text().lstrip().startswith("<?xml")


def test_save_plot_errors(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ConfigError, match="nothing to plot"):
        save_plot(tmp_path / "x.png", [])
    with pytest.raises(ConfigError, match=r"--plot .*x\.nope: matplotlib cannot write '\.nope' figures"):
        save_plot(tmp_path / "x.nope", points())
    with pytest.raises(ConfigError, match="cannot write plot .*missing/x.png"):
        save_plot(tmp_path / "missing" / "x.png", points())
    for where in (tmp_path, tmp_path / "fit"):  # a directory, or no extension: matplotlib would write *.png elsewhere
        with pytest.raises(ConfigError, match="--plot .*give a file name with an extension"):
            save_plot(where, points())
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / f"{tmp_path.name}.png").exists()


def test_save_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ConfigError, match=r"pip install pytest-joules\[plot\]"):
        save_plot(tmp_path / "x.png", points())


def test_fit_plot_option(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    data = tmp_path / "d.csv"
    data.write_text("n_in,n_out,j_per_out_token\n" + "".join(f"{p.n_in},{p.n_out},{p.j_per_out_token}\n" for p in points()))
    png = tmp_path / "out.png"
    assert main(["fit", str(data), "--json", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["models"]  # stdout stays one JSON object with --plot
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["fit", str(data), "--plot", str(tmp_path / "x.nope")]) == 2
    assert "matplotlib cannot write '.nope' figures" in capsys.readouterr().err


def test_scattered_lengths_are_binned_to_powers_of_two(tmp_path):
    rng = np.random.default_rng(5)
    pts = [Point(int(n), int(m), TRUE.predict(int(n), int(m)))
           for n, m in zip(np.exp2(rng.uniform(6, 12, 300)).round(), np.exp2(rng.uniform(6, 12, 300)).round())]
    text = render(heatmap(pts))
    body = rows(text)
    assert list(body) == ["64", "128", "256", "512", "1024", "2048", "4096"]
    assert all(len(cells) == 7 for cells in body.values())
    assert "n_in and n_out binned to the nearest power of two" in text
    # each bin shows the median of its points: check one bin against a direct computation
    in_bin = [p.j_per_out_token for p in pts if 2 ** round(np.log2(p.n_in)) == 512 and 2 ** round(np.log2(p.n_out)) == 256]
    assert body["512"][2].lstrip("★ ") == sig(1 / float(np.median(in_bin)))


def test_few_distinct_lengths_are_not_binned():
    pts = [Point(n, m, 0.1) for n in (100, 300) for m in (50, 70)]
    text = render(heatmap(pts))
    assert list(rows(text)) == ["100", "300"] and "binned" not in text


# -- a figure that reads (issue 13, fix 10) ------------------------------------------------------------
def _axes():
    from matplotlib.figure import Figure

    return Figure().add_subplot(1, 1, 1)


def _luminance(colour) -> float:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_heatmap_text_is_light_on_dark_cells_and_dark_on_light_ones():
    from pytest_joules.report.plot import _draw_heatmap

    ax = _axes()
    _draw_heatmap(ax, points())
    image = ax.images[0]
    for text in ax.texts:
        cell = image.cmap(image.norm(float(text.get_text().lstrip("★\n").replace(",", ""))))
        assert abs(_luminance(text.get_color()) - _luminance(cell)) > 0.4, text.get_text()


def test_curves_one_readable_line_per_input_and_labelled_log_ticks():
    from pytest_joules.report.plot import _draw_curves

    pts = points()
    models = fit_all(pts)
    ax = _axes()
    _draw_curves(ax, pts, models)
    curves = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert len(curves) == len(GRID)  # the best model's curve per n_in, not one per model on top of each other
    assert all(_luminance(line.get_color()) < 0.75 for line in ax.lines)  # no faint yellow on white
    low, high = ax.get_ylim()
    labelled = [(t, label.get_text()) for t, label in zip(ax.get_yticks(), ax.get_yticklabels()) if low <= t <= high]
    assert len(labelled) >= 3 and all(text for _, text in labelled)  # not 10^0 and 10^-1 alone
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("(drawn)" in t for t in legend) == 1 and sum("not drawn" in t for t in legend) == len(models) - 1


def test_fit_titles_the_figure_with_model_and_gpu(tmp_path, monkeypatch, capsys):
    import pytest_joules.report.plot as plot
    from pathlib import Path

    seen = {}
    monkeypatch.setattr(plot, "save_plot", lambda path, pts, models, title: seen.setdefault("title", title))
    sweep = Path(__file__).parent.parent / "baselines" / "h100-sxm-simulated" / "sim-llama-3-1-8b-bf16-graphs.sweep.json"
    assert main(["fit", str(sweep), "--plot", str(tmp_path / "f.png")]) == 0
    assert seen["title"] == "SIMULATED Energy per output token: Llama-3.1-8B on H100-SXM"
