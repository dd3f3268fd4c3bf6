"""The nvml meter's logic against a fake at its pynvml seam (`NvmlApi`)."""

from __future__ import annotations

import bisect
import math
import random
import time
from dataclasses import dataclass, field

import pytest

from pytest_joules.engines.base import DeviceRef
from pytest_joules.errors import ConfigError, InvalidMeasurement, MeterUnavailable
from pytest_joules.measure import measure
from pytest_joules.meters import nvml
from pytest_joules.meters.base import MeterSpec
from pytest_joules.engines.workload import EngineRun, Workload

MY_PID = 1000


class Clock:
    """The fake time; `sleep` advances it, `work` advances it with the GPUs busy."""

    def __init__(self) -> None:
        self.t = 100.0
        self.busy: list[tuple[float, float]] = []  # in time order
        self._starts: list[float] = []
        self._before: list[float] = []  # busy seconds before each interval

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def work(self, seconds: float) -> None:
        self._before.append(self._before[-1] + (self.busy[-1][1] - self.busy[-1][0]) if self.busy else 0.0)
        self.busy.append((self.t, self.t + seconds))
        self._starts.append(self.t)
        self.t += seconds

    def busy_s(self, t: float) -> float:
        """Seconds of work before time t."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        a, b = self.busy[i]
        return self._before[i] + min(b, t) - a


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    pci: str = "00000000:1B:00.0"
    watts: float = 300.0
    limit_mw: int = 700_000
    has_counter: bool = True
    mig: bool = False
    pids: list[int] = field(default_factory=lambda: [MY_PID])
    mask: int = 0
    energy_override: list[int] = field(default_factory=list)  # returned first, in order
    energy_error: int | None = None
    idle_watts: float | None = None  # power outside Clock.work; None: `watts` all the time
    period_s: float = 0.0  # the counter moves every period_s (at phase_s past it); 0: continuously
    phase_s: float = 0.0
    stuck: bool = False  # the counter stops moving
    offset_mj: int = 0  # added to the counter (a negative jump is a reset)
    util_samples: list[tuple[int, float]] | None = None  # (us, percent); None: not supported
    util_percent: float | None = None  # the rate at the end; None: not supported


class FakeNvml:
    """Energy = watts x fake time, so a window's delta is exactly watts x its length."""

    def __init__(self, gpus: list[FakeGpu], clock: Clock, init_error: int | None = None) -> None:
        self.gpus = gpus
        self.clock = clock
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0

    def _err(self, code: int, call: str) -> nvml.NvmlCallError:
        return nvml.NvmlCallError(code, call)

    def init(self) -> None:
        if self.init_error is not None:
            raise self._err(self.init_error, "nvmlInit")
        self.inits += 1

    def shutdown(self) -> None:
        self.shutdowns += 1

    def device_count(self) -> int:
        return len(self.gpus)

    def handle_by_index(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise self._err(nvml.NOT_FOUND, "nvmlDeviceGetHandleByIndex")
        return self.gpus[i]

    def handle_by_uuid(self, uuid: str) -> FakeGpu:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise self._err(nvml.NOT_FOUND, "nvmlDeviceGetHandleByUUID")

    def handle_by_pci_bus_id(self, bus: str) -> FakeGpu:
        for g in self.gpus:
            if g.pci == bus:
                return g
        raise self._err(nvml.NOT_FOUND, "nvmlDeviceGetHandleByPciBusId")

    def name(self, h: FakeGpu) -> str:
        return h.name

    def uuid(self, h: FakeGpu) -> str:
        return h.uuid

    def driver_version(self) -> str:
        return "570.86.15"

    def cuda_driver_version(self) -> int:
        return 12080

    def power_limit_mw(self, h: FakeGpu) -> int:
        return h.limit_mw

    def energy_mj(self, h: FakeGpu) -> int:
        if h.energy_error is not None:
            raise self._err(h.energy_error, "nvmlDeviceGetTotalEnergyConsumption")
        if not h.has_counter:
            raise self._err(nvml.NOT_SUPPORTED, "nvmlDeviceGetTotalEnergyConsumption")
        if h.energy_override:
            return h.energy_override.pop(0)
        if h.stuck:
            h.stuck_value = getattr(h, "stuck_value", None) or self._counter(h)
            return h.stuck_value
        return self._counter(h)

    def _counter(self, h: FakeGpu) -> int:
        t = self.clock.t
        if h.period_s:
            t = math.floor((t - h.phase_s) / h.period_s) * h.period_s + h.phase_s  # the last tick
        idle = h.watts if h.idle_watts is None else h.idle_watts
        joules = idle * t + (h.watts - idle) * self.clock.busy_s(t)
        return int(round(joules * 1000)) + h.offset_mj

    def power_mw(self, h: FakeGpu) -> int:
        return int(h.watts * 1000)

    def utilization_percent(self, h: FakeGpu) -> float:
        if h.util_percent is None:
            raise self._err(nvml.NOT_SUPPORTED, "nvmlDeviceGetUtilizationRates")
        return h.util_percent

    def utilization_samples(self, h: FakeGpu, last_seen_us: int) -> list[tuple[int, float]]:
        if h.util_samples is None:
            raise self._err(nvml.NOT_SUPPORTED, "nvmlDeviceGetSamples")
        newer = [s for s in h.util_samples if s[0] > last_seen_us]
        if not newer:  # what NVML does when it has none to give
            raise self._err(nvml.NOT_FOUND, "nvmlDeviceGetSamples")
        return newer

    def temperature_c(self, h: FakeGpu) -> int:
        return 55

    def clocks_mhz(self, h: FakeGpu) -> dict[str, int]:
        return {"sm": 1980, "mem": 2619}

    def throttle_mask(self, h: FakeGpu) -> int:
        return h.mask

    def compute_pids(self, h: FakeGpu) -> list[int]:
        return list(h.pids)

    def mig_enabled(self, h: FakeGpu) -> bool:
        if not h.mig and h.name.startswith("Tesla"):
            raise self._err(nvml.NOT_SUPPORTED, "nvmlDeviceGetMigMode")
        return h.mig


class FakeEngine:
    kind = "fake"
    simulated = False
    default_meter = "nvml"
    max_positions = None

    def __init__(self, refs: list[DeviceRef], clock: Clock, run_s: float = 0.3) -> None:
        self.refs = refs
        self.clock = clock
        self.run_s = run_s

    def devices(self) -> list[DeviceRef]:
        return list(self.refs)

    def run(self, w: Workload) -> EngineRun:
        self.clock.work(self.run_s)
        return EngineRun([w.n_in] * w.requests, [w.n_out] * w.requests, self.run_s)

    def sync(self) -> None:
        pass

    def identity(self) -> dict[str, str]:
        return {"kind": "fake", "model": "m", "dtype": "bf16", "version": "0"}

    def close(self) -> None:
        pass


GPU0 = "GPU-00000000-aaaa-bbbb-cccc-000000000000"
GPU1 = "GPU-11111111-aaaa-bbbb-cccc-111111111111"


def make(gpus, refs, options=None, env=None, clock=None, init_error=None):
    clock = clock or Clock()
    fake = FakeNvml(gpus, clock, init_error=init_error)
    engine = FakeEngine(refs, clock)
    meter = nvml.build(
        MeterSpec("nvml", options or {}), engine, api_factory=lambda: fake,
        env=env if env is not None else {}, pids=lambda: {MY_PID}, clock=clock, sleep=clock.sleep,
    )
    return meter, fake, engine, clock


def window(meter, clock, seconds):
    meter.begin()
    clock.t += seconds
    return meter.end()


# -- windows and deltas -------------------------------------------------------------------------


def test_counter_delta_is_the_energy_of_the_window():
    meter, _, _, clock = make([FakeGpu(GPU0, watts=350.0)], [DeviceRef(index=0, uuid=GPU0)])
    r = window(meter, clock, 2.0)
    assert r.valid, r.problems
    assert r.joules == {GPU0: pytest.approx(700.0)}
    g = r.info["gpus"][GPU0]
    assert g["avg_watts"] == pytest.approx(350.0)
    assert g["source"] == "energy counter"
    assert g["temperature_c_start"] == 55 and g["clocks_mhz"] == {"sm": 1980, "mem": 2619}
    assert g["power_limit_w"] == 700.0 and g["other_pids"] == []


def test_measure_repeats_the_workload_until_the_window_is_long_enough():
    meter, _, engine, _ = make([FakeGpu(GPU0, watts=200.0)], [DeviceRef(uuid=GPU0)], {"min_window_s": 1.0})
    assert meter.min_window_s == 1.0
    m = measure(engine, meter, Workload(8, 4, requests=2), rounds=3, warmup=1)
    assert [r.reps for r in m.rounds] == [4, 4, 4]  # 4 x 0.3 s >= 1 s
    assert m.joules == pytest.approx(200.0 * 0.3)
    assert m.j_per_out_token == pytest.approx(200.0 * 0.3 / 8)
    assert m.device["gpu"] == "NVIDIA H100 80GB HBM3" and m.device["simulated"] is False


def test_two_gpus_are_summed_and_a_gpu_named_twice_is_metered_once():
    gpus = [FakeGpu(GPU0, watts=100.0), FakeGpu(GPU1, watts=300.0, pci="00000000:2A:00.0")]
    meter, _, _, clock = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(pci_bus_id="00000000:2A:00.0"), DeviceRef(uuid=GPU1)])
    r = window(meter, clock, 1.0)
    assert r.joules == {GPU0: pytest.approx(100.0), GPU1: pytest.approx(300.0)}
    assert r.total_joules == pytest.approx(400.0)
    assert meter.device_info()["gpu_count"] == 2


PLAIN = {"align": False}  # plain reads: one counter read per edge, as the overrides below expect


def test_counter_reset_is_invalid_not_a_result():
    gpu = FakeGpu(GPU0, energy_override=[5_000_000, 9_000_000, 1_000])  # probe, begin, end
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], PLAIN)
    r = window(meter, clock, 2.0)
    assert not r.valid
    assert "went backwards" in r.problems[0] and "counter reset" in r.problems[0]
    # the next window is fine again: a reset spoils one window, not the meter
    assert window(meter, clock, 2.0).valid


def test_zero_delta_is_invalid():
    gpu = FakeGpu(GPU0, energy_override=[42, 42, 42])
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], PLAIN)
    r = window(meter, clock, 1.0)
    assert not r.valid and "zero energy" in r.problems[0] and "min_window_s" in r.problems[0]


def test_implausibly_high_power_is_invalid():
    gpu = FakeGpu(GPU0, limit_mw=700_000, energy_override=[0, 0, 2_000_000])  # 2000 J in 1 s
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], PLAIN)
    r = window(meter, clock, 1.0)
    assert not r.valid and "2000.0 W" in r.problems[0] and "1.5x" in r.problems[0]


def test_implausibly_low_power_is_invalid():
    gpu = FakeGpu(GPU0, energy_override=[0, 0, 100])  # 0.1 J in 1 s
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], PLAIN)
    r = window(meter, clock, 1.0)
    assert not r.valid and "implausibly low" in r.problems[0]


def test_window_shorter_than_the_update_period_is_invalid():
    meter, _, _, clock = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 0.05)
    assert not r.valid and "update period" in r.problems[0]


def test_other_processes_are_flagged_but_do_not_invalidate():
    gpu = FakeGpu(GPU0, pids=[MY_PID, 4242])
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 1.0)
    assert r.valid
    assert r.info["gpus"][GPU0]["other_pids"] == [4242]
    assert any("other processes" in p and "4242" in p for p in r.problems)


def test_throttle_reasons_are_decoded_and_thermal_slowdown_flagged():
    gpu = FakeGpu(GPU0, mask=0x4 | 0x20)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 1.0)
    assert r.info["gpus"][GPU0]["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert any("sw_thermal_slowdown" in p for p in r.problems)
    assert not any("sw_power_cap" in p for p in r.problems)  # normal at full load
    assert nvml.decode_throttle_reasons(0x1 | 0x10000) == ["gpu_idle", "other(0x10000)"]


def test_gpu_lost_mid_run_is_an_invalid_measurement_naming_the_cause():
    gpu = FakeGpu(GPU0)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    meter.begin()
    gpu.energy_error = nvml.GPU_IS_LOST
    with pytest.raises(InvalidMeasurement, match="GPU is lost"):
        meter.end()


# -- device mapping -----------------------------------------------------------------------------


def _two():
    return [FakeGpu(GPU0, watts=100.0), FakeGpu(GPU1, watts=300.0, pci="00000000:2A:00.0")]


def test_mapping_by_uuid_beats_index():
    meter, _, _, clock = make(_two(), [DeviceRef(index=0, uuid=GPU1)])
    assert list(window(meter, clock, 1.0).joules) == [GPU1]


def test_mapping_by_pci_bus_id():
    meter, _, _, clock = make(_two(), [DeviceRef(index=0, pci_bus_id="00000000:2A:00.0")])
    assert list(window(meter, clock, 1.0).joules) == [GPU1]


def test_cuda_index_goes_through_cuda_visible_devices_integers():
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    meter, _, _, clock = make(_two(), [DeviceRef(index=0)], env=env)
    r = window(meter, clock, 1.0)
    assert list(r.joules) == [GPU1]
    assert r.info["gpus"][GPU1]["mapped_by"] == "NVML index 1 from CUDA_VISIBLE_DEVICES"


def test_integer_cuda_visible_devices_without_pci_order_warns_in_the_mapping():
    meter, _, _, clock = make(_two(), [DeviceRef(index=0)], env={"CUDA_VISIBLE_DEVICES": "1"})
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in window(meter, clock, 1.0).info["gpus"][GPU1]["mapped_by"]


def test_cuda_index_goes_through_cuda_visible_devices_uuids():
    meter, _, _, clock = make(_two(), [DeviceRef(index=0)], env={"CUDA_VISIBLE_DEVICES": f"{GPU1},{GPU0}"})
    assert list(window(meter, clock, 1.0).joules) == [GPU1]


def test_unset_cuda_visible_devices_uses_the_nvml_index():
    meter, _, _, clock = make(_two(), [DeviceRef(index=1)], env={})
    assert list(window(meter, clock, 1.0).joules) == [GPU1]


def test_index_beyond_cuda_visible_devices_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES='1' lists only 1"):
        make(_two(), [DeviceRef(index=1)], env={"CUDA_VISIBLE_DEVICES": "1"})


def test_bad_cuda_visible_devices_entry_is_a_config_error():
    with pytest.raises(ConfigError, match="neither an index nor a GPU-/MIG- UUID"):
        make(_two(), [DeviceRef(index=0)], env={"CUDA_VISIBLE_DEVICES": "gpu0"})


@pytest.mark.parametrize(
    "refs, env",
    [
        ([DeviceRef(uuid="MIG-1234")], {}),
        ([DeviceRef(index=0)], {"CUDA_VISIBLE_DEVICES": "MIG-GPU-xyz/1/0"}),
    ],
)
def test_mig_slices_are_unsupported(refs, env):
    with pytest.raises(MeterUnavailable, match="MIG slice.*cannot measure"):
        make(_two(), refs, env=env)


def test_gpu_with_mig_enabled_is_unsupported():
    with pytest.raises(MeterUnavailable, match="MIG enabled"):
        make([FakeGpu(GPU0, mig=True)], [DeviceRef(uuid=GPU0)])


def test_unknown_uuid_names_the_device():
    with pytest.raises(MeterUnavailable, match="GPU-nope.*no such GPU"):
        make(_two(), [DeviceRef(uuid="GPU-nope")])


def test_cpu_engine_is_refused_unless_devices_all():
    with pytest.raises(MeterUnavailable, match="reports no GPU.*devices=all"):
        make(_two(), [])
    meter, _, _, clock = make(_two(), [], options={"devices": "all"})
    assert window(meter, clock, 1.0).total_joules == pytest.approx(400.0)


# -- NVML errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, words",
    [
        (nvml.LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
        (nvml.DRIVER_NOT_LOADED, "driver is not loaded"),
        (nvml.NO_PERMISSION, "no permission"),
        (nvml.LIB_RM_VERSION_MISMATCH, "reboot"),
        (999, "NVML error 999"),
    ],
)
def test_init_errors_name_the_cause(code, words):
    with pytest.raises(MeterUnavailable, match="NVML is not usable here") as exc:
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], init_error=code)
    assert words in str(exc.value)


def test_energy_counter_error_other_than_not_supported_is_unavailable():
    gpu = FakeGpu(GPU0, energy_error=nvml.NO_PERMISSION)
    with pytest.raises(MeterUnavailable, match="cannot read the energy counter: .*no permission"):
        make([gpu], [DeviceRef(uuid=GPU0)])


def test_setup_failure_shuts_nvml_down():
    clock = Clock()
    fake = FakeNvml([FakeGpu(GPU0, energy_error=nvml.NO_PERMISSION)], clock)
    with pytest.raises(MeterUnavailable):
        nvml.build(MeterSpec("nvml"), FakeEngine([DeviceRef(uuid=GPU0)], clock), api_factory=lambda: fake, env={})
    assert fake.inits == 1 and fake.shutdowns == 1


def test_close_shuts_nvml_down_once_and_refuses_new_windows():
    meter, fake, _, _ = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)])
    meter.close()
    meter.close()
    assert fake.shutdowns == 1
    with pytest.raises(MeterUnavailable, match="closed"):
        meter.begin()


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="min_window_s must be a number"):
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], options={"min_window_s": "long"})
    with pytest.raises(ConfigError, match="devices must be"):
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], options={"devices": "some"})
    for bad in ("nan", float("nan"), float("inf"), -1):  # a NaN window never closes: 10,000 reps a round
        with pytest.raises(ConfigError, match="min_window_s must be a finite non-negative number"):
            make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], options={"min_window_s": bad})
    with pytest.raises(ConfigError, match="unknown nvml meter option.*'min_window'.*accepts min_window_s"):
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], options={"min_window": 2})


def test_real_seam_reports_missing_library_here():
    """This machine has no NVIDIA driver: the real pynvml path must say so, not crash."""
    try:
        api = nvml.NvmlApi()
        api.init()
    except nvml.NvmlCallError as exc:
        assert exc.code in (nvml.LIBRARY_NOT_FOUND, nvml.DRIVER_NOT_LOADED)
        ok, reason, gpus = nvml.probe()
        assert not ok and "NVML is not usable here" in reason and gpus == []
    else:  # a machine with a GPU: the probe must then find it
        api.shutdown()
        ok, reason, gpus = nvml.probe()
        assert gpus, reason


def test_real_seam_calls_only_functions_the_installed_pynvml_has():
    import inspect
    import re

    pynvml = pytest.importorskip("pynvml")
    names = set(re.findall(r'"(nvml[A-Za-z_0-9]+)"', inspect.getsource(nvml.NvmlApi)))
    assert {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetSamples"} <= names
    assert hasattr(pynvml, "NVML_GPU_UTILIZATION_SAMPLES")
    missing = sorted(n for n in names if not hasattr(pynvml, n))
    # the throttle-reasons getter is looked up by name with a fallback; one of the two suffices
    assert missing in ([], ["nvmlDeviceGetCurrentClocksEventReasons"], ["nvmlDeviceGetCurrentClocksThrottleReasons"])


def test_real_seam_translates_nvml_errors(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    api = nvml.NvmlApi()
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: 123_456)
    assert api.energy_mj("handle") == 123_456

    def lost(h):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lost)
    with pytest.raises(nvml.NvmlCallError) as exc:
        api.energy_mj("handle")
    assert exc.value.code == nvml.GPU_IS_LOST and "GPU is lost" in str(exc.value)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: b"NVIDIA H100")
    assert api.name("handle") == "NVIDIA H100"


def test_fingerprint():
    meter, _, _, _ = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)])
    info = meter.device_info()
    assert info == {
        "meter": "nvml", "simulated": False, "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1,
        "power_limit_w": 700.0, "driver": "570.86.15", "cuda_driver_version": "12.8", "energy_source": "counter",
    }


# -- power sampling fallback and idle power ---------------------------------------------------------


def test_integrate_is_trapezoidal():
    assert nvml.integrate([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(150.0 + 400.0)
    assert nvml.integrate([(0.0, 100.0)]) == 0.0


def _sampling_meter(gpu, options):
    # real time here: the sampler thread runs on the wall clock
    clock = Clock()
    fake = FakeNvml([gpu], clock)
    return nvml.build(MeterSpec("nvml", options), FakeEngine([DeviceRef(uuid=GPU0)], clock),
                      api_factory=lambda: fake, env={}, pids=lambda: {MY_PID})


def test_power_sampling_integrates_where_there_is_no_counter():
    gpu = FakeGpu(GPU0, watts=250.0, has_counter=False)
    meter = _sampling_meter(gpu, {"sample_interval_s": 0.01, "min_sampling_window_s": 0.2, "power_average_s": 0.05})
    assert meter.device_info()["energy_source"] == "power sampling"
    meter.begin()
    time.sleep(0.3)
    r = meter.end()
    assert r.valid, r.problems
    assert r.joules[GPU0] == pytest.approx(250.0 * r.seconds, rel=0.05)
    g = r.info["gpus"][GPU0]
    assert g["source"].startswith("power sampling") and "shifted 0.025 s" in g["source"]
    assert g["aligned"] is False and g["tick_bound_j"] is None and r.info["tick_bound_j"] is None
    assert r.info["tick_wait_s"] >= 0.025  # it kept sampling tau/2 past the end


def test_power_sampling_needs_long_windows():
    gpu = FakeGpu(GPU0, watts=250.0, has_counter=False)
    meter = _sampling_meter(gpu, {"sample_interval_s": 0.01, "min_window_s": 1.0, "power_average_s": 0.05})
    assert meter.min_window_s == 5.0  # the default min_sampling_window_s: measure repeats the workload that long
    meter.begin()
    time.sleep(0.3)
    r = meter.end()
    assert not r.valid
    assert any("too short for power sampling" in p and "min_sampling_window_s" in p and "averages over 0.05 s" in p
               for p in r.problems)
    counter_meter, *_ = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], {"min_window_s": 1.0})
    assert counter_meter.min_window_s == 1.0  # a counter needs no such minimum


def test_no_counter_and_no_power_is_unavailable():
    class NoPower(FakeNvml):
        def power_mw(self, h):
            raise self._err(nvml.NOT_SUPPORTED, "nvmlDeviceGetPowerUsage")

    clock = Clock()
    fake = NoPower([FakeGpu(GPU0, has_counter=False)], clock)
    with pytest.raises(MeterUnavailable, match="no energy counter and no power reading"):
        nvml.build(MeterSpec("nvml"), FakeEngine([DeviceRef(uuid=GPU0)], clock), api_factory=lambda: fake, env={})


def test_idle_power_and_energy_above_idle():
    meter, _, _, clock = make([FakeGpu(GPU0, watts=80.0)], [DeviceRef(uuid=GPU0)], options={"idle_s": 0.05})
    r = window(meter, clock, 2.0)  # the fake draws the same 80 W "under load"
    assert r.info["idle_watts"] == pytest.approx(80.0)
    assert r.info["joules_above_idle"] == pytest.approx(0.0, abs=1e-6)
    assert r.info["gpus"][GPU0]["joules_above_idle"] == pytest.approx(0.0, abs=1e-6)


def test_counter_update_period_is_the_median_gap_between_changes():
    class Stepping:
        def __init__(self):
            self.t0 = time.perf_counter()

        def energy_mj(self, h):
            return int((time.perf_counter() - self.t0) / 0.02)  # changes every 20 ms

    period = nvml.counter_update_period(Stepping(), None, seconds=0.2)
    assert period == pytest.approx(0.02, rel=0.25)


# -- windows aligned to the counter's ticks ---------------------------------------------------------

BUSY_W, IDLE_W, PERIOD = 400.0, 120.0, 0.1
TICK_J = BUSY_W * PERIOD  # one tick's energy at busy power


def work_window(meter, clock, seconds):
    """A window around `seconds` of work (the GPUs busy), as the measurement path opens it."""
    meter.begin()
    clock.work(seconds)
    return meter.end()


def window_errors(align: bool, trials: int = 300, seed: int = 3) -> list[float]:
    """Errors, in ticks of busy energy, of windows of random length at random tick phases."""
    rng = random.Random(seed)
    gpu = FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD, phase_s=rng.uniform(0, PERIOD))
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], {"align": align})
    errors = []
    for _ in range(trials):
        clock.sleep(rng.uniform(0, 1))  # a random phase for this window
        seconds = rng.uniform(1.0, 2.0)
        r = work_window(meter, clock, seconds)
        assert r.valid, r.problems
        assert r.seconds == pytest.approx(seconds)
        errors.append((r.joules[GPU0] - BUSY_W * seconds) / TICK_J)
        if align:  # the recorded bound holds (+2 mJ: the counter's integer rounding)
            assert abs(r.joules[GPU0] - BUSY_W * seconds) <= r.info["tick_bound_j"] + 0.002
    return errors


def test_aligned_windows_cut_the_error_from_about_a_tick_to_a_small_fraction_of_one():
    plain = window_errors(align=False)
    aligned = window_errors(align=True)
    # plain reads: from -1 tick (the end read misses a period of work) to +IDLE/BUSY (idle before the work)
    assert min(plain) < -0.9 and max(plain) > 0.25
    assert max(plain) - min(plain) > 1.1
    assert max(abs(e) for e in aligned) < 0.05


def test_aligned_window_records_the_tail_and_the_bound():
    gpu = FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD, phase_s=0.03)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    clock.t = 100.0  # next tick at 100.03: the work runs 100.03 .. 101.28, the closing tick is at 101.33
    r = work_window(meter, clock, 1.25)
    g = r.info["gpus"][GPU0]
    assert g["aligned"] is True
    assert g["tail_s"] == pytest.approx(0.05, abs=0.001)
    assert g["tail_joules"] == pytest.approx(IDLE_W * 0.05, abs=0.2)
    assert g["tail_watts"] == pytest.approx(IDLE_W, rel=0.01)
    assert g["raw_joules"] == pytest.approx(BUSY_W * 1.25 + IDLE_W * 0.05, abs=0.1)
    assert r.joules[GPU0] == pytest.approx(BUSY_W * 1.25, abs=0.2)
    assert 0 < g["tick_bound_j"] < 0.01 * TICK_J
    assert r.info["tick_bound_j"] == g["tick_bound_j"]
    assert g["tick_latency_s"] == pytest.approx(0.0005)
    assert r.info["tick_wait_s"] == pytest.approx(0.03 + 0.05 + 0.1, abs=0.002)  # head wait, tail, tick after


def test_plain_reads_record_that_they_are_not_aligned():
    gpu = FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], PLAIN)
    r = work_window(meter, clock, 1.25)
    g = r.info["gpus"][GPU0]
    assert g["aligned"] is False and g["tail_s"] == 0.0 and g["tail_joules"] == 0.0
    assert g["tick_bound_j"] == pytest.approx(PERIOD * r.joules[GPU0] / r.seconds)  # a period of the average power
    assert r.info["tick_wait_s"] == 0.0


def test_several_gpus_with_different_tick_phases():
    gpus = [
        FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD, phase_s=0.01),
        FakeGpu(GPU1, watts=300.0, idle_watts=80.0, period_s=PERIOD, phase_s=0.08, pci="00000000:2A:00.0"),
    ]
    meter, _, _, clock = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)])
    clock.t = 100.0  # GPU0 ticks at 100.01, GPU1 at 100.08: the work starts after GPU1's tick
    r = work_window(meter, clock, 1.29)
    assert r.valid, r.problems
    assert r.seconds == pytest.approx(1.29)
    g0, g1 = r.info["gpus"][GPU0], r.info["gpus"][GPU1]
    assert g0["head_s"] == pytest.approx(0.07, abs=0.001) and g0["head_joules"] == pytest.approx(IDLE_W * 0.07, abs=0.2)
    assert g1["head_s"] == pytest.approx(0.0, abs=1e-9)
    assert r.joules[GPU0] == pytest.approx(BUSY_W * 1.29, abs=0.01 * BUSY_W * PERIOD)
    assert r.joules[GPU1] == pytest.approx(300.0 * 1.29, abs=0.01 * 300.0 * PERIOD)
    assert r.info["tick_bound_j"] == pytest.approx(g0["tick_bound_j"] + g1["tick_bound_j"])
    # the same window read plainly (work 100.0 .. 101.29): GPU0 gets 90 ms of idle before the
    # work and misses the 80 ms of work after its last tick
    gpus2 = [FakeGpu(g.uuid, watts=g.watts, idle_watts=g.idle_watts, period_s=PERIOD, phase_s=g.phase_s, pci=g.pci)
             for g in gpus]
    meter2, _, _, clock2 = make(gpus2, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)], PLAIN)
    clock2.t = 100.0
    r2 = work_window(meter2, clock2, 1.29)
    assert r2.joules[GPU0] - BUSY_W * 1.29 == pytest.approx(IDLE_W * 0.09 - BUSY_W * 0.08, abs=0.01)


def test_random_phases_on_two_gpus_stay_within_a_small_fraction_of_a_tick():
    rng = random.Random(5)
    for _ in range(50):
        gpus = [FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD, phase_s=rng.uniform(0, PERIOD)),
                FakeGpu(GPU1, watts=250.0, idle_watts=60.0, period_s=PERIOD, phase_s=rng.uniform(0, PERIOD),
                        pci="00000000:2A:00.0")]
        meter, _, _, clock = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)])
        clock.sleep(rng.uniform(0, 1))
        seconds = rng.uniform(1, 2)
        r = work_window(meter, clock, seconds)
        assert abs(r.joules[GPU0] - BUSY_W * seconds) < 0.05 * BUSY_W * PERIOD
        assert abs(r.joules[GPU1] - 250.0 * seconds) < 0.05 * 250.0 * PERIOD


def test_a_stuck_counter_makes_the_window_invalid_within_the_timeout():
    gpu = FakeGpu(GPU0, period_s=PERIOD, stuck=True)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)], {"tick_timeout_s": 0.3})
    t = clock.t
    r = work_window(meter, clock, 1.0)
    assert clock.t - t - 1.0 <= 0.3 + 0.001  # it gave up after the timeout, and did not wait again at the end
    assert not r.valid
    assert any(GPU0 in p and "did not move for 0.3 s before the window" in p and "align=false" in p for p in r.problems)
    assert r.info["gpus"][GPU0]["aligned"] is False


def test_a_counter_that_stops_during_the_window_makes_it_invalid():
    gpu = FakeGpu(GPU0, period_s=PERIOD)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    meter.begin()
    clock.work(1.0)
    gpu.stuck = True
    r = meter.end()
    assert not r.valid and any("did not move for 0.5 s after the window" in p for p in r.problems)
    assert meter.begin() is None and not gpu.energy_override  # the meter is still usable


def test_tick_timeout_defaults_to_five_update_periods():
    meter, *_ = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], {"update_period_s": 0.2})
    assert meter._opt.tick_timeout_s == pytest.approx(1.0)
    assert nvml.NvmlOptions.from_spec(MeterSpec("nvml")).tick_timeout_s == 0.5


def test_a_counter_reset_inside_an_aligned_window_is_invalid():
    gpu = FakeGpu(GPU0, period_s=PERIOD)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    meter.begin()
    clock.work(1.0)
    gpu.offset_mj = -10**9
    r = meter.end()
    assert not r.valid and "went backwards" in r.problems[0]


def test_gpu_lost_while_waiting_for_a_tick_is_an_invalid_measurement():
    gpu = FakeGpu(GPU0, period_s=PERIOD)
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    gpu.energy_error = nvml.GPU_IS_LOST
    with pytest.raises(InvalidMeasurement, match="GPU is lost"):
        meter.begin()


@pytest.mark.parametrize("value, expected", [(True, True), ("false", False), ("no", False), (0, False), ("1", True)])
def test_align_option(value, expected):
    meter, *_ = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], {"align": value})
    assert meter._opt.align is expected


def test_bad_alignment_options_are_config_errors():
    with pytest.raises(ConfigError, match="align must be true or false, got 'maybe'"):
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], {"align": "maybe"})
    with pytest.raises(ConfigError, match="poll_s must be a finite positive number"):
        make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)], {"poll_s": 0})


def test_measure_with_aligned_windows():
    gpu = FakeGpu(GPU0, watts=BUSY_W, idle_watts=IDLE_W, period_s=PERIOD, phase_s=0.042)
    meter, _, engine, _ = make([gpu], [DeviceRef(uuid=GPU0)], {"min_window_s": 1.0})
    m = measure(engine, meter, Workload(8, 4, requests=2), rounds=3, warmup=1)
    assert all(r.valid for r in m.rounds) and [r.reps for r in m.rounds] == [4, 4, 4]
    assert m.joules == pytest.approx(BUSY_W * 0.3, rel=0.01)


# -- the power-sampling fallback: the reading is an average ------------------------------------------------


def boxcar_samples(step_up, step_down, idle_w, load_w, tau, t_from, t_to, dt=0.005):
    """Power readings every dt, each the average of the true power over the last tau seconds."""

    def avg(t):
        busy = max(0.0, min(t, step_down) - max(t - tau, step_up))
        return idle_w + (load_w - idle_w) * busy / tau

    n = int(round((t_to - t_from) / dt))
    return [(t_from + i * dt, avg(t_from + i * dt)) for i in range(n + 1)]


def test_integrate_between_interpolates_at_the_edges():
    samples = [(0.0, 100.0), (1.0, 200.0), (2.0, 200.0)]
    assert nvml.integrate_between(samples, 0.5, 1.5) == pytest.approx(0.5 * (150.0 + 200.0) / 2 + 0.5 * 200.0)
    assert nvml.integrate_between(samples, 0.0, 2.0) == pytest.approx(nvml.integrate(samples))
    assert nvml.integrate_between(samples, 1.0, 1.0) == 0.0


def test_shifted_integration_halves_the_error_of_a_boxcar_averaged_step():
    idle, load, tau, t0, t1 = 127.0, 684.0, 1.0, 10.0, 16.03  # the H200's step (docs/hardware.md)
    samples = boxcar_samples(t0, t1, idle, load, tau, t0 - 2, t1 + 2)
    truth = load * (t1 - t0)
    unshifted = nvml.integrate_between(samples, t0, t1) - truth
    shifted = nvml.shifted_energy(samples, t0, t1, tau) - truth
    assert unshifted == pytest.approx(-0.5 * (load - idle) * tau, rel=0.01)
    assert shifted == pytest.approx(-0.25 * (load - idle) * tau, rel=0.01)
    assert abs(unshifted) / truth > 0.06 and abs(shifted) / truth < 0.04


def test_the_meter_shifts_its_power_integral_by_half_the_averaging():
    idle, load, tau = 100.0, 400.0, 0.2
    steps: list[float] = []

    class Boxcar(FakeNvml):
        def power_mw(self, h):
            t = time.perf_counter()
            if len(steps) < 1:
                return int(idle * 1000)
            up, down = steps[0], steps[1] if len(steps) > 1 else math.inf
            busy = max(0.0, min(t, down) - max(t - tau, up))
            return int((idle + (load - idle) * busy / tau) * 1000)

    clock = Clock()
    fake = Boxcar([FakeGpu(GPU0, has_counter=False)], clock)
    meter = nvml.build(MeterSpec("nvml", {"sample_interval_s": 0.002, "power_average_s": tau,
                                          "min_sampling_window_s": 0.3}),
                       FakeEngine([DeviceRef(uuid=GPU0)], clock), api_factory=lambda: fake, env={}, pids=lambda: {MY_PID})
    time.sleep(tau)
    meter.begin()
    steps.append(time.perf_counter())
    time.sleep(0.6)
    steps.append(time.perf_counter())
    r = meter.end()
    assert r.valid, r.problems
    truth = idle * r.seconds + (load - idle) * (steps[1] - steps[0])
    g = r.info["gpus"][GPU0]
    shifted, unshifted = r.joules[GPU0] - truth, g["unshifted_joules"] - truth
    assert abs(shifted) < abs(unshifted)
    assert unshifted == pytest.approx(-0.5 * (load - idle) * tau, abs=4.0)  # -30 J of 240 J
    assert shifted == pytest.approx(-0.25 * (load - idle) * tau, abs=4.0)  # -15 J


# -- GPU utilisation per window -------------------------------------------------------------------------


def test_utilisation_averages_the_driver_samples_inside_the_window():
    gpu = FakeGpu(GPU0, util_samples=[(99_000_000, 100.0)], util_percent=90.0)  # one sample before the window
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    meter.begin()
    clock.work(1.0)
    gpu.util_samples += [(101_000_000, 20.0), (101_200_000, 40.0), (101_400_000, 4e9)]  # the last is garbage
    r = meter.end()
    g = r.info["gpus"][GPU0]
    assert g["gpu_util"] == pytest.approx(0.30) and g["gpu_util_samples"] == 2
    assert r.info["gpu_util"] == pytest.approx(0.30)


def test_utilisation_falls_back_to_the_rate_at_the_end_then_to_none():
    gpus = [FakeGpu(GPU0, util_samples=[], util_percent=35.0),  # keeps no samples (NOT_FOUND), has the rate
            FakeGpu(GPU1, pci="00000000:2A:00.0")]  # supports neither
    meter, _, _, clock = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)])
    r = work_window(meter, clock, 1.0)
    assert r.valid, r.problems
    assert r.info["gpus"][GPU0]["gpu_util"] == pytest.approx(0.35) and r.info["gpus"][GPU0]["gpu_util_samples"] == 0
    assert r.info["gpus"][GPU1]["gpu_util"] is None
    assert r.info["gpu_util"] == pytest.approx(0.35)  # the mean over the GPUs that report it


def test_utilisation_unknown_everywhere_is_none():
    meter, _, _, clock = make([FakeGpu(GPU0)], [DeviceRef(uuid=GPU0)])
    r = work_window(meter, clock, 1.0)
    assert r.valid and r.info["gpu_util"] is None and r.info["gpus"][GPU0]["gpu_util"] is None


def test_real_seam_decodes_utilisation(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    api = nvml.NvmlApi()
    seen = []

    def samples(handle, kind, last_seen):
        seen.append((kind, last_seen))
        out = (pynvml.c_nvmlSample_t * 2)()
        out[0].timeStamp, out[0].sampleValue.uiVal = 1_700_000_000_000_000, 37
        out[1].timeStamp, out[1].sampleValue.uiVal = 1_700_000_000_166_000, 41
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, out[0:2]

    monkeypatch.setattr(pynvml, "nvmlDeviceGetSamples", samples)
    assert api.utilization_samples("h", 5) == [(1_700_000_000_000_000, 37.0), (1_700_000_000_166_000, 41.0)]
    assert seen == [(pynvml.NVML_GPU_UTILIZATION_SAMPLES, 5)]
    rates = pynvml.c_nvmlUtilization_t()
    rates.gpu, rates.memory = 73, 12
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: rates)
    assert api.utilization_percent("h") == 73.0


def test_a_counter_gpu_and_a_sampling_gpu_in_one_window():
    gpus = [FakeGpu(GPU0, watts=BUSY_W, period_s=PERIOD, phase_s=0.05),
            FakeGpu(GPU1, watts=250.0, has_counter=False, pci="00000000:2A:00.0")]
    meter, _, _, clock = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)], {"sample_interval_s": 0.001})
    assert meter.min_window_s == 5.0
    r = work_window(meter, clock, 6.0)
    assert r.valid, r.problems
    assert r.joules[GPU0] == pytest.approx(BUSY_W * 6.0, abs=0.05)
    assert r.joules[GPU1] == pytest.approx(250.0 * 6.0)  # constant power: the shift changes nothing
    assert r.info["gpus"][GPU0]["aligned"] is True and r.info["gpus"][GPU1]["aligned"] is False
    assert r.info["tick_bound_j"] == r.info["gpus"][GPU0]["tick_bound_j"]


def test_a_failed_begin_leaves_no_sampling_thread():
    import threading

    gpus = [FakeGpu(GPU0, period_s=PERIOD), FakeGpu(GPU1, has_counter=False, pci="00000000:2A:00.0")]
    meter, _, _, _ = make(gpus, [DeviceRef(uuid=GPU0), DeviceRef(uuid=GPU1)])
    gpus[0].energy_error = nvml.GPU_IS_LOST
    with pytest.raises(InvalidMeasurement, match="GPU is lost"):
        meter.begin()
    assert not [t for t in threading.enumerate() if t.name == "joules-nvml-power"]


# -- a server measured from outside (the openai engine): devices=, and its processes on them -------


SERVER_PID = 4242


def _served(gpus, options, server=frozenset({SERVER_PID})):
    clock = Clock()
    fake = FakeNvml(gpus, clock)
    engine = FakeEngine([], clock)
    engine.server_pids = lambda: set(server)
    meter = nvml.build(MeterSpec("nvml", options), engine, api_factory=lambda: fake, env={},
                       pids=lambda: {MY_PID}, clock=clock, sleep=clock.sleep)
    return meter, clock


def test_devices_names_the_gpus_of_a_server_by_index_or_uuid():
    gpus = [FakeGpu(GPU0, watts=100.0, pids=[SERVER_PID]), FakeGpu(GPU1, watts=300.0, pids=[SERVER_PID])]
    meter, clock = _served(gpus, {"devices": "0,1"})
    reading = window(meter, clock, 1.0)
    assert sorted(reading.joules) == sorted([GPU0, GPU1]) and reading.total_joules == pytest.approx(400.0)
    # the server on its own GPUs is the work, not "another process on the GPU"
    assert not any("other processes" in p for p in reading.problems)
    meter, clock = _served(gpus[1:] + [FakeGpu(GPU0, pids=[])], {"devices": GPU1})
    assert list(window(meter, clock, 1.0).joules) == [GPU1]


def test_a_server_on_gpus_that_are_not_metered_is_refused():
    gpus = [FakeGpu(GPU0, pids=[SERVER_PID]), FakeGpu(GPU1, pids=[SERVER_PID + 1])]
    with pytest.raises(ConfigError, match=r"also runs on GPU\(s\) GPU-1111.*not metered; name every GPU"):
        _served(gpus, {"devices": 0}, server={SERVER_PID, SERVER_PID + 1})
    with pytest.raises(ConfigError, match=r"does not run on metered GPU\(s\) GPU-1111.*devices="):
        _served(gpus, {"devices": "0,1"}, server={SERVER_PID})
    with pytest.raises(ConfigError, match="devices must be 'engine', 'all' or a list"):
        _served(gpus, {"devices": "first"})
