"""The SIMULATED optimised engine (runtime=graphs) next to public measurements of vLLM.

    python benchmarks/sim_vs_public.py [--rows] [--json out.json]

Data (data/README.md): Argonne LLM-Inference-Bench's vLLM rows (A100 40GB, H100; 1024 -> 1024
tokens, batch 1-64), the ML.ENERGY leaderboard v3 (vLLM 0.11.1, lm-arena-chat, H100 and B200),
TokenPowerBench's ten-run spreads. Each row is re-measured on the simulated device the way its
source measured it (pytest_joules/sim/public.py). Prints the goals' table (J/output-token, latency
per request and average power within 10% MAPE per data set), the rows with --rows, what the
assumed ML.ENERGY input length moves, and the noise next to TokenPowerBench's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from pytest_joules.validation import sim_vs_public as public

GOAL = 0.10
N_IN_CHOICES = (128, 300, 600, 1024, 2048)
#: TokenPowerBench's single-GPU configurations (Qwen3-14B, alpaca prompts: about 64 tokens assumed)
NOISE_POINTS = ((128, 500), (256, 500), (256, 2000))


def _mapes(c: public.Comparison) -> tuple[float, float, float]:
    return tuple(c.mape(m) for m in public.METRICS)  # type: ignore[return-value]


def _goal_line(name: str, c: public.Comparison, goal: bool = True) -> str:
    j, lat, w = _mapes(c)
    mark = ("yes" if max(j, lat, w) <= GOAL else "no") if goal else "-"
    return f"{name:36} {len(c.real):>4}  {j:>7.1%} {lat:>8.1%} {w:>7.1%}   {mark}"


def _rows(c: public.Comparison) -> None:
    print(f"    {'batch':>5}  {'J/tok real':>10} {'sim':>8} {'err':>7}  {'latency s':>9} {'sim':>7} {'err':>7}  "
          f"{'W real':>6} {'sim':>6} {'err':>7}")
    for r, s in zip(c.real, c.sim):
        print(f"    {r.batch:>5}  {r.j_per_token:>10.4f} {s.j_per_token:>8.4f} {s.j_per_token / r.j_per_token - 1:>+7.1%}  "
              f"{r.latency_s:>9.2f} {s.latency_s:>7.2f} {s.latency_s / r.latency_s - 1:>+7.1%}  "
              f"{r.watts:>6.0f} {s.watts:>6.0f} {s.watts / r.watts - 1:>+7.1%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", action="store_true", help="print every row, sim against measured")
    p.add_argument("--json", help="write the comparison here")
    args = p.parse_args(argv)
    out: dict = {"simulated": True, "n_in_assumed": public.MLENERGY_N_IN, "sets": {}}

    print("SIMULATED device, runtime=graphs, noise=0, against public measurements (data/README.md)")
    print(f"ML.ENERGY input length: {public.MLENERGY_N_IN} tokens assumed (not published); Argonne rows with "
          f"vLLM 0.5's host ({public.ARGONNE_HOST['host_ms']} ms + {public.ARGONNE_HOST['host_seq_us']:g} us "
          "per request per step)\n")
    header = f"{'data set':36} {'rows':>4}  {'J/tok':>7} {'latency':>8} {'power':>7}   within {GOAL:.0%}"
    print("MAPE per data set (goal: each within 10%)\n" + header)
    for name, rows in public.data_sets().items():
        c = public.compare(rows)
        print(_goal_line(name, c))
        out["sets"][name] = {"mape": dict(zip(public.METRICS, _mapes(c))),
                             "rows": [{"real": asdict(r), "sim": asdict(s)} for r, s in zip(c.real, c.sim)]}
        if args.rows:
            _rows(c)
    for name, rows in public.data_sets(gpus=("B200",)).items():
        if "Argonne" in name:
            continue
        c = public.compare(rows)
        print(_goal_line(name, c, goal=False) + "  (beyond the goals: Hopper's efficiencies assumed)")
        out["sets"][name] = {"mape": dict(zip(public.METRICS, _mapes(c))),
                             "rows": [{"real": asdict(r), "sim": asdict(s)} for r, s in zip(c.real, c.sim)]}
        if args.rows:
            _rows(c)

    print("\nArgonne with the graphs runtime's own host (vLLM 0.11's 1.4 ms per step):")
    for name, rows in public.data_sets().items():
        if name.startswith("Argonne"):
            print(_goal_line(name, public.compare(rows, measured_host=False), goal=False))

    print("\nML.ENERGY H100 MAPE (J/tok / latency / power) against the assumed input length:")
    print(f"{'n_in':>6}  " + "  ".join(f"{name[10:]:>26}" for name in public.data_sets() if "ML.ENERGY" in name))
    for n_in in N_IN_CHOICES:
        cells = []
        for name, rows in public.data_sets(n_in=n_in).items():
            if "ML.ENERGY" in name:
                j, lat, w = _mapes(public.compare(rows))
                cells.append(f"{j:>7.1%} /{lat:>6.1%} /{w:>6.1%}")
        print(f"{n_in:>6}  " + "  ".join(f"{c:>26}" for c in cells))

    real = public.tokenpowerbench_spreads()
    sim = [public.simulated_spread("Qwen3-14B", "H100-SXM", n_in=64, n_out=n_out, batch=batch,
                                   seeds=range(10 * g, 10 * g + 10))
           for batch, n_out in NOISE_POINTS for g in range(4)]
    print("\nRun-to-run noise, min-max spread over ten sessions (median [min-max] over configurations):")
    for label, spreads in (("TokenPowerBench, 33 configurations", real), ("SIMULATED Qwen3-14B H100, 12 groups", sim)):
        cells = []
        for field in ("j_per_token", "seconds", "watts"):
            xs = [getattr(s, field) for s in spreads]
            cells.append(f"{statistics.median(xs):.2f}% [{min(xs):.2f}-{max(xs):.2f}]")
        print(f"  {label:37} J/token {cells[0]:18} duration {cells[1]:18} power {cells[2]}")
    out["noise"] = {"tokenpowerbench": [asdict(s) for s in real], "sim": [asdict(s) for s in sim]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
