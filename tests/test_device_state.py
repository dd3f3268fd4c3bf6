"""The device's state in every window (temperature at the start, SM clock, throttle reasons, power
limit), flags for readings a GPU may not repeat, and the optional locked clocks and thermal
preconditioning, against the NVML seam's fake (issue 21)."""

from __future__ import annotations

import json

import pytest

from pytest_joules.engines.base import DeviceRef
from pytest_joules.errors import ConfigError
from pytest_joules.measure import measure
from pytest_joules.measure.state import annotate
from pytest_joules.meters import nvml
from pytest_joules.meters.base import MeterSpec
from pytest_joules.engines.workload import Workload
from pytest_joules.store.record import ResultRecord

from .plugin_fake import project
from .test_meter_nvml import GPU0, FakeGpu, FakeNvml, make, window


class ThermalNvml(FakeNvml):
    """The fake NVML with a GPU that warms while it works, and clocks that can be locked."""

    def __init__(self, *args, lock_error=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock_error = lock_error
        self.locked: dict[str, int] = {}
        self.resets: list[str] = []

    def temperature_c(self, h):
        return min(40 + self.clock.busy_s(self.clock.t) * 5, 70)  # +5 °C per busy second, up to 70

    def clocks_mhz(self, h):
        return {"sm": self.locked.get(h.uuid, 1980), "mem": 2619}

    def lock_sm_clocks(self, h, mhz):
        if self.lock_error is not None:
            raise self._err(self.lock_error, "nvmlDeviceSetGpuLockedClocks")
        self.locked[h.uuid] = mhz

    def reset_sm_clocks(self, h):
        self.resets.append(h.uuid)
        self.locked.pop(h.uuid, None)


def thermal(options=None, lock_error=None):
    from .test_meter_nvml import Clock, FakeEngine

    clock = Clock()
    fake = ThermalNvml([FakeGpu(GPU0)], clock, lock_error=lock_error)
    engine = FakeEngine([DeviceRef(index=0, uuid=GPU0)], clock)
    meter = nvml.build(MeterSpec("nvml", options or {}), engine, api_factory=lambda: fake, env={},
                       pids=lambda: {1000}, clock=clock, sleep=clock.sleep)
    return meter, fake, engine, clock


# -- what each window records --------------------------------------------------------------------
def test_an_nvml_window_records_temperature_clock_throttle_reasons_and_power_limit():
    meter, fake, engine, clock = make([FakeGpu(GPU0, mask=0x4 | 0x40)], [DeviceRef(index=0, uuid=GPU0)])
    state = window(meter, clock, 1.0).info["state"]
    assert state == {"temperature_c": 55, "sm_clock_mhz": 1980, "throttle_reasons": ["hw_thermal_slowdown", "sw_power_cap"],
                     "throttled": ["hw_thermal_slowdown"], "power_limit_w": 700.0}


def test_the_temperature_is_the_windows_start_and_idle_is_no_slowdown():
    meter, fake, engine, clock = thermal()
    fake.gpus[0].mask = 0x1  # gpu_idle: the GPU waited for the ticks, nothing slowed the work
    m = measure(engine, meter, Workload(128, 64), rounds=3, warmup=0)
    temps = [r.info["state"]["temperature_c"] for r in m.rounds]
    assert temps == sorted(temps) and temps[0] == 40  # it warms as it works; each is the window's start
    assert all(r.info["state"]["throttle_reasons"] == [] for r in m.rounds)


def test_the_simulator_reports_its_own_state():
    from pytest_joules import registry
    from pytest_joules.engines.base import EngineSpec
    from pytest_joules.meters.base import MeterSpec

    engine = registry.make_engine(EngineSpec(name="sim", model="tiny-gqa", options={"seed": 1}))
    m = measure(engine, registry.make_meter(MeterSpec("sim", {}), engine), Workload(128, 64), rounds=2)
    state = m.rounds[0].info["state"]
    assert state["simulated"] is True and state["sm_clock_mhz"] == 1980 and state["power_limit_w"] == 700
    assert 30 < state["temperature_c"] < 80 and state["throttled"] == []


# -- flags ----------------------------------------------------------------------------------------
def _record(name, temps, throttled=()):
    rounds = [{"info": {"state": {"temperature_c": t, "sm_clock_mhz": 1980, "power_limit_w": 700,
                                  "throttled": list(throttled) if i == 0 else []}}} for i, t in enumerate(temps)]
    return ResultRecord(name=name, n_in=128, n_out=64, rounds=rounds, meter="nvml", device={"gpu": "H100"})


def test_a_reading_taken_throttled_or_far_from_the_usual_temperature_is_flagged():
    records = [_record("warm", [62, 63, 62]), _record("hot", [61, 62, 62], ["hw_thermal_slowdown"]),
               _record("cold", [41, 45, 60])]
    annotate(records)
    warm, hot, cold = (r.device_state for r in records)
    assert warm["flags"] == [] and warm["temperature_c"] == 62
    assert hot["flags"] == ["1 of 3 windows throttled (hw_thermal_slowdown)"] and hot["throttled_windows"] == 1
    assert cold["flags"] == ["2 of 3 windows opened at 41-45 °C, more than 10 °C from the session's usual 62 °C"]


def test_the_plugin_summary_and_results_name_flagged_readings(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_energy="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_cool(joules):
            joules()

        @pytest.mark.energy(n_in=256, n_out=64)
        def test_hot(joules):
            joules()
        """)
    monkeypatch.setenv("FAKE_THROTTLED", "test_hot")
    result = proj.runpytest("--joules", "--joules-json=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["device state: readings a GPU may not repeat (taken throttled, or far from the usual "
                                 "temperature) (1):", "  test_energy.py::test_hot: 3 of 3 windows throttled (hw_thermal_slowdown)"])
    rows = json.loads((proj.path / "r.json").read_text())["results"]
    assert rows[0]["device_state"]["flags"] == [] and rows[1]["device_state"]["sm_clock_mhz"] == 1200
    assert rows[1]["rounds"][0]["info"]["state"]["throttle_reasons"] == ["hw_thermal_slowdown"]


# -- optional: locked clocks and preconditioning ----------------------------------------------------
def test_locked_clocks_hold_for_the_session_and_are_reset_at_close():
    meter, fake, engine, clock = thermal({"lock_sm_clock_mhz": 1410})
    assert fake.locked == {GPU0: 1410}
    state = window(meter, clock, 1.0).info["state"]
    assert state["sm_clock_mhz"] == 1410 and state["locked_sm_clock_mhz"] == 1410
    meter.close()
    assert fake.resets == [GPU0] and fake.locked == {}


@pytest.mark.parametrize("code, needs", [(nvml.NO_PERMISSION, "locking clocks needs root"),
                                         (nvml.NOT_SUPPORTED, "a Volta or newer GPU")])
def test_locking_clocks_without_what_it_needs_is_one_line(code, needs):
    with pytest.raises(ConfigError, match=f"lock_sm_clock_mhz=1410: GPU {GPU0}.*{needs}"):
        thermal({"lock_sm_clock_mhz": 1410}, lock_error=code)


def test_clocks_are_not_locked_unless_asked():
    meter, fake, engine, clock = thermal()
    assert fake.locked == {} and "locked_sm_clock_mhz" not in window(meter, clock, 1.0).info["state"]


def test_preconditioning_runs_the_workload_until_the_temperature_settles():
    meter, fake, engine, clock = thermal({"precondition_s": 120, "settle_window_s": 3})
    m = measure(engine, meter, Workload(128, 64), rounds=3, warmup=0)
    done = m.rounds[0].info["preconditioned"]
    assert done["settled"] and done["temperature_c_start"] == 40 and done["temperature_c"] == 70
    assert m.rounds[0].info["state"]["temperature_c"] == 70  # the first window opens warm
    assert "preconditioned" not in m.rounds[1].info  # once per session
    before = clock.busy_s(clock.t)
    again = measure(engine, meter, Workload(128, 64), rounds=1, warmup=0)  # a second test: not again
    assert clock.busy_s(clock.t) - before < 2.0 and "preconditioned" not in again.rounds[0].info


def test_preconditioning_stops_at_its_time_limit_and_says_so():
    meter, fake, engine, clock = thermal({"precondition_s": 1, "settle_window_s": 3})
    m = measure(engine, meter, Workload(128, 64), rounds=1, warmup=0)
    done = m.rounds[0].info["preconditioned"]
    assert not done["settled"] and 1 <= done["seconds"] < 2


def test_preconditioning_is_off_by_default():
    meter, fake, engine, clock = thermal()
    m = measure(engine, meter, Workload(128, 64), rounds=1, warmup=0)
    assert "preconditioned" not in m.rounds[0].info and m.rounds[0].info["state"]["temperature_c"] == 40
