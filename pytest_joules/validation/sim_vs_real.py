"""The simulator next to real measurements: the same points, measured the same way.

`real_points` reads the results files of a real sweep (data/h200-hf-llama: eager transformers
on an H200); `simulate` measures each point on the simulated device with the same engine setting,
requests, rounds and warm-up, through the plugin's measurement path; `compare` puts them side by
side: J/output-token (absolute percentage error of the medians) and the rounds' coefficient of
variation, whose distributions should be of the same size. Used by the tests and by
benchmarks/sim_vs_real.py.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Point:
    model: str
    gpu: str
    n_in: int
    n_out: int
    requests: int
    rounds: int
    j_per_out_token: float  # median over rounds
    cv: float  # coefficient of variation of the rounds' J/output-token
    watts: float  # median over rounds


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def _sim_gpu(name: str) -> str:
    return "H200" if "H200" in name else "H100-SXM" if "H100" in name else name


def real_points(paths: Iterable[str | Path]) -> list[Point]:
    """Every valid result of the given results files (our results JSON, schema 1)."""
    out = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        model = doc["engine"]["model"]
        gpu = _sim_gpu(doc["device"]["gpu"])
        for r in doc["results"]:
            rounds = [x for x in r["rounds"] if x.get("valid", True) and x.get("joules")]
            js = [x["joules"] / x["output_tokens"] for x in rounds]
            ws = [x["joules"] / x["seconds"] for x in rounds]
            if len(js) >= 2:
                out.append(Point(model, gpu, r["n_in"], r["n_out"], r.get("requests", 1), len(js),
                                 statistics.median(js), _cv(js), statistics.median(ws)))
    return out


def simulate(point: Point, *, runtime: str, seed: int, warmup: int = 1) -> Point:
    """The same point measured on the simulated device (a fresh one: a new session per point)."""
    from .. import registry
    from ..engines.base import EngineSpec
    from ..measure.path import measure
    from ..meters.base import MeterSpec
    from ..engines.workload import Workload

    engine = registry.make_engine(EngineSpec("sim", model=point.model, gpu=point.gpu,
                                             options={"runtime": runtime, "seed": seed}))
    meter = registry.make_meter(MeterSpec("sim"), engine)
    m = measure(engine, meter, Workload(point.n_in, point.n_out, requests=point.requests, seed=seed),
                rounds=point.rounds, warmup=warmup)
    js = m.round_values
    ws = [r.joules / r.seconds for r in m.valid_rounds]  # type: ignore[operator]
    return Point(point.model, point.gpu, point.n_in, point.n_out, point.requests, len(js),
                 statistics.median(js), _cv(js), statistics.median(ws))


@dataclass(frozen=True)
class Comparison:
    real: list[Point]
    sim: list[list[Point]]  # one list per seed, in the order of `real`

    @property
    def mape(self) -> float:
        """Mean absolute percentage error of the simulated J/token medians, over points and seeds."""
        errors = [abs(s.j_per_out_token - r.j_per_out_token) / r.j_per_out_token
                  for run in self.sim for r, s in zip(self.real, run)]
        return statistics.fmean(errors)

    def cv_quantiles(self, qs: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> tuple[list[float], list[float]]:
        """Quantiles of the rounds' CV: real points, and simulated points over every seed."""
        return _quantiles([p.cv for p in self.real], qs), _quantiles([p.cv for run in self.sim for p in run], qs)


def _quantiles(values: list[float], qs: tuple[float, ...]) -> list[float]:
    xs = sorted(values)
    out = []
    for q in qs:
        pos = (len(xs) - 1) * q
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        out.append(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
    return out


def compare(real: list[Point], *, runtime: str = "eager", seeds: Iterable[int] = range(5)) -> Comparison:
    return Comparison(real, [[simulate(p, runtime=runtime, seed=seed) for p in real] for seed in seeds])
