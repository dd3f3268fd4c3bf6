"""The simulator next to public measurements of optimised engines (data/*.csv, data/README.md).

Each published row is re-measured on the simulated device the way its authors measured it:

- Argonne LLM-Inference-Bench (vLLM 0.5, one batch of `b` requests of 1024 -> 1024 tokens): the
  latency is one `generate` call; the power is the mean of NVML power readings polled from the
  start of a second call to one second after it ends, so one second of a GPU with nothing to do is
  inside the average (their benchmark_power.py); J/output-token = that power x the latency / tokens.
  vLLM 0.5 spent more host time per step than today's engines (ARGONNE_HOST).
- ML.ENERGY leaderboard v3 (vLLM 0.11.1 server, `max_num_seqs` = b): energy and tokens counted in
  a steady-state window with the batch full. The sim runs STEADY_WAVES x b requests at that cap
  (its requests all have the same lengths, so it runs them in waves) and reads J/output-token =
  energy / output tokens, power = energy / time, and a request's latency by Little's law
  (requests in flight / requests finished per second). The input length is not published:
  `n_in` is an assumption (MLENERGY_N_IN; benchmarks/sim_vs_public.py shows what it moves).
- TokenPowerBench (vLLM with CUDA graphs, ten runs of each configuration over a day): the
  spread of J/token over ten sessions, next to the sim's over ten seeds (`spreads`).

`noise=0` for the first two: the comparison is of the physics, not of one noisy draw.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

DATA = Path(__file__).resolve().parent.parent.parent / "data"
ARGONNE_CSV = "argonne-llm-inference-bench-vllm.csv"
MLENERGY_CSV = "mlenergy-v3-leaderboard.csv"
TOKENPOWERBENCH_CSV = "tokenpowerbench-10run-spread.csv"
#: ML.ENERGY does not publish input lengths. Assumed: 300 prompt tokens, which three readings of
#: the data agree on (docs/simulator.md): the KV-cache-limited rows (Llama-3.1-8B holds 691
#: requests at max_num_seqs 768, Qwen3-8B 474 at 512), and the gap between the mean and the
#: median inter-token latency at batch 8 (the prefills' share of the steps) for both models
MLENERGY_N_IN = 300
#: the idle second inside Argonne's power average (`time.sleep(1)` before the probe stops)
ARGONNE_IDLE_S = 1.0
#: vLLM 0.5's host per engine step: 2.1 ms and 22 us per running request, from Argonne's
#: latencies with the GPU's time fixed by the ML.ENERGY rows (the graphs runtime's own host,
#: vLLM 0.11's, is 1.4 ms; vLLM 0.6 cut the scheduler's and output processing's cost)
ARGONNE_HOST = {"host_ms": 2.1, "host_seq_us": 22.0}
#: requests per row of the steady-state runs, in multiples of the batch cap
STEADY_WAVES = 3

#: published model id -> simulated architecture
MODELS = {
    "meta-llama/Llama-2-7b-hf": "Llama-2-7B",
    "meta-llama/Meta-Llama-3-8B": "Llama-3-8B",
    "meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B",
    "Qwen/Qwen3-8B": "Qwen3-8B",
    "meta-llama/Llama-3.1-70B-Instruct": "Llama-3.1-70B",
    "Qwen3-14B": "Qwen3-14B",
}
#: published GPU name -> simulated GPU. Argonne's A100s are Polaris's (A100 SXM4 40 GB, ALCF's
#: Polaris machine overview); its H100 draws up to 595 W, so it is the 700 W SXM board
GPUS = {
    "NVIDIA A100 GPU": "A100-SXM-40GB",
    "NVIDIA H100 GPU": "H100-SXM",
    "H100": "H100-SXM",
    "B200": "B200",
}


@dataclass(frozen=True)
class Row:
    """One published measurement (or its simulated twin): per output token, per request, per GPU group."""

    source: str  # "argonne" or "mlenergy"
    model: str  # simulated architecture name
    gpu: str  # simulated GPU name
    gpus: int  # tensor-parallel GPUs (energy and power are summed over them)
    batch: int  # requests at once (Argonne) or max_num_seqs (ML.ENERGY)
    n_in: int
    n_out: int
    j_per_token: float
    latency_s: float  # one request, first token to last
    watts: float

    @property
    def label(self) -> str:
        tp = f" x{self.gpus}" if self.gpus > 1 else ""
        return f"{self.model} {self.gpu}{tp}"


def _read(name: str, path: Path | None) -> list[dict[str, str]]:
    with open(path or DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def argonne_rows(path: Path | None = None) -> list[Row]:
    """The Argonne vLLM rows whose model and GPU the sim has."""
    out = []
    for r in _read(ARGONNE_CSV, path):
        model, gpu = MODELS.get(r["model"]), GPUS.get(r["gpu"])
        if model and gpu:
            out.append(Row("argonne", model, gpu, int(r["num_gpus"]), int(r["batch_or_requests"]), int(r["n_in"]),
                           int(r["n_out"]), float(r["j_per_output_token"]), float(r["latency_s"]),
                           float(r["avg_power_w"])))
    return out


def mlenergy_rows(path: Path | None = None, *, gpus: Iterable[str] = ("H100-SXM",), n_in: int = MLENERGY_N_IN,
                  task: str = "lm-arena-chat") -> list[Row]:
    """The ML.ENERGY rows of `task` whose model and GPU the sim has, on the GPUs asked for."""
    wanted = set(gpus)
    out = []
    for r in _read(MLENERGY_CSV, path):
        model, gpu = MODELS.get(r["model"]), GPUS.get(r["gpu"])
        if not (model and gpu in wanted and r["task"] == task):
            continue
        in_flight, n_out = float(r["avg_batch_size"]), float(r["n_out"])
        latency = n_out * in_flight / float(r["output_throughput_tok_s"])  # Little's law
        out.append(Row("mlenergy", model, gpu, int(r["num_gpus"]), int(r["batch_or_requests"]), n_in, round(n_out),
                       float(r["j_per_output_token"]), latency, float(r["avg_power_w"])))
    return out


def _engine(row: Row, runtime: str, noise: float = 0.0, seed: int = 0, host: dict[str, float] | None = None) -> Any:
    from .. import registry
    from ..engines.base import EngineSpec

    options: dict[str, Any] = {"noise": noise, "runtime": runtime, "seed": seed, **(host or {})}
    if row.gpus > 1:
        options["tp"] = row.gpus
    return registry.make_engine(EngineSpec("sim", model=row.model, gpu=row.gpu, options=options))


def simulate(row: Row, *, runtime: str = "graphs", host: dict[str, float] | None = None) -> Row:
    """`row` re-measured on the simulated device, the way its source measured it. `host`: the
    measured engine's host time (engine options host_ms, host_seq_us; default: the runtime's)."""
    from ..engines.workload import Workload

    engine = _engine(row, runtime, host=host)
    if row.source == "argonne":
        w = Workload(row.n_in, row.n_out, requests=row.batch, max_batch_size=row.batch)
        run = engine.run(w)
        joules, seconds = run.info["joules"], run.seconds
        idle_w = engine.sim_device.model.waiting_watts
        watts = (joules + idle_w * ARGONNE_IDLE_S) / (seconds + ARGONNE_IDLE_S)
        return replace(row, j_per_token=watts * seconds / w.output_tokens, latency_s=seconds, watts=watts)
    w = Workload(row.n_in, row.n_out, requests=STEADY_WAVES * row.batch, max_batch_size=row.batch)
    run = engine.run(w)
    joules, seconds = run.info["joules"], run.seconds
    return replace(row, j_per_token=joules / w.output_tokens, watts=joules / seconds,
                   latency_s=run.info["mean_batch"] * seconds / w.requests)


METRICS = ("j_per_token", "latency_s", "watts")


@dataclass(frozen=True)
class Comparison:
    real: list[Row]
    sim: list[Row]

    def errors(self, metric: str) -> list[float]:
        """Signed relative errors (sim / real - 1), one per row."""
        return [getattr(s, metric) / getattr(r, metric) - 1 for r, s in zip(self.real, self.sim)]

    def mape(self, metric: str) -> float:
        return statistics.fmean(abs(e) for e in self.errors(metric))


def compare(rows: list[Row], *, runtime: str = "graphs", measured_host: bool = True) -> Comparison:
    """Every row simulated; `measured_host`: the Argonne rows with vLLM 0.5's host (ARGONNE_HOST)."""
    return Comparison(rows, [simulate(r, runtime=runtime, host=ARGONNE_HOST if measured_host and
                                      r.source == "argonne" else None) for r in rows])


def data_sets(n_in: int = MLENERGY_N_IN, gpus: Iterable[str] = ("H100-SXM",)) -> dict[str, list[Row]]:
    """The goals' data sets: Argonne per GPU, ML.ENERGY per model and GPU."""
    sets: dict[str, list[Row]] = {}
    for row in argonne_rows():
        sets.setdefault(f"Argonne vLLM {row.gpu}", []).append(row)
    for row in mlenergy_rows(gpus=gpus, n_in=n_in):
        sets.setdefault(f"ML.ENERGY {row.label}", []).append(row)
    return sets


# -- run-to-run noise ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """Min-max spread over ten sessions, in percent of the mean: J/token, duration, power."""

    j_per_token: float
    seconds: float
    watts: float


def tokenpowerbench_spreads(path: Path | None = None) -> list[Spread]:
    """TokenPowerBench's ten-run spreads, one per configuration (33)."""
    return [Spread(float(r["mj_per_token_spread_pct"]), float(r["duration_spread_pct"]),
                   float(r["gpu_avg_power_spread_pct"])) for r in _read(TOKENPOWERBENCH_CSV, path)]


def _pct_spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.fmean(values) * 100


def simulated_spread(model: str, gpu: str, *, n_in: int, n_out: int, batch: int, seeds: Iterable[int]) -> Spread:
    """Ten (or len(seeds)) sessions of one workload on the simulated device, each a fresh device
    with its own seed, measured like a TokenPowerBench run: a warm-up, then one metered run."""
    from .. import registry
    from ..measure import measure
    from ..meters.base import MeterSpec
    from ..engines.workload import Workload

    row = Row("tokenpowerbench", model, gpu, 1, batch, n_in, n_out, 0.0, 0.0, 0.0)
    js, ts, ws = [], [], []
    for seed in seeds:
        engine = _engine(row, "graphs", noise=1.0, seed=seed)
        meter = registry.make_meter(MeterSpec("sim"), engine)
        m = measure(engine, meter, Workload(n_in, n_out, requests=batch, max_batch_size=batch), rounds=1,
                    min_window_s=0.0)
        r = m.valid_rounds[0]
        assert r.joules is not None  # a valid round of the sim meter has its energy
        js.append(r.joules / r.output_tokens)
        ts.append(r.seconds)
        ws.append(r.joules / r.seconds)
    return Spread(_pct_spread(js), _pct_spread(ts), _pct_spread(ws))
