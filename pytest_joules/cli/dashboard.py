"""`joules dashboard --out DIR`: a static HTML page of the saved runs, the baselines and the model.

Reads the runs `pytest --joules --joules-autosave` saved (the nearest `.joules/`, or --storage),
the baseline file and the fitted model of the latest run's device and engine (the nearest
`baselines/`, or --baselines), and writes DIR/index.html: one self-contained file (plotly.js
inlined, the `dashboard` extra) that opens from disk with no server. Drawn by report/dashboard.py.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
from pathlib import Path
from typing import Any

from ..errors import DataError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard", help="write a static HTML dashboard of the saved runs, the baselines and the model",
        description="Write DIR/index.html: per test J/output-token over the saved runs with the baseline and the "
                    "tolerance band, the tokens-per-joule heatmap and the model's sweet-spot curves. One file, "
                    "opens from disk (needs plotly: pip install 'pytest-joules[dashboard]').",
    )
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write index.html into (made if missing)")
    p.add_argument("--baselines", metavar="DIR", default=None,
                   help="the baseline store (default: the nearest baselines/ up to the repository root)")
    from ..store import runs

    runs.add_storage_argument(p)
    return p


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _latency(raw: dict[str, Any], key: str) -> float | None:
    latency = raw.get("latency")
    source: dict[str, Any] = latency if isinstance(latency, dict) else raw
    ms = _finite(source.get(f"{key}_ms"))
    seconds = _finite(source.get(f"{key}_s"))
    return ms if ms is not None else None if seconds is None else seconds * 1000


def _series(files: list[tuple[Any, Any]], entries: dict[str, Any]) -> list[Any]:
    """Each test at each workload across the runs, oldest first, with its baseline."""
    from ..judge import stats
    from ..report.dashboard import RunPoint, TestSeries

    series: dict[tuple[Any, ...], Any] = {}
    for run, results in files:
        git = results.machine.get("git") if isinstance(results.machine.get("git"), dict) else {}
        label = run.id + (f" {str(git.get('commit'))[:7]}" if git.get("commit") else "")
        for row in results.rows:
            w = row.workload
            key = (row.name, w.n_in, w.n_out, w.requests, w.max_batch_size)
            workload = f"n_in {w.n_in} → n_out {w.n_out}, {w.requests} request{'s' if w.requests != 1 else ''}"
            title = row.name.split("::", 1)[-1].replace(f"[n_in={w.n_in}-n_out={w.n_out}]", "")
            s = series.setdefault(key, TestSeries(row.name, workload, title))
            low = high = None
            if len(row.round_values) >= 2:
                summary = stats.summarize(row.round_values)
                low, high = _finite(summary.ci_low), _finite(summary.ci_high)
            verdict = row.raw.get("verdict") if isinstance(row.raw.get("verdict"), dict) else {}
            s.runs.append(RunPoint(run.id, label,
                                   _finite(row.j_per_out_token), low, high, verdict.get("status"),
                                   _latency(row.raw, "ttft"), _latency(row.raw, "tpot")))
            s.tolerance = _finite(verdict.get("tolerance")) or s.tolerance
            entry = entries.get(row.name)
            if entry is not None and all(entry.workload.get(k) == v for k, v in
                                         (("n_in", w.n_in), ("n_out", w.n_out), ("requests", w.requests))):
                s.baseline = entry.j_per_out_token
    return [series[k] for k in sorted(series, key=lambda k: (k[0], k[1], k[2], k[3], k[4] or 0))]


def _heatmap(run: Any, results: Any) -> dict[str, Any] | None:
    """Tokens per joule of the latest run's grid (its most common batching), None without a grid."""
    import statistics
    from collections import Counter

    valid = [r for r in results.rows if _finite(r.j_per_out_token)]
    if not valid:
        return None
    batching = Counter((r.workload.requests, r.workload.max_batch_size) for r in valid).most_common(1)[0][0]
    cells: dict[tuple[int, int], list[float]] = {}
    for r in valid:
        if (r.workload.requests, r.workload.max_batch_size) == batching:
            cells.setdefault((r.workload.n_in, r.workload.n_out), []).append(1.0 / float(r.j_per_out_token or 0.0))
    n_ins, n_outs = sorted({n for n, _ in cells}), sorted({m for _, m in cells})
    if len(n_ins) < 2 or len(n_outs) < 2:
        return None
    z = [[statistics.median(cells[(n, m)]) if (n, m) in cells else None for m in n_outs] for n in n_ins]
    return {"n_in": n_ins, "n_out": n_outs, "z": z, "source": f"run {run.id}, {batching[0]} requests"}


def _curves(model_path: Path, n_ins: list[int]) -> tuple[str, list[Any], list[str]]:
    """The best model's curves at `n_ins` with their bands and sweet-spot intervals."""
    import numpy as np

    from ..models import uncertainty
    from ..models.analytical import best_model, load_models
    from ..report.dashboard import Curve

    if not model_path.exists():
        return "", [], [f"no fitted model at {model_path}: `joules calibrate` makes one"]
    model = best_model(load_models(model_path))
    if model is None or model.name == "linear":
        return "", [], [f"{model_path}: no model with a sweet spot"]
    try:
        u = uncertainty.load(model_path).get(model.name)
    except DataError:
        u = None
    low_m, high_m = model.n_out_range
    grid = np.geomspace(max(1.0, low_m), high_m * 1.5, 60)  # the fitted range, and a little past it
    curves = []
    for n_in in n_ins[:7]:
        j = np.asarray(model.predict(n_in, grid), dtype=float)
        c = Curve(n_in, [float(x) for x in grid], [float(x) for x in j])
        if u is not None:
            lo, hi = u.band(n_in, grid)
            c.low, c.high = [float(x) for x in lo], [float(x) for x in hi]
            iv = u.sweet_spot(n_in, model.n_out_range)
            if iv is not None:
                c.opt_low, c.opt_high = _finite(iv.n_out.low), _finite(iv.n_out.high)
        spot = model.sweet_spot(n_in)
        if spot.n_out_opt is not None:
            c.opt, c.j_opt = float(spot.n_out_opt), _finite(spot.j_per_out_token_min)
        curves.append(c)
    return model.name, curves, []


def run(args: argparse.Namespace) -> int:
    from ..paths import BASELINES_DIR, nearest_dir
    from ..report.dashboard import DashboardData, plotly_bundle, render
    from ..store import runs
    from ..store.baselines import BaselineStore, parse_file
    from ..store.fingerprint import describe, fingerprint
    from ..store.runs import read_runs
    from ..store.results import load_json

    bundle = plotly_bundle()  # first: a missing extra fails before any work
    storage = runs.require_storage(args)
    files, notes = read_runs(runs.list_runs(storage))
    if not files:
        raise DataError(f"{storage} holds no saved runs; save some with `pytest --joules --joules-autosave`")
    last_run, last = files[-1]
    fp = fingerprint(last.engine or {}, last.device or {}, last.simulated)
    root = Path(args.baselines) if args.baselines else nearest_dir(Path.cwd().resolve(), BASELINES_DIR)
    entries: dict[str, Any] = {}
    model_path = None
    if root is not None:
        store = BaselineStore(root)
        path, model_path = store.path_for(fp), store.model_path_for(fp)
        if path.exists():
            recorded, entries = parse_file(path, load_json(path))
            if recorded != fp:
                entries = {}
                notes.append(f"{path} was recorded on another device or engine: no baselines shown")
        else:
            notes.append(f"no baseline file at {path}")
    n_ins = sorted({r.workload.n_in for r in last.rows})
    name, curves, more = _curves(model_path, n_ins) if model_path is not None else ("", [], ["no baselines directory"])
    device = describe(fp)
    data = DashboardData(
        title=f"pytest-joules: {fp['engine'].get('model') or 'energy'} on {fp['device'].get('gpu') or 'this device'}",
        simulated=last.simulated, device=device,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + f" from {len(files)} run(s)",
        tests=_series(files, entries), heatmap=_heatmap(last_run, last), model=name, curves=curves,
        notes=notes + more)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.html").write_text(render(data, bundle), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write the dashboard: {exc.strerror or exc}") from None
    print(f"wrote {out / 'index.html'}: {len(data.tests)} test(s) over {len(files)} run(s)"
          + (", SIMULATED" if data.simulated else ""))
    return 0
