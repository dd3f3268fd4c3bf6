"""The error of the `dcgm` and `prometheus` meters against a known power profile, per window length.

Two fake dcgm-exporters (tests/fleet_fake.py; 2 hosts x 2 GPUs, idle 60 W, busy 300-375 W with a
40 W ripple, a DCGM lag of 0.07 s) refresh every `--collection` seconds; a real Prometheus (Debian's
`prometheus`, started here on 127.0.0.1, stopped by its pid) scrapes them every `--scrape` seconds.
For each window length (in refresh intervals) the fleet is busy for that long inside a meter
window, `--reps` times per meter; the script prints the error of each meter's joules against the
profile's exact integral over the meter's own window, the worst-case quantisation bound, and the
shortest window whose every repetition is within 2%. Nothing here is a GPU: it tests the meters'
timing logic against real HTTP, a real Prometheus and an exactly known counter.

    python benchmarks/fleet_windows.py [--collection 0.2] [--scrape 0.2] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_joules.meters import dcgm, prometheus  # noqa: E402
from pytest_joules.meters.base import MeterSpec  # noqa: E402
from tests.fleet_fake import fleet, work  # noqa: E402
from tests.prometheus_server import BINARY, Prometheus  # noqa: E402

INTERVALS = (0.5, 1, 2, 3, 5, 10, 20)


def run(meter: object, profile: object, interval: float, reps: int) -> list[dict[str, float]]:
    rows = []
    for k in INTERVALS:
        errors, bounds = [], []
        for _ in range(reps):
            reading, truth = work(meter, profile, k * interval)  # type: ignore[arg-type]
            total = reading.total_joules  # type: ignore[attr-defined]
            errors.append((total - truth) / truth)
            bounds.append(reading.info["tick_bound_j"] / truth)  # type: ignore[attr-defined]
        rows.append({"intervals": k, "seconds": k * interval, "max_abs_error": max(map(abs, errors)),
                     "mean_error": sum(errors) / reps, "max_bound": max(bounds)})
    return rows


def shortest(rows: list[dict[str, float]], limit: float = 0.02) -> float | None:
    """The shortest window from which on every longer one is within `limit` too."""
    best = None
    for row in reversed(rows):
        if row["max_abs_error"] > limit:
            break
        best = row["seconds"]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collection", type=float, default=0.2, help="the fake exporters' refresh interval (s)")
    ap.add_argument("--scrape", type=float, default=0.2, help="Prometheus's scrape interval (s)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    if not BINARY:
        sys.exit("the prometheus binary is not installed (apt-get install prometheus)")
    profile, exporters = fleet(interval_s=args.collection)
    prom = Prometheus(Path(tempfile.mkdtemp()), [e.url.split("//")[1].split("/")[0] for e in exporters],
                      scrape_interval=f"{round(args.scrape * 1000)}ms")
    out: dict[str, object] = {"collection_s": args.collection, "scrape_s": args.scrape, "reps": args.reps}
    try:
        prom.ready()
        meters = {
            "dcgm": dcgm.build(MeterSpec("dcgm", {"exporters": ",".join(e.url for e in exporters)}), clock=time.time),
            "prometheus": prometheus.build(MeterSpec("prometheus", {"url": prom.url})),
        }
        for name, meter in meters.items():
            interval = meter.interval_s  # type: ignore[attr-defined]
            rows = run(meter, profile, interval, args.reps)
            out[name] = {"interval_s": interval, "rows": rows, "shortest_within_2pct_s": shortest(rows)}
            print(f"\n{name}: refresh interval {interval:.3f} s (collection {args.collection} s, scrape {args.scrape} s), "
                  f"{args.reps} windows each")
            print(f"{'intervals':>9} {'window s':>9} {'max |err|':>10} {'mean err':>9} {'bound':>8}")
            for r in rows:
                print(f"{r['intervals']:>9g} {r['seconds']:>9.2f} {r['max_abs_error']:>10.3%} {r['mean_error']:>+9.3%} "
                      f"{r['max_bound']:>8.1%}")
            print(f"shortest window within 2%: {shortest(rows)} s")
    finally:
        prom.stop()
        for e in exporters:
            e.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
