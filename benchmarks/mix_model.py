"""How well the per-point model carries to length mixes and arrival rates, on the SIMULATED H100.

Measures the three example mixes (examples/mixes: chat, RAG, code completion) through the plugin's
measurement path (sim engine and meter, realistic noise, 3 rounds after a warm-up), under several
loads, and compares each with the committed model's prediction for the same requests (the fitted
E(n_in, n_out) weighted by each request's output tokens, models/mix.py) and its 95% band:

  - at once:   16 requests sent together (the model's own batching: requests=16)
  - users=16:  a closed loop of 16 users over 128 requests (16 in flight, as the model assumes),
               and over 1024 requests (the draining tail at the end weighs less)
  - rate=R/s:  128 requests arriving as a Poisson process

    python benchmarks/mix_model.py [--seed 3] [--markdown]

Prints one row per (mix, load): measured J/out-token, predicted (band), error, the mean batch the
device ran, and the latency percentiles the simulator reports.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pytest_joules.engines import mix as M
from pytest_joules.engines.base import EngineSpec
from pytest_joules.engines.sim import create as create_engine
from pytest_joules.engines.workload import Workload
from pytest_joules.measure import measure
from pytest_joules.meters.base import MeterSpec
from pytest_joules.meters.sim import create as create_meter
from pytest_joules.models import uncertainty
from pytest_joules.models.analytical import best_model, load_models
from pytest_joules.models.mix import Lengths, MixModel

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.model.json"
MIXES = {"chat": "chat.jsonl", "RAG": "rag.csv", "code": "code.csv"}
LOADS = [("at once", 16, None), ("users=16", 128, M.Arrival(concurrency=16)),
         ("users=16 x1024", 1024, M.Arrival(concurrency=16)),
         ("rate=2/s", 128, M.Arrival(rate=2.0)), ("rate=8/s", 128, M.Arrival(rate=8.0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    model = best_model(load_models(MODEL))
    assert model is not None
    mm = MixModel(model, uncertainty.load(MODEL).get(model.name))
    engine = create_engine(EngineSpec("sim", options={"seed": args.seed}))
    meter = create_meter(MeterSpec("sim"), engine)
    header = ("mix", "load", "measured J/tok", "predicted [95% band]", "error", "mean batch",
              "TTFT p50/p99 s", "TPOT p50 ms", "wall s")
    rows = []
    for name, file in MIXES.items():
        mix = M.from_file(ROOT / "examples/mixes" / file)
        for label, requests, arrival in LOADS:
            w = Workload.of_mix(mix, requests, arrival=arrival, seed=args.seed)
            t0 = time.perf_counter()
            m = measure(engine, meter, w, rounds=3, warmup=1, name=f"{name}/{label}")
            wall = time.perf_counter() - t0
            p = mm.j_per_output_token(Lengths.of(w.lengths()))
            got = m.j_per_out_token
            assert got is not None
            lat = m.latency_percentiles
            batch = engine.sim_device.profile(w).cost.mean_batch
            rows.append((name, label, f"{got:.4f}", f"{p.value:.4f} [{p.low:.4f}–{p.high:.4f}]",
                         f"{got / p.value - 1:+.1%}", f"{batch:.1f}",
                         f"{lat['ttft_p50_s']:.3f}/{lat['ttft_p99_s']:.3f}", f"{1000 * lat['tpot_p50_s']:.1f}",
                         f"{wall:.2f}"))
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for r in (header, *rows):
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"SIMULATED H100-SXM, Llama-3.1-8B; model {model.name} of {MODEL.relative_to(ROOT)} "
          f"(fitted at {model.batching_label()}); seed {args.seed}")


if __name__ == "__main__":
    main()
