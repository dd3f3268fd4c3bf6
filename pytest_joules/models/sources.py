"""Where a calibration's points come from: measured live (`live`) or replayed from a results file.

`live` measures through `measure.measure`, the path the plugin and `joules sweep` use, and charges
each point the time it took on the device's clock: the simulated clock for the sim (so a
calibration of hours of GPU time takes a second here, and still reports the hours), the wall
clock otherwise. `replay` takes the measured points of a results JSON as if it measured them,
charging each the measured windows it recorded.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from .design import Measured, Source
from ..errors import DataError
from ..measure.measurement import Measurement
from ..engines.workload import Workload


def clock_of(engine: Any) -> Callable[[], float]:
    """The simulated device's clock, or the wall clock for a real engine."""
    device = getattr(engine, "sim_device", None)
    if device is not None and hasattr(device, "clock_s"):
        return lambda: float(device.clock_s)
    return time.monotonic


def to_measured(m: Measurement, warmup: int, cost_s: float) -> Measured:
    """The design's view of a measurement; DataError when it has no valid reading."""
    w = m.workload
    if not m.valid or m.j_per_out_token is None:
        reason = "; ".join(m.problems) or ("dry run: the meter reads no energy" if m.dry_run else "no valid rounds")
        raise DataError(f"{w.label()}: no valid measurement ({reason}); a calibration needs energy at every point")
    return Measured(
        n_in=w.n_in, n_out=w.n_out, j_per_out_token=float(m.j_per_out_token),
        round_values=tuple(m.round_values), run_seconds=float(m.seconds or 0.0),
        executions=warmup + sum(r.reps for r in m.rounds), rounds=len(m.rounds), cost_s=float(cost_s),
    )


def live(engine: Any, meter: Any, *, requests: int, max_batch_size: int | None, seed: int, warmup: int,
         rounds: int | None, tolerance: float, max_seconds: float, min_window_s: float | None = None,
         keep: list[Measurement] | None = None) -> Source:
    """Measure each point on `engine`; `rounds` None: until the median is known to half the
    tolerance (`rounds.Precise`, what the plugin does when it records a baseline)."""
    from ..measure import stopping as R
    from ..measure.path import measure

    clock = clock_of(engine)

    def source(n_in: int, n_out: int) -> Measured:
        workload = Workload(n_in, n_out, requests=requests, max_batch_size=max_batch_size, seed=seed)
        rule = R.Precise(tolerance=tolerance, max_seconds=max_seconds) if rounds is None else None
        start = clock()
        m = measure(engine, meter, workload, rounds=rounds or R.MIN_ROUNDS, warmup=warmup,
                    min_window_s=min_window_s, name=f"calibrate[{workload.label()}]", rule=rule)
        cost = clock() - start
        if keep is not None:
            keep.append(m)
        return to_measured(m, warmup, cost)

    return source


def replay(rows: Sequence[Any], warmup: int, path: str = "") -> tuple[Source, list[tuple[int, int]]]:
    """A source that answers from a results file's rows, and the points it can answer.

    A point's cost is the sum of its recorded windows plus `warmup` runs of its median run time.
    Rows without a valid reading are left out; a point recorded twice keeps its first row.
    """
    by_point: dict[tuple[int, int], Any] = {}
    for row in rows:
        if not row.valid or row.j_per_out_token is None or not row.round_values:
            continue
        by_point.setdefault((row.workload.n_in, row.workload.n_out), row)
    if not by_point:
        raise DataError(f"{path}: no valid measured point to replay")

    def source(n_in: int, n_out: int) -> Measured:
        row = by_point.get((n_in, n_out))
        if row is None:
            raise DataError(f"{path}: has no measured point n_in={n_in} n_out={n_out} to replay")
        rounds = [r for r in row.raw.get("rounds") or [] if isinstance(r, dict)]
        windows = sum(float(r.get("seconds") or 0.0) for r in rounds)
        reps = sum(int(r.get("reps") or 1) for r in rounds)
        run_s = float(row.raw.get("seconds") or (windows / reps if reps else 0.0))
        return Measured(n_in=n_in, n_out=n_out, j_per_out_token=float(row.j_per_out_token),
                        round_values=tuple(row.round_values), run_seconds=run_s,
                        executions=warmup + reps, rounds=len(rounds), cost_s=windows + warmup * run_s)

    return source, sorted(by_point)
