"""The nvml meter's logic against a fake at its pynvml seam (`NvmlApi`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from pytest_joules.engines.base import DeviceRef
from pytest_joules.errors import ConfigError, InvalidMeasurement, MeterUnavailable
from pytest_joules.measure import measure
from pytest_joules.meters import nvml
from pytest_joules.meters.base import MeterSpec
from pytest_joules.workload import EngineRun, Workload

MY_PID = 1000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


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
        return int(round(h.watts * self.clock.t * 1000))

    def power_mw(self, h: FakeGpu) -> int:
        return int(h.watts * 1000)

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
        self.clock.t += self.run_s
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
        env=env if env is not None else {}, pids=lambda: {MY_PID}, clock=clock,
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


def test_counter_reset_is_invalid_not_a_result():
    gpu = FakeGpu(GPU0, energy_override=[5_000_000, 9_000_000, 1_000])  # probe, begin, end
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 2.0)
    assert not r.valid
    assert "went backwards" in r.problems[0] and "counter reset" in r.problems[0]
    # the next window is fine again: a reset spoils one window, not the meter
    assert window(meter, clock, 2.0).valid


def test_zero_delta_is_invalid():
    gpu = FakeGpu(GPU0, energy_override=[42, 42, 42])
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 1.0)
    assert not r.valid and "zero energy" in r.problems[0] and "min_window_s" in r.problems[0]


def test_implausibly_high_power_is_invalid():
    gpu = FakeGpu(GPU0, limit_mw=700_000, energy_override=[0, 0, 2_000_000])  # 2000 J in 1 s
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
    r = window(meter, clock, 1.0)
    assert not r.valid and "2000.0 W" in r.problems[0] and "1.5x" in r.problems[0]


def test_implausibly_low_power_is_invalid():
    gpu = FakeGpu(GPU0, energy_override=[0, 0, 100])  # 0.1 J in 1 s
    meter, _, _, clock = make([gpu], [DeviceRef(uuid=GPU0)])
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
    assert {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetHandleByUUID"} <= names
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


def test_power_sampling_integrates_where_there_is_no_counter():
    gpu = FakeGpu(GPU0, watts=250.0, has_counter=False)
    clock = Clock()
    fake = FakeNvml([gpu], clock)
    # real time here: the sampler thread runs on the wall clock
    meter = nvml.build(MeterSpec("nvml", {"sample_interval_s": 0.01}), FakeEngine([DeviceRef(uuid=GPU0)], clock),
                       api_factory=lambda: fake, env={}, pids=lambda: {MY_PID})
    assert meter.device_info()["energy_source"] == "power sampling"
    meter.begin()
    time.sleep(0.3)
    r = meter.end()
    assert r.valid, r.problems
    assert r.joules[GPU0] == pytest.approx(250.0 * r.seconds, rel=0.05)
    assert r.info["gpus"][GPU0]["source"].startswith("power sampling")


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
