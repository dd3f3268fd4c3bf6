"""The HTML dashboard: one self-contained page of the saved runs, the baselines and the model.

Charts are drawn by Plotly's JavaScript library (plotly.js), read from the `plotly` Python
package's wheel and inlined, so the page opens from disk with no server and no network. Why
Plotly: it is kept up (monthly releases, MIT), its offline bundle ships inside a PyPI package
(nothing outside PyPI can be fetched here or on a locked-down CI runner), and error bars, filled
bands, shapes, heatmaps, log axes, twin axes and hover come built in, so the page is data and a
few calls, not hand-drawn SVG. The cost is the page's size (~5 MB, the bundle).

The page holds: per test, J/output-token over the runs with each run's interval, the baseline
and the tolerance band (latency on a second axis where the run measured it); the tokens-per-joule
heatmap of the latest run; the fitted model's curves with their band and each sweet spot's
interval. A plain value (`DashboardData`) in, HTML out; `joules dashboard` gathers the value.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class RunPoint:
    """One test's reading in one saved run."""

    run: str
    label: str
    j: float | None
    low: float | None = None
    high: float | None = None
    verdict: str | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None


@dataclass
class TestSeries:
    name: str
    workload: str
    #: the chart's title: the test without its file and grid id (the workload says those)
    title: str = ""
    runs: list[RunPoint] = field(default_factory=list)
    baseline: float | None = None
    tolerance: float | None = None


@dataclass
class Curve:
    """The model's J/output-token over n_out at one n_in, its band, and its sweet spot."""

    n_in: int
    n_out: list[float]
    j: list[float]
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    opt: float | None = None
    opt_low: float | None = None
    opt_high: float | None = None
    j_opt: float | None = None


@dataclass
class DashboardData:
    title: str
    simulated: bool
    device: str
    generated: str
    tests: list[TestSeries] = field(default_factory=list)
    #: tokens/J of the latest run: {"n_in": [...], "n_out": [...], "z": [[...]], "source": "..."}
    heatmap: dict[str, Any] | None = None
    model: str = ""
    curves: list[Curve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plotly_bundle() -> str:
    """plotly.js from the `plotly` package (the `dashboard` extra); ConfigError naming the fix."""
    try:
        from importlib.resources import files

        return (files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise ConfigError("joules dashboard draws with plotly.js from the plotly package: "
                          "pip install 'pytest-joules[dashboard]' (or pip install plotly)") from None


def _json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value, allow_nan=False).replace("</", "<\\/")


def render(data: DashboardData, bundle: str) -> str:
    """The page's HTML, with `bundle` (plotly.js) inlined."""
    payload = _json(asdict(data))
    banner = ('<p class="sim">SIMULATED device: these figures show the pipeline working, not a measurement '
              "of real hardware.</p>") if data.simulated else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return _PAGE.format(title=html.escape(data.title), device=html.escape(data.device),
                        generated=html.escape(data.generated), banner=banner,
                        notes=f"<ul class=notes>{notes}</ul>" if notes else "",
                        bundle=bundle.replace("</script", "<\\/script"), payload=payload, script=_SCRIPT)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }}
h1 {{ font-size: 1.4em; margin: 0 0 .2em; }} h2 {{ font-size: 1.15em; margin: 1.4em 0 .3em; }}
.meta {{ color: #555; margin: 0; }} .sim {{ background: #fdecea; color: #a61b1b; padding: .4em .7em; font-weight: 600; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: .6em; }}
.chart {{ height: 280px; border: 1px solid #eee; }} .wide {{ height: 440px; }}
#joules-errors:empty {{ display: none; }} #joules-errors {{ color: #a61b1b; white-space: pre-wrap; }}
</style>
<script>
// page errors into the DOM too, so a headless test (and a reader) sees them
window.__joulesErrors = [];
window.addEventListener("error", function (e) {{
  window.__joulesErrors.push(String(e.message || e));
  var el = document.getElementById("joules-errors"); if (el) el.textContent = window.__joulesErrors.join("\\n");
}});
</script>
<script>{bundle}</script>
</head><body>
<h1>{title}</h1>
<p class="meta">{device} · generated {generated}</p>
{banner}{notes}
<pre id="joules-errors"></pre>
<h2>J/output-token over the saved runs</h2>
<p class="meta">Each point is a run's median with its interval; the line is the baseline, the band the
tolerance above it. Latency (right axis) where the run measured it.</p>
<div id="tests" class="grid"></div>
<h2>Tokens per joule (latest run)</h2>
<div id="heatmap" class="chart wide"></div>
<h2>Sweet spots of the fitted model</h2>
<p class="meta">J/output-token the model predicts over n_out, its band, and each n_in's sweet spot n_out*
with its interval.</p>
<div id="sweet" class="chart wide"></div>
<script>
var DATA = {payload};
{script}
</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
  var drawn = 0, config = {displaylogo: false, displayModeBar: false, responsive: true};
  function done() { drawn += 1; document.body.setAttribute("data-charts", String(drawn)); }
  function plot(el, traces, layout) {
    layout.margin = layout.margin || {l: 60, r: 60, t: 50, b: 45};
    layout.font = {size: 11};
    Plotly.newPlot(el, traces, layout, config).then(done);
  }
  DATA.tests.forEach(function (t, i) {
    var el = document.createElement("div"); el.className = "chart"; el.id = "test-" + i;
    document.getElementById("tests").appendChild(el);
    var x = t.runs.map(function (r) { return r.run; });
    var y = t.runs.map(function (r) { return r.j; });
    var traces = [{x: x, y: y, name: "J/output-token", mode: "lines+markers", type: "scatter",
      text: t.runs.map(function (r) { return r.label + (r.verdict ? "<br>" + r.verdict : ""); }),
      hovertemplate: "run %{text}<br>%{y:.3g} J/token<extra></extra>",
      error_y: {type: "data", symmetric: false,
        array: t.runs.map(function (r) { return r.high == null || r.j == null ? 0 : r.high - r.j; }),
        arrayminus: t.runs.map(function (r) { return r.low == null || r.j == null ? 0 : r.j - r.low; })},
      marker: {color: t.runs.map(function (r) { return r.verdict === "regression" ? "#c0392b" : "#2c6fbb"; }), size: 8}}];
    var shapes = [];
    if (t.baseline != null) {
      var top = t.baseline * (1 + (t.tolerance == null ? 0.05 : t.tolerance));
      shapes.push({type: "rect", xref: "paper", x0: 0, x1: 1, y0: t.baseline, y1: top,
                   fillcolor: "rgba(46, 204, 113, 0.15)", line: {width: 0}});
      shapes.push({type: "line", xref: "paper", x0: 0, x1: 1, y0: t.baseline, y1: t.baseline,
                   line: {color: "#27ae60", width: 2, dash: "dash"}});
      traces.push({x: [x[0]], y: [top], mode: "markers", marker: {opacity: 0}, showlegend: false, hoverinfo: "skip"});
    }
    var layout = {title: {text: t.title + "<br><sub>" + t.workload + "</sub>", font: {size: 12}},
                  xaxis: {type: "category", title: {text: "run"}}, yaxis: {title: {text: "J/output-token"}},
                  shapes: shapes, showlegend: false};
    ["ttft_ms", "tpot_ms"].forEach(function (key) {
      var v = t.runs.map(function (r) { return r[key]; });
      if (v.some(function (z) { return z != null; })) {
        traces.push({x: x, y: v, name: key.slice(0, 4).toUpperCase() + " ms", yaxis: "y2", mode: "lines+markers",
                     line: {dash: "dot"}});
        layout.yaxis2 = {title: {text: "latency (ms)"}, overlaying: "y", side: "right"};
        layout.showlegend = true;
      }
    });
    plot(el, traces, layout);
  });
  var h = DATA.heatmap;
  if (h) {
    var text = h.z.map(function (row) { return row.map(function (v) { return v == null ? "" : v.toPrecision(3); }); });
    plot("heatmap", [{type: "heatmap", x: h.n_out.map(String), y: h.n_in.map(String), z: h.z, text: text,
                      texttemplate: "%{text}", colorscale: [[0, "#c0392b"], [0.5, "#f1c40f"], [1, "#27ae60"]], colorbar: {title: {text: "tok/J"}},
                      hovertemplate: "n_in %{y}, n_out %{x}: %{z:.3g} tokens/J<extra></extra>"}],
         {title: {text: "tokens per joule, " + h.source + " (higher is better)"},
          xaxis: {title: {text: "n_out"}, type: "category"}, yaxis: {title: {text: "n_in"}, type: "category"}});
  } else { document.getElementById("heatmap").textContent = "No grid of measurements in the latest run."; }
  if (DATA.curves.length) {
    var traces = [], colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
    DATA.curves.forEach(function (c, i) {
      var col = colors[i % colors.length];
      if (c.low.length) {
        traces.push({x: c.n_out.concat(c.n_out.slice().reverse()), y: c.high.concat(c.low.slice().reverse()),
                     fill: "toself", fillcolor: col, opacity: 0.15, line: {width: 0}, showlegend: false,
                     hoverinfo: "skip", type: "scatter"});
      }
      traces.push({x: c.n_out, y: c.j, name: "n_in " + c.n_in, mode: "lines", line: {color: col}, type: "scatter",
                   hovertemplate: "n_out %{x:.0f}: %{y:.3g} J/token<extra>n_in " + c.n_in + "</extra>"});
      if (c.opt != null) {
        traces.push({x: [c.opt], y: [c.j_opt], mode: "markers", marker: {color: col, size: 10, symbol: "diamond"},
                     showlegend: false, type: "scatter",
                     error_x: {type: "data", symmetric: false,
                               array: [c.opt_high == null ? 0 : c.opt_high - c.opt],
                               arrayminus: [c.opt_low == null ? 0 : c.opt - c.opt_low]},
                     hovertemplate: "n_in " + c.n_in + ": n_out* %{x:.3g}, %{y:.3g} J/token<extra></extra>"});
      }
    });
    plot("sweet", traces, {title: {text: "model " + DATA.model + ": J/output-token over n_out"},
                           xaxis: {type: "log", title: {text: "n_out (tokens)"},
                                   tickvals: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]},
                           yaxis: {type: "log", title: {text: "J/output-token (log)"}}});
  } else { document.getElementById("sweet").textContent = "No fitted model beside the baselines."; }
})();
"""
