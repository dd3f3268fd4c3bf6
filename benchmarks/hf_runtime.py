"""Time per decode step of the hf engine's runtimes: eager `generate` against `graphs`.

    python benchmarks/hf_runtime.py                          # tiny-llama on this machine's device
    python benchmarks/hf_runtime.py --model Llama-3.2-1B --requests 16 --device cuda
    python benchmarks/hf_runtime.py --compile-on-cpu         # also graphs compiled on the CPU

A decode step's time is the slope of a run's wall time over n_out: runs at n_out = SHORT and LONG
with the same prompts differ by (LONG - SHORT) decode steps and nothing else. The runtimes take
turns (a round of each, repeated), so a machine whose speed drifts (a shared CI runner) drifts
under all of them alike; the slope is taken between the medians of the short and the long runs'
times, and between their minima. Every engine is
prepared (compiled, graphs captured) before anything is timed, and every run is checked for
exact token counts.

On the CPU, `graphs` is the static KV cache without compilation (hf_runtime.py says why).
`--compile-on-cpu` adds what compiling would give there: transformers' own compiled decode step,
forced onto the CPU (`CompileConfig._compile_all_devices`, meant for testing), and how long the
compilation took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_joules.engines import hf, hf_runtime  # noqa: E402
from pytest_joules.engines.base import EngineSpec  # noqa: E402
from pytest_joules.engines.workload import Workload  # noqa: E402


def build(args: argparse.Namespace, runtime: str, compile_on_cpu: bool = False) -> tuple[hf.HFEngine, float]:
    """The engine and the seconds its preparation took (load excluded)."""
    options = {"runtime": runtime, **({"device": args.device} if args.device else {})}
    engine = hf.create(EngineSpec("hf", model=args.model, options=options))
    if compile_on_cpu:
        engine.runtime = hf_runtime.Runtime("graphs", compile=True, note="compiled on the CPU (benchmark only)")
        real = hf_runtime.generation_kwargs

        def forced(rt: hf_runtime.Runtime) -> dict:
            kwargs = real(rt)
            if "compile_config" in kwargs:
                kwargs["compile_config"]._compile_all_devices = True
            return kwargs

        hf_runtime.generation_kwargs = forced
    t0 = time.perf_counter()
    for n_out in (args.short, args.long):
        engine.prepare(workload(args, n_out))
        engine.run(workload(args, n_out))  # the warm-up measure() would run
    return engine, time.perf_counter() - t0


def workload(args: argparse.Namespace, n_out: int) -> Workload:
    return Workload(args.n_in, n_out, requests=args.requests, max_batch_size=args.max_batch_size)


def run_times(engine: hf.HFEngine, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds of one short and one long run."""
    times = []
    for n_out in (args.short, args.long):
        w = workload(args, n_out)
        run = engine.run(w)
        run.verify(w, "hf")
        if run.problems:
            raise SystemExit(f"{engine.runtime.name}: {run.problems[0]}")
        times.append(run.seconds)
    return times[0], times[1]


def slope_ms(short: float, long: float, args: argparse.Namespace) -> float:
    return (long - short) / (args.long - args.short) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--n-in", type=int, default=32)
    p.add_argument("--short", type=int, default=16, help="n_out of the short run")
    p.add_argument("--long", type=int, default=144, help="n_out of the long run")
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--compile-on-cpu", action="store_true")
    args = p.parse_args()

    engines = {}
    for label, runtime, forced in (("eager", "eager", False), ("graphs", "graphs", False)):
        engines[label] = build(args, runtime, forced)
    if args.compile_on_cpu:
        engines["graphs, compiled on the CPU"] = build(args, "graphs", True)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in engines}
    for _ in range(args.repeats):
        for label, (engine, _) in engines.items():
            times[label].append(run_times(engine, args))

    first = next(iter(engines.values()))[0]
    ident = first.identity()
    print(f"{args.model} on {ident['device']}, {ident['version']}, {ident['dtype']}; {args.requests} requests "
          f"of n_in={args.n_in}, n_out {args.short} vs {args.long}; {args.repeats} repeats")
    print("ms/decode step from the medians of the short and long runs' times, and from their minima (the")
    print("least disturbed runs: on a shared machine the better estimate of what the code costs)")
    print(f"{'runtime':<28} {'median':>8} {'min':>8} {'prepare s':>10}  speed")

    def figures(label: str) -> tuple[float, float]:
        shorts, longs = zip(*times[label])
        return (slope_ms(statistics.median(shorts), statistics.median(longs), args),
                slope_ms(min(shorts), min(longs), args))

    eager = figures("eager")
    for label, (engine, prepare_s) in engines.items():
        mid, best = figures(label)
        note = engine.runtime.note or ""
        print(f"{label:<28} {mid:>8.3f} {best:>8.3f} {prepare_s:>10.1f}  x{eager[0] / mid:.2f} / x{eager[1] / best:.2f} "
              f"of eager (median / min); {note}")
    for engine, _ in engines.values():
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
