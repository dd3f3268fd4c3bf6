import pytest

from pytest_joules import registry
from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError
from pytest_joules.hookspecs import hookimpl
from pytest_joules.meters.base import MeterSpec

from .fakes import FakeEngine, FakeMeter


class FakePlugin:
    @hookimpl
    def joules_engines(self):
        return {"fake": lambda spec: FakeEngine()}

    @hookimpl
    def joules_meters(self):
        return {"fake": lambda spec, engine: FakeMeter(engine)}


@pytest.fixture
def fake_plugin():
    plugin = FakePlugin()
    registry.register(plugin)
    yield plugin
    registry.unregister(plugin)


def test_builtins_are_listed_without_importing_them():
    assert {"sim", "hf", "trtllm"} <= set(registry.engine_factories())
    assert {"sim", "nvml", "rapl", "none"} <= set(registry.meter_factories())


def test_a_registered_plugin_adds_engines_and_meters(fake_plugin):
    engine = registry.make_engine(EngineSpec(name="fake"))
    meter = registry.make_meter(MeterSpec(name="fake"), engine)
    assert isinstance(engine, FakeEngine) and meter.engine is engine
    registry.check_names("fake", "fake")


def test_unknown_names_list_the_known_ones(fake_plugin):
    with pytest.raises(ConfigError, match=r"unknown engine 'tgi' \(--joules-engine\); known engines: fake, hf, openai, sim, "
                       r"trtllm, vllm"):
        registry.make_engine(EngineSpec(name="tgi"))
    with pytest.raises(ConfigError, match=r"unknown meter 'ipmi' \(--joules-meter\); known meters: dcgm, fake, none, nvml, prometheus, rapl, sim"):
        registry.check_names(None, "ipmi")


def test_unregistering_removes_them(fake_plugin):
    registry.unregister(fake_plugin)
    assert "fake" not in registry.engine_factories()
