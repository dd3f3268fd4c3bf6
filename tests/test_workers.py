"""One GPU per pytest-xdist worker: the assignment (pure) and the plugin under `-n 2`."""

import json
import os

import pytest

from pytest_joules.plugin import xdist as workers
from pytest_joules.errors import ConfigError

from .plugin_fake import project


def test_each_worker_takes_the_visible_gpu_at_its_index():
    visible = workers.parse_visible("2,3,5,7")
    assert [workers.assign(f"gw{i}", 4, visible) for i in range(4)] == ["2", "3", "5", "7"]
    assert workers.assign("gw3", 4, visible) == "7"
    assert workers.assign("gw1", 2, visible) == "3"  # fewer workers than GPUs is fine


def test_uuid_lists_are_handed_out_whole():
    visible = workers.parse_visible(" GPU-1a2b3c4d-0000-1111-2222-333344445555 , MIG-5f6e/1/0 ,")
    assert visible == ["GPU-1a2b3c4d-0000-1111-2222-333344445555", "MIG-5f6e/1/0"]
    assert workers.assign("gw1", 2, visible) == "MIG-5f6e/1/0"


def test_more_workers_than_gpus_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as exc:
        workers.assign("gw0", 4, ["0", "1"])
    assert str(exc.value) == ("-n 4 with 2 visible GPUs: energy tests need one GPU per worker; "
                              "use -n 2 or fewer, or run energy tests without xdist")
    with pytest.raises(ConfigError, match="-n 2 with 0 visible GPUs: .*use -n 1 or fewer"):
        workers.check_count(2, [])


@pytest.mark.parametrize("worker_id", ["gw", "main", "gwx", "3"])
def test_a_strange_worker_id_is_an_error(worker_id):
    with pytest.raises(ConfigError, match="unexpected pytest-xdist worker id"):
        workers.assign(worker_id, 1, ["0"])


def test_a_worker_index_beyond_the_worker_count_is_an_error():
    with pytest.raises(ConfigError, match="worker gw2 of only 2 workers"):
        workers.assign("gw2", 2, ["0", "1", "2"])


def test_visible_gpus_come_from_the_environment_before_nvml():
    def no_nvml() -> int:
        raise AssertionError("NVML must not be asked when CUDA_VISIBLE_DEVICES is set")

    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "4,6"}, count=no_nvml) == ["4", "6"]
    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=no_nvml) == []  # set but empty: no GPU
    assert workers.visible_gpus({}, count=lambda: 3) == ["0", "1", "2"]
    assert workers.visible_gpus({}, count=lambda: 0) == []


def test_nvml_count_is_zero_without_a_driver(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("pynvml")

    def init():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    fake.nvmlInit = init
    fake.NVMLError = type("NVMLError", (Exception,), {})
    fake._nvmlGetFunctionPointer = None  # nvidia-ml-py, not the old fork: the count gets as far as nvmlInit
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert workers.nvml_gpu_count() == 0


# -- the plugin under xdist (worker processes: a few seconds) -----------------------------------
RECORDING = """
import os

import pytest

@pytest.mark.energy(n_in=[16, 32, 64], n_out=[8, 16])
def test_point(joules, request):
    joules()
    seen = {"worker": os.environ["PYTEST_XDIST_WORKER"], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    out = request.config.rootpath / "seen"
    out.mkdir(exist_ok=True)
    (out / (seen["worker"] + ".json")).write_text(json.dumps(seen))
"""


def _seen(proj):
    return {p.stem: json.loads(p.read_text())["gpu"] for p in (proj.path / "seen").glob("*.json")}


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_gpu="import json\n" + RECORDING)
    return p


@pytest.mark.slow
def test_each_worker_of_a_gpu_engine_sees_only_its_own_gpu(proj, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    result = proj.runpytest_subprocess("--joules", "--joules-model", "real-gpu", "-n", "2")
    result.assert_outcomes(passed=6)
    assert _seen(proj) == {"gw0": "5", "gw1": "7"}


@pytest.fixture
def fake_registry(monkeypatch):
    from functools import lru_cache

    from pytest_joules import registry

    from .plugin_fake import PLUGIN

    monkeypatch.setattr(registry, "plugin_manager", lru_cache(maxsize=1)(registry.plugin_manager.__wrapped__))
    registry.register(PLUGIN, name="plugin-fake")


def _worker_session(model, worker):
    from pytest_joules.plugin.options import JoulesOptions
    from pytest_joules.plugin.session import JoulesSession

    return JoulesSession(JoulesOptions(enabled=True, engine="fake", model=model), worker=worker).devices


def test_a_gpu_engine_with_more_workers_than_gpus_is_refused(fake_registry, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    state = _worker_session("real-gpu", ("gw1", 2))
    for _ in range(2):  # remembered: every later test fails the same way
        with pytest.raises(pytest.fail.Exception, match="-n 2 with 1 visible GPU: energy tests need one GPU per worker; "
                                                        "use -n 1 or fewer, or run energy tests without xdist"):
            state.get()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_simulated_engine_with_more_workers_than_gpus_is_allowed(fake_registry, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    engine, _ = _worker_session(None, ("gw1", 2)).get()
    assert engine.simulated and os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_the_gpu_is_pinned_before_the_engine_is_built(fake_registry, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb,GPU-cc")
    from .plugin_fake import FakeEngine

    seen = []
    build = FakeEngine.__init__

    def init(self, spec):
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])  # what a CUDA runtime would see at load
        build(self, spec)

    monkeypatch.setattr(FakeEngine, "__init__", init)
    _worker_session("real-gpu", ("gw2", 3)).get()
    assert seen == ["GPU-cc"]


def test_without_xdist_nothing_is_pinned(fake_registry, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    _worker_session("real-gpu", None).get()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"


def test_a_known_gpu_engine_is_refused_before_any_worker_starts(proj, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    result = proj.runpytest("--joules", "--joules-engine", "hf", "-n", "4")  # refused at configure: no worker starts
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*-n 4 with 2 visible GPUs: energy tests need one GPU per worker; "
                                 "use -n 2 or fewer, or run energy tests without xdist*"])


def _rapl_tree(root):
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


@pytest.mark.parametrize("worker, refused", [(("gw0", 2), True), (("gw0", 1), False), (None, False)])
def test_rapl_is_refused_when_several_workers_share_the_cpu_package(fake_registry, tmp_path, worker, refused):
    from pytest_joules.plugin.options import JoulesOptions
    from pytest_joules.plugin.session import JoulesSession

    options = JoulesOptions(enabled=True, engine="fake", meter="rapl",
                            meter_options={"root": str(_rapl_tree(tmp_path / "powercap"))})
    state = JoulesSession(options, worker=worker).devices
    if refused:
        with pytest.raises(pytest.fail.Exception, match="meter 'rapl' reads the whole CPU package: with 2 pytest-xdist "
                                                        "workers each would count the others' energy"):
            state.get()
    else:
        assert state.get()[1].name == "rapl"


@pytest.mark.slow
def test_workers_share_the_runs_drawn_seed(pytester, monkeypatch):
    """Without --joules-seed the controller draws one seed for the run and every worker uses it,
    so the header's `--joules-seed N` repeats the whole run under xdist too."""
    p = project(pytester, monkeypatch, joules_seed="")
    p.makepyfile(test_gpu="import json\n" + RECORDING)
    result = p.runpytest_subprocess("--joules", "-n", "2", "--joules-json", "out.json")
    result.assert_outcomes(passed=6)
    header = next(line for line in result.stdout.lines if "(random; --joules-seed" in line)
    seed = int(header.split("(random; --joules-seed ")[1].split(" ")[0])
    seeds = {r["seed"] for r in json.loads((p.path / "out.json").read_text())["results"]}
    assert seeds == {seed}
