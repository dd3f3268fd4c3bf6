"""A fake engine and meter for the plugin's pytester tests, registered from a conftest.

Energy per output token follows the paper's memory+FLOPs form exactly (plus a small seeded
jitter), so a model file with `THETA` predicts it; `slowdown` scales it, and the meter's power
limit comes from FAKE_POWER_LIMIT, so tests can change the device fingerprint. The model name
"unavailable" makes it raise EngineUnavailable, as a real engine does without its GPU; the model
name "real-gpu" makes it a non-simulated engine (for the xdist GPU assignment). FAKE_JITTER sets
the relative noise of each run (default 0.002); the meter takes the option min_window_s and
refuses any other, as real meters do. FAKE_SESSION_OFFSET (a fraction) makes every run of the
session that much dearer, as a drifting device does; FAKE_SLOW_N_IN=N:FACTOR makes the workloads
of n_in N that many times dearer (one test's own regression).
"""

from __future__ import annotations

import os
import random

from pytest_joules.engines.base import DeviceRef
from pytest_joules.errors import ConfigError, EngineUnavailable
from pytest_joules.hookspecs import hookimpl
from pytest_joules.meters.base import MeterReading
from pytest_joules.engines.workload import EngineRun

THETA = (0.02, 1e-6, 1e-5, 1e-4, 2e-5, 0.5)


def j_per_token(n_in: int, n_out: int) -> float:
    t0, t1, t2, t3, t4, t5 = THETA
    n, m = n_in, n_out
    return t0 + t1 * n * n / m + t2 * n + t3 * n / m + t4 * m + t5 / m


class FakeEngine:
    kind = "fake"
    simulated = True
    default_meter = "fake"
    max_positions = 4096

    def __init__(self, spec):
        if spec.model == "unavailable":
            raise EngineUnavailable("no CUDA device found")
        self.model = spec.model or "fake-1"
        if spec.model == "real-gpu":  # else the class attribute (which tests may patch)
            self.simulated = False
        self.jitter = float(os.environ.get("FAKE_JITTER", "0.002"))
        self.offset = 1 + float(os.environ.get("FAKE_SESSION_OFFSET", "0"))
        n_in, _, factor = os.environ.get("FAKE_SLOW_N_IN", "0:1").partition(":")
        self.slow_n_in, self.slow_factor = int(n_in), float(factor or 1)
        self.slowdown = float(spec.options.get("slowdown", 1.0))
        self._rng = random.Random(spec.options.get("seed", 0))
        self.clock_s = 0.0
        self.energy_j = 0.0

    def identity(self):
        return {"kind": "fake", "model": self.model, "dtype": "fp16", "version": "1.0"}

    def run(self, workload):
        if workload.n_in == 999:  # a limit only a run finds, as TensorRT-LLM's executor checks prompts
            raise ConfigError("prompt length 999 exceeds the engine's max_input_len 998; rebuild it with a larger one")
        tokens = workload.output_tokens
        joules = j_per_token(workload.n_in, workload.n_out) * tokens * self.slowdown
        joules *= (1 + self._rng.uniform(-self.jitter, self.jitter)) * self.offset
        if workload.n_in == self.slow_n_in:
            joules *= self.slow_factor
        seconds = joules / 500.0
        self.clock_s += seconds
        self.energy_j += joules
        return EngineRun([workload.n_in] * workload.requests, [workload.n_out] * workload.requests, seconds)

    def sync(self):
        pass

    def devices(self):
        return [DeviceRef(index=0, name="FakeGPU")]

    def close(self):
        pass


class FakeMeter:
    name = "fake"
    min_window_s = 0.0

    def __init__(self, spec, engine):
        unknown = sorted(set(spec.options) - {"min_window_s"})
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: min_window_s")
        self.min_window_s = float(spec.options.get("min_window_s", 0.0))
        self.engine = engine
        self._start = None

    def begin(self):
        self._start = (self.engine.clock_s, self.engine.energy_j)

    def end(self):
        t0, e0 = self._start
        # the device's state (measure/state.py): FAKE_TEMPERATURE for every window; a test whose
        # name holds FAKE_THROTTLED (when set) runs throttled
        state = {"temperature_c": float(os.environ.get("FAKE_TEMPERATURE", "60")), "sm_clock_mhz": 1980,
                 "throttle_reasons": [], "throttled": [], "power_limit_w": 700.0}
        hot = os.environ.get("FAKE_THROTTLED")
        if hot and hot in os.environ.get("PYTEST_CURRENT_TEST", ""):
            state.update(throttle_reasons=["hw_thermal_slowdown"], throttled=["hw_thermal_slowdown"], sm_clock_mhz=1200)
        return MeterReading({"fake0": self.engine.energy_j - e0}, self.engine.clock_s - t0, info={"state": state})

    def device_info(self):
        return {"gpu": "FakeGPU 80GB", "power_limit_w": float(os.environ.get("FAKE_POWER_LIMIT", "700")),
                "driver": "999.1", "simulated": True, "temperature_c": 40}

    def close(self):
        pass


class FakePlugin:
    @hookimpl
    def joules_engines(self):
        return {"fake": FakeEngine}

    @hookimpl
    def joules_meters(self):
        return {"fake": FakeMeter}


PLUGIN = FakePlugin()


CONFTEST = """
from pytest_joules import registry
from tests.plugin_fake import PLUGIN

registry.register(PLUGIN, name="plugin-fake")
"""


def preload() -> None:
    """Import here what the plugin imports lazily: in-process pytester runs drop the modules an
    inner run imported, and numpy cannot be imported twice in one process."""
    import numpy  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.stats  # noqa: F401

    import pytest_joules.models.analytical  # noqa: F401
    import pytest_joules.report.summary  # noqa: F401


# at import (collection), before any pytester snapshot of sys.modules is taken
preload()


#: where the fake's baselines go (device fakegpu-80gb, simulated; engine fake, model fake-1)
BASELINE = "baselines/fakegpu-80gb-simulated/fake-fake-1-fp16.json"

#: a plain test and a two-point grid: the suite most plugin tests run
TWO_TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    joules()

@pytest.mark.energy(n_in=[256, 512], n_out=32)
def test_grid(joules):
    joules()
"""


def project(pytester, monkeypatch, **ini: str):
    """A pytester project whose energy tests run on the fake engine (ini keys can override)."""
    from pathlib import Path

    from functools import lru_cache

    from pytest_joules import registry

    # a fresh plugin manager for this test: the fake registered by the inner runs' conftest
    # must not outlive the test (other test modules list the registered engines)
    monkeypatch.setattr(registry, "plugin_manager", lru_cache(maxsize=1)(registry.plugin_manager.__wrapped__))
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", root)  # subprocess runs import tests.plugin_fake too
    monkeypatch.syspath_prepend(root)
    # what the fake and the plugin read from the environment: a test sets them itself
    # CI: a test without a baseline fails under CI (the plugin's default there); these tests say
    # which they mean by setting it themselves
    for name in ("FAKE_POWER_LIMIT", "FAKE_JITTER", "FAKE_SESSION_OFFSET", "FAKE_SLOW_N_IN", "GITHUB_STEP_SUMMARY", "CI",
                 "FAKE_TEMPERATURE", "FAKE_THROTTLED"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST)
    # other plugins installed here cost time in every inner run and are not under test
    # joules_seed: without one each run draws a new seed (reruns differ, like a GPU's); these
    # tests compare exact figures between runs, so they fix it (test_plugin_seed.py covers the rest)
    keys = {"joules_engine": "fake", "joules_seed": "0", "addopts": "-p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                                      "-W ignore::pytest.PytestAssertRewriteWarning", **ini}
    pytester.makeini("[pytest]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return pytester
