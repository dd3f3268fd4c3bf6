"""The SIMULATED eager runtime next to the real H200 measurements, point by point.

    python benchmarks/sim_vs_real.py [--seeds 20] [--json out.json]

For every point of data/h200-hf-llama's sweeps (eager transformers, 16 requests, 3 rounds), the
same point measured on the simulated H200 with `runtime=eager`, once per seed (a fresh session
each): J/output-token side by side, the absolute percentage error of the medians (MAPE over the
points and seeds), and the quantiles of the rounds' coefficient of variation, real and simulated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from pytest_joules.validation.sim_vs_real import compare, real_points

DATA = Path(__file__).resolve().parent.parent / "data" / "h200-hf-llama"
FILES = ("sweep-llama-3.2-1b.json", "sweep-llama-3.1-8b.json")
QS = (0.1, 0.25, 0.5, 0.75, 0.9)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--json", help="write the comparison here")
    args = p.parse_args(argv)
    real = real_points(DATA / f for f in FILES)
    c = compare(real, runtime="eager", seeds=range(args.seeds))
    print(f"real: {DATA.relative_to(Path.cwd()) if DATA.is_relative_to(Path.cwd()) else DATA} (NVIDIA H200, eager transformers)")
    print(f"sim:  SIMULATED H200, runtime=eager, {args.seeds} seeds (median over seeds)\n")
    print(f"{'model':13} {'n_in':>5} {'n_out':>5}  {'real J/tok':>10} {'sim J/tok':>10} {'error':>7}  "
          f"{'real W':>6} {'sim W':>6}  {'real CV':>7} {'sim CV':>7}")
    rows = []
    for i, r in enumerate(c.real):
        sims = [run[i] for run in c.sim]
        j = statistics.median(s.j_per_out_token for s in sims)
        w = statistics.median(s.watts for s in sims)
        cv = statistics.median(s.cv for s in sims)
        rows.append({"model": r.model, "n_in": r.n_in, "n_out": r.n_out, "real_j": r.j_per_out_token, "sim_j": j,
                     "real_w": r.watts, "sim_w": w, "real_cv": r.cv, "sim_cv": cv})
        print(f"{r.model:13} {r.n_in:>5} {r.n_out:>5}  {r.j_per_out_token:>10.4f} {j:>10.4f} "
              f"{(j - r.j_per_out_token) / r.j_per_out_token:>+7.1%}  {r.watts:>6.0f} {w:>6.0f}  "
              f"{r.cv:>7.1%} {cv:>7.1%}")
    real_q, sim_q = c.cv_quantiles(QS)
    print(f"\nMAPE of J/token over {len(c.real)} points x {args.seeds} seeds: {c.mape:.1%}")
    print("CV of the rounds, quantiles " + "/".join(f"{q:g}" for q in QS) + ":")
    print("  real " + "  ".join(f"{v:.1%}" for v in real_q))
    print("  sim  " + "  ".join(f"{v:.1%}" for v in sim_q))
    if args.json:
        Path(args.json).write_text(json.dumps({"simulated": True, "mape": c.mape, "cv_quantiles": QS,
                                               "real_cv": real_q, "sim_cv": sim_q, "points": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
