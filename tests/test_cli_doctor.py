"""`joules doctor`: one line per engine, meter and GPU; --json; --require."""

from __future__ import annotations

import json
import sys
import types

import pytest

from pytest_joules import registry
from pytest_joules.cli import main
from pytest_joules.hookspecs import hookimpl
from pytest_joules.meters import nvml

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-abc", "mig": False,
        "power_limit_w": 700.0, "energy": "counter", "usable": True}
MIG = {"index": 1, "name": "NVIDIA A100", "uuid": "GPU-def", "mig": True, "power_limit_w": 400.0,
       "energy": "counter", "usable": False, "reason": "MIG enabled: NVML cannot measure MIG slices"}


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(nvml, "probe", lambda: (False, "NVML is not usable here: no driver", []))


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(nvml, "probe", lambda: (True, "1 of 2 GPU(s) can be metered", [H100, MIG]))


def doctor(capsys, *argv):
    rc = main(["doctor", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_engine_and_meter_has_one_line(capsys, no_gpu):
    rc, out, _ = doctor(capsys)
    assert rc == 0
    lines = out.splitlines()
    for name in list(registry.engine_factories()) + list(registry.meter_factories()):
        assert sum(1 for line in lines if line.split()[:1] == [name]) >= 1, name
    nvml_line = next(line for line in lines if line.split()[:1] == ["nvml"])
    assert "unusable" in nvml_line and "no driver" in nvml_line
    none_line = next(line for line in lines if line.split()[:1] == ["none"])
    assert "usable" in none_line and "unusable" not in none_line
    assert "GPUs (NVML):" in out and "(none)" in out


def test_gpus_are_listed_with_their_reasons(capsys, two_gpus):
    rc, out, _ = doctor(capsys)
    assert rc == 0
    assert "0: NVIDIA H100 80GB HBM3" in out and "GPU-abc, energy by counter, power limit 700 W" in out
    mig_line = next(line for line in out.splitlines() if "NVIDIA A100" in line)
    assert "unusable" in mig_line and "MIG" in mig_line


def test_json(capsys, two_gpus):
    rc, out, _ = doctor(capsys, "--json")
    doc = json.loads(out)
    by = {(c["kind"], c["name"]): c for c in doc["checks"]}
    assert by[("meter", "nvml")]["usable"] is True
    assert by[("meter", "none")]["usable"] is True
    assert by[("gpu", "1: NVIDIA A100")]["usable"] is False
    assert doc["required_unusable"] == [] and rc == 0


def test_require(capsys, no_gpu):
    assert doctor(capsys, "--require", "none")[0] == 0
    rc, out, _ = doctor(capsys, "--require", "nvml", "--require", "none")
    assert rc == 1 and "required but unusable: nvml" in out
    assert doctor(capsys, "--require", "gpu")[0] == 1


def test_require_gpu_with_a_gpu(capsys, two_gpus):
    assert doctor(capsys, "--require", "gpu", "--require", "nvml")[0] == 0


def test_require_unknown_name_is_one_error_line(capsys, no_gpu):
    rc, _, err = doctor(capsys, "--require", "tgi")
    assert rc == 2 and "no such engine or meter" in err and "known: hf" in err and "Traceback" not in err


def test_trtllm_installed_without_gpu_is_unusable(capsys, no_gpu, monkeypatch):
    from pytest_joules.engines import trtllm

    monkeypatch.setattr(trtllm, "probe", lambda: (True, "tensorrt-llm 1.2.1: engine dirs and checkpoints"))
    _, out, _ = doctor(capsys)
    line = next(line for line in out.splitlines() if line.split()[:1] == ["trtllm"])
    assert "unusable" in line and "no GPU is usable here" in line


def _factory_in(module_name):
    def factory(spec):
        raise AssertionError("the doctor must not build engines")

    factory.__module__ = module_name
    return factory


def test_third_party_engines_with_and_without_probes(capsys, no_gpu, monkeypatch):
    probed = types.ModuleType("joules_fake_probed")
    probed.probe = lambda: (False, "the server at localhost:8000 is down")
    broken = types.ModuleType("joules_fake_broken")

    def explode():
        raise RuntimeError("boom")

    broken.probe = explode
    monkeypatch.setitem(sys.modules, "joules_fake_probed", probed)
    monkeypatch.setitem(sys.modules, "joules_fake_broken", broken)
    factories = {"vllm": _factory_in("joules_fake_probed"), "broken": _factory_in("joules_fake_broken"),
                 "plain": _factory_in(__name__)}
    plugin = types.SimpleNamespace(joules_engines=hookimpl(lambda: factories))
    registry.register(plugin, name="joules-test-third-party")
    try:
        _, out, _ = doctor(capsys)
    finally:
        registry.unregister(plugin)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "unusable" in lines["vllm"] and "localhost:8000 is down" in lines["vllm"]
    assert "probe failed: RuntimeError: boom" in lines["broken"]
    assert "unknown" in lines["plain"] and "offers no probe" in lines["plain"]
