"""A deterministic fake engine and meter for testing the measurement path itself.

The fake engine spends `seconds_per_token` of fake time per generated token at `watts`; the fake
meter reads the fake device's counter. Shared by the core tests (not the plugin's pytester tests,
which register their own through entry points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_joules.engines.base import DeviceRef
from pytest_joules.meters.base import MeterReading
from pytest_joules.engines.workload import EngineRun, Workload


@dataclass
class FakeDevice:
    clock_s: float = 0.0
    energy_j: float = 0.0


@dataclass
class FakeEngine:
    watts: float = 100.0
    seconds_per_token: float = 0.01
    max_positions: int | None = 4096
    #: make the engine lie about its output (to test verification)
    short_by: int = 0
    kind: str = "fake"
    simulated: bool = True
    default_meter: str = "fake"
    device: FakeDevice = field(default_factory=FakeDevice)
    runs: int = 0
    syncs: int = 0

    def identity(self) -> dict[str, str]:
        return {"kind": "fake", "model": "fake-1", "dtype": "fp32", "version": "0"}

    def run(self, workload: Workload) -> EngineRun:
        self.runs += 1
        secs = self.seconds_per_token * workload.output_tokens
        self.device.clock_s += secs
        self.device.energy_j += secs * self.watts
        return EngineRun(
            input_tokens=[workload.n_in] * workload.requests,
            output_tokens=[workload.n_out - self.short_by] * workload.requests,
            seconds=secs,
            phases={"decode_s": secs},
        )

    def sync(self) -> None:
        self.syncs += 1

    def devices(self) -> list[DeviceRef]:
        return [DeviceRef(index=0, name="fake")]

    def close(self) -> None:
        pass


@dataclass
class FakeMeter:
    engine: FakeEngine
    min_window_s: float = 0.0
    name: str = "fake"
    invalid: bool = False
    _start: tuple[float, float] | None = None

    def begin(self) -> None:
        d = self.engine.device
        self._start = (d.clock_s, d.energy_j)

    def end(self) -> MeterReading:
        assert self._start is not None, "end() without begin()"
        d = self.engine.device
        t0, e0 = self._start
        self._start = None
        if self.invalid:
            return MeterReading(joules={"fake": 0.0}, seconds=d.clock_s - t0, valid=False, problems=["zero delta"])
        return MeterReading(joules={"fake": d.energy_j - e0}, seconds=d.clock_s - t0)

    def device_info(self) -> dict:
        return {"gpu": "FakeGPU", "simulated": True}

    def close(self) -> None:
        pass
