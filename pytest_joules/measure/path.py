"""The one measurement path, shared by the plugin and `joules sweep`.

Per round: sync the device, open the meter's window, run the workload back to back until the
window lasts at least the meter's minimum, sync, close the window. An engine's optional
`prepare(workload)` (compilation, CUDA-graph capture) and the warm-up runs come first and are
never measured (they load kernels and fill caches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .measurement import Measurement, Round
from ..engines.mix import check_serves
from ..engines.workload import EngineRun, Workload

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..meters.base import Meter
    from .stopping import Rule

#: safety cap on repetitions inside one window, so a broken clock cannot loop forever
MAX_REPS = 10_000
#: a fixed number of rounds stopped by the budget still measures this many (a t-test needs them)
MIN_FIXED = 3


def _close_quietly(meter: Meter) -> None:
    try:
        meter.end()
    except Exception:  # the window is being abandoned: its reading, good or bad, is not used
        pass


def run_round(engine: Engine, meter: Meter, workload: Workload, min_window_s: float) -> Round:
    engine.sync()
    meter.begin()
    runs: list[EngineRun] = []
    elapsed = 0.0
    try:
        while True:
            run = engine.run(workload)
            run.verify(workload, engine.kind)
            runs.append(run)
            elapsed += run.seconds
            if elapsed >= min_window_s or len(runs) >= MAX_REPS:
                break
        engine.sync()
    except BaseException:
        _close_quietly(meter)  # stop the window (and any sampling thread); the error is what matters
        raise
    reading = meter.end()
    phases: dict[str, float] = {}
    for run in runs:
        for key, value in run.phases.items():
            phases[key] = phases.get(key, 0.0) + value / len(runs)
    spoiled = list(dict.fromkeys(p for run in runs for p in run.problems))
    from .latency import round_latency

    info = dict(reading.info)
    percentiles = _percentiles(runs)
    if percentiles:
        info["latency_percentiles"] = percentiles
    return Round(
        joules=reading.total_joules,
        seconds=reading.seconds,
        reps=len(runs),
        output_tokens=sum(r.total_output_tokens for r in runs),
        input_tokens=sum(sum(r.input_tokens) for r in runs),
        valid=reading.valid and reading.joules is not None and not spoiled,
        problems=list(reading.problems) + spoiled,
        info=info,
        phases=phases,
        latency=None if spoiled else round_latency(runs),
    )


def _percentiles(runs: list[EngineRun]) -> dict[str, float]:
    """The latency percentiles a schedule over time gives per run (info["latency_percentiles"]:
    the sim's arrivals), averaged over the round's runs."""
    found = [r.info["latency_percentiles"] for r in runs if isinstance(r.info.get("latency_percentiles"), dict)]
    keys = dict.fromkeys(k for f in found for k in f)
    return {k: sum(f[k] for f in found if k in f) / sum(1 for f in found if k in f) for k in keys}


def measure(
    engine: Engine,
    meter: Meter,
    workload: Workload,
    *,
    rounds: int = 3,
    warmup: int = 1,
    min_window_s: float | None = None,
    name: str = "",
    rule: Rule | None = None,
    max_seconds: float | None = None,
) -> Measurement:
    """Measure `workload` on `engine` with `meter`: `warmup` unmeasured runs, then `rounds` windows,
    or with a `rule` (measure/stopping.py, `--joules-rounds auto`) as many as it asks for. `max_seconds`
    bounds a fixed number of rounds too: it stops before a round that would overrun it, once
    min(rounds, 3) rounds are in (`stopped` says so)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    workload.check_positions(engine.max_positions, engine.kind)
    check_serves(engine, workload)  # rate= / concurrency= need an engine that serves over time
    begin = getattr(engine, "begin_measurement", None)  # optional: the sim draws its noise per measurement
    if begin is not None:
        begin(name)
    prepare = getattr(engine, "prepare", None)  # optional in the Engine protocol
    if prepare is not None:
        prepare(workload)
    for _ in range(warmup):
        engine.run(workload).verify(workload, engine.kind)
    condition = getattr(meter, "precondition", None)  # optional: the nvml meter's precondition_s
    if condition is not None:
        condition(lambda: engine.run(workload).verify(workload, engine.kind))
    window = meter.min_window_s if min_window_s is None else min_window_s
    results: list[Round] = []
    spent = 0.0
    stopped = ""
    while True:
        results.append(run_round(engine, meter, workload, window))
        spent += results[-1].seconds
        if rule is None:
            if len(results) >= rounds:
                break
            if max_seconds is not None and len(results) >= min(rounds, MIN_FIXED) \
                    and spent + spent / len(results) > max_seconds:
                stopped = f"budget ({len(results)} of {rounds} rounds)"
                break
        elif rule.stop([r.j_per_out_token for r in results if r.j_per_out_token is not None], len(results), spent):
            break
    m = Measurement(
        workload=workload,
        rounds=results,
        engine=engine.identity(),
        device=meter.device_info(),
        meter=meter.name,
        simulated=bool(engine.simulated),
        name=name,
    )
    if rule is not None:
        m.confidence = rule.confidence
        m.stopped = rule.reason
    m.stopped = m.stopped or stopped
    return m
