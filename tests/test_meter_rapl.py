"""The rapl meter against a fake powercap tree under tmp_path."""

from __future__ import annotations

import pytest

from pytest_joules.errors import ConfigError, MeterUnavailable
from pytest_joules.meters import rapl
from pytest_joules.meters.base import MeterSpec

MAX = 262_143_328_850


def zone(root, name, dirname, energy, max_range=MAX):
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "powercap"
    p0 = zone(root, "package-0", "intel-rapl:0", 1_000_000)
    p1 = zone(root, "package-1", "intel-rapl:1", 5_000_000)
    zone(root, "core", "intel-rapl:0:0", 7)  # sub-zone: not a package
    zone(root, "psys", "intel-rapl:2", 9)  # platform zone: overlaps the packages
    (root / "intel-rapl").mkdir()  # the control-type directory
    return root, p0, p1


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_delta_over_package_zones_only(tree):
    root, p0, p1 = tree
    clock = Clock()
    meter = rapl.build(MeterSpec("rapl", {"root": str(root)}), clock=clock)
    meter.begin()
    (p0 / "energy_uj").write_text("31000000\n")  # +30 J
    (p1 / "energy_uj").write_text("15000000\n")  # +10 J
    clock.t = 2.0
    r = meter.end()
    assert r.valid, r.problems
    assert r.joules == {"package-0": pytest.approx(30.0), "package-1": pytest.approx(10.0)}
    assert r.seconds == 2.0 and r.total_joules == pytest.approx(40.0)
    assert meter.device_info()["packages"] == 2 and meter.device_info()["simulated"] is False


def test_wraparound_adds_the_range_back_once(tree):
    root, p0, _ = tree
    (p0 / "energy_uj").write_text(f"{MAX - 2_000_000}\n")
    clock = Clock()
    meter = rapl.build(MeterSpec("rapl", {"root": str(root)}), clock=clock)
    meter.begin()
    (p0 / "energy_uj").write_text("3000000\n")
    clock.t = 1.0
    r = meter.end()
    assert r.joules["package-0"] == pytest.approx(5.0)
    assert r.info["wrapped"] == ["package-0"]


def test_a_counter_reset_read_as_a_wrap_is_implausible_not_a_result(tree):
    root, p0, _ = tree
    (p0 / "energy_uj").write_text("50000000\n")
    clock = Clock()
    meter = rapl.build(MeterSpec("rapl", {"root": str(root)}), clock=clock)
    meter.begin()
    (p0 / "energy_uj").write_text("1000\n")  # reset to near zero: looks like a wrap of ~262 kJ
    clock.t = 1.0
    r = meter.end()
    assert not r.valid
    assert any("package-0: implausible" in p and "counter was probably reset" in p for p in r.problems)


def test_bad_max_watts_and_unknown_options(tree):
    for bad in ("x", 0, float("nan")):
        with pytest.raises(ConfigError, match="max_watts must be a"):
            rapl.build(MeterSpec("rapl", {"root": str(tree[0]), "max_watts": bad}))
    with pytest.raises(ConfigError, match="unknown rapl meter option.*'window'"):
        rapl.build(MeterSpec("rapl", {"root": str(tree[0]), "window": 2}))


def test_delta_uj_without_a_range_is_unknown():
    assert rapl.delta_uj(10, 4, 0) is None
    assert rapl.delta_uj(10, 4, 100) == 94


def test_zero_delta_is_invalid(tree):
    root, _, p1 = tree
    meter = rapl.build(MeterSpec("rapl", {"root": str(root)}))
    meter.begin()
    (p1 / "energy_uj").write_text("5000001\n")
    r = meter.end()
    assert not r.valid and "package-0: zero energy" in r.problems[0]


def test_permission_error_explains_the_fix(tree, monkeypatch):
    root, p0, _ = tree
    denied = str(p0 / "energy_uj")

    def guarded_open(path, *args, **kwargs):
        # chmod does not stop root (CI may run as root): deny like the kernel does for non-root
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(rapl, "open", guarded_open, raising=False)
    with pytest.raises(MeterUnavailable) as exc:
        rapl.build(MeterSpec("rapl", {"root": str(root)}))
    msg = str(exc.value)
    assert "intel-rapl:0/energy_uj: permission denied" in msg
    assert "PLATYPUS" in msg and "chmod" in msg and "root" in msg
    ok, reason = rapl.probe(str(root))
    assert not ok and "PLATYPUS" in reason


def test_no_zones_is_explained(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    with pytest.raises(MeterUnavailable, match="no RAPL package zones"):
        rapl.build(MeterSpec("rapl", {"root": str(tmp_path)}))


def test_no_powercap_tree_is_explained(tmp_path):
    with pytest.raises(MeterUnavailable, match="no powercap tree"):
        rapl.build(MeterSpec("rapl", {"root": str(tmp_path / "missing")}))


def test_probe_ok(tree):
    ok, reason = rapl.probe(str(tree[0]))
    assert ok and "2 CPU package zone(s)" in reason


def test_bad_min_window(tree):
    with pytest.raises(ConfigError, match="min_window_s must be a number"):
        rapl.build(MeterSpec("rapl", {"root": str(tree[0]), "min_window_s": "x"}))
    for bad in (float("nan"), float("inf"), -0.5):  # a NaN window never closes: 10,000 reps a round
        with pytest.raises(ConfigError, match="min_window_s must be a finite non-negative number"):
            rapl.build(MeterSpec("rapl", {"root": str(tree[0]), "min_window_s": bad}))


def test_end_without_begin(tree):
    meter = rapl.build(MeterSpec("rapl", {"root": str(tree[0])}))
    with pytest.raises(RuntimeError, match="without begin"):
        meter.end()


def test_the_cpu_model_keys_the_baseline_fingerprint(tree, monkeypatch):
    """A rapl baseline recorded on one CPU must never be used on another (it reports no GPU)."""
    from pytest_joules.store.baselines import BaselineStore
    from pytest_joules.store.fingerprint import fingerprint

    meter = rapl.build(MeterSpec("rapl", {"root": str(tree[0])}))
    engine = {"kind": "hf", "model": "tiny-llama", "dtype": "fp32", "version": "t"}
    prints = {}
    for cpu in ("Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC 9654 96-Core Processor"):
        monkeypatch.setattr(rapl, "cpu_model", lambda cpu=cpu: cpu)
        prints[cpu] = fingerprint(engine, meter.device_info(), False)
    xeon, epyc = prints.values()
    assert xeon != epyc and xeon["device"]["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    store = BaselineStore(tree[0] / "baselines")
    assert store.path_for(xeon).parent.name == "intel-r-xeon-r-platinum-8480"
