"""The GPU energy counter, checked: how often it moves (idle and busy), and whether the project's
tick-aligned nvml window agrees with integrated power samples under a load step.

The load is bf16 matmuls (8192 x 8192: compute-bound, near the power limit on Hopper). The power
samples come at 5 ms from `nvmlDeviceGetPowerUsage`, which on Hopper averages the last second:
their plain integral over the window lags the step and reads low (the H200 gave 8% less than
the counter); shifted by half the averaging (meters/nvml/sampling.py: shifted_energy) they should
agree within a few percent. A counter that disagrees with both is the finding.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, cast

if TYPE_CHECKING:
    from ..engines.base import Engine

#: seconds of each phase: polling for the update period, the load step, the tail after it
PERIOD_S = 2.0
IDLE_S = 1.0
LOAD_S = 6.0
TAIL_S = 2.0
SAMPLE_S = 0.005
#: the whole check, for the budget
SECONDS = 2 * PERIOD_S + IDLE_S + LOAD_S + TAIL_S + 3.0


@dataclass
class CounterCheck:
    gpu: str
    idle_period_s: float | None
    busy_period_s: float | None
    load_s: float
    counter_j: float | None  # the nvml meter's tick-aligned window over the load
    power_integral_j: float  # power samples integrated over the same window
    power_shifted_j: float  # ... over the window shifted by half the reading's averaging
    samples: int
    counter_avg_w: float | None
    max_sample_w: float
    meter_problems: list[str]

    @property
    def counter_vs_power(self) -> float | None:
        """Relative difference of the counter from the shifted power integral."""
        if self.counter_j is None or not self.power_shifted_j:
            return None
        return self.counter_j / self.power_shifted_j - 1


def matmul_load(torch: Any, device: str) -> Callable[[float], None]:
    """A callable that keeps the GPU busy with bf16 matmuls for about `seconds`, then syncs."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def run(seconds: float) -> None:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            for _ in range(8):
                a @ b
            torch.cuda.synchronize(device)  # keeps the queue short, so the load ends on time

    return run


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, name="joules-check-load", daemon=True)
    thread.start()
    return thread


def check_counter(api: Any, handle: Any, meter: Any, load: Callable[[float], None], sync: Callable[[], None],
                  gpu: str, *, period_s: float = PERIOD_S, idle_s: float = IDLE_S, load_s: float = LOAD_S,
                  tail_s: float = TAIL_S, sample_s: float = SAMPLE_S, power_average_s: float = 1.0) -> CounterCheck:
    """Run the counter checks on one GPU: `api`/`handle` read it through NVML, `meter` is an nvml
    meter of it, `load(seconds)` keeps it busy, `sync()` waits for the GPU."""
    from ..meters.nvml.sampling import PowerSampler, counter_update_period, integrate_between, shifted_energy

    idle_period = counter_update_period(api, handle, period_s)
    busy = _in_thread(lambda: load(period_s + 0.5))
    time.sleep(0.25)  # let the load reach its power
    busy_period = counter_update_period(api, handle, period_s)
    busy.join()
    sync()
    time.sleep(idle_s)  # back to idle before the step

    sampler = PowerSampler(lambda: api.power_mw(handle) / 1000.0, sample_s)
    sampler.start()
    time.sleep(idle_s)
    meter.begin()
    t0 = time.perf_counter()
    load(load_s)
    sync()
    t1 = time.perf_counter()
    reading = meter.end()
    time.sleep(tail_s)  # the averaged power reading trails the step by up to a second
    samples = sampler.stop()
    counter = reading.total_joules if reading.valid else None
    return CounterCheck(
        gpu=gpu, idle_period_s=idle_period, busy_period_s=busy_period, load_s=t1 - t0,
        counter_j=counter, power_integral_j=integrate_between(samples, t0, t1),
        power_shifted_j=shifted_energy(samples, t0, t1, power_average_s), samples=len(samples),
        counter_avg_w=None if counter is None else counter / (t1 - t0),
        max_sample_w=max(w for _, w in samples), meter_problems=list(reading.problems),
    )


def run(torch: Any) -> CounterCheck:
    """The checks on the first visible CUDA GPU, through the project's NVML code and nvml meter."""
    from ..engines.hf import device_ref
    from ..meters import nvml
    from ..meters.base import MeterSpec

    ref = device_ref(torch, 0)

    class _Gpu0:  # what the nvml meter asks of an engine
        kind = "check"

        def devices(self) -> list:
            return [ref]

    meter = nvml.create(MeterSpec("nvml", {}), cast("Engine", _Gpu0()))
    api = nvml.open_api()
    try:
        handle, _ = nvml.resolve_device(api, ref)
        load = matmul_load(torch, "cuda:0")
        return check_counter(api, handle, meter, load, lambda: torch.cuda.synchronize(0), ref.name or "GPU 0")
    finally:
        meter.close()
        try:
            api.shutdown()
        except Exception:  # a second NVML handle: shutting it down is a courtesy
            pass
