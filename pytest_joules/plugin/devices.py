"""The session's engine and meter: built once, at the first energy test, or why they cannot be.

A failure to build is remembered, so every later test skips (or, with --joules-require-gpu or a
configuration error, fails) the same way without loading a model again. Under pytest-xdist each
worker takes its own GPU before the engine is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from ..errors import ConfigError, EngineUnavailable, MeterUnavailable
from . import xdist
from .options import JoulesOptions

if TYPE_CHECKING:
    from ..engines.base import Engine, EngineSpec
    from ..meters.base import Meter


@dataclass
class Unavailable:
    """Why the engine or meter could not be built: skip each test, or fail it (--joules-require-gpu)."""

    message: str
    fail: bool


class _CannotBuild(Exception):
    def __init__(self, message: str, fail: bool) -> None:
        super().__init__(message)
        self.fail = fail


class Devices:
    """The engine and meter of one session (one per pytest-xdist worker)."""

    def __init__(self, options: JoulesOptions, worker: tuple[str, int] | None = None) -> None:
        self.options = options
        #: under pytest-xdist: (worker id, number of workers); None on the controller or without xdist
        self.worker = worker
        self._engine: Engine | None = None
        self._meter: Meter | None = None
        self._unavailable: Unavailable | None = None
        self._fingerprint: dict[str, Any] | None = None

    def engine_spec(self) -> EngineSpec:
        from ..engines.base import EngineSpec

        # options.from_config made seed and sim_slowdown agree with the engine options that name them
        opts: dict[str, Any] = {**self.options.engine_options, "seed": self.options.seed}
        if self.options.sim_slowdown is not None:
            opts["slowdown"] = self.options.sim_slowdown
        return EngineSpec(name=self.options.engine, model=self.options.model, gpu=self.options.gpu, options=opts)

    def get(self) -> tuple[Engine, Meter]:
        """The engine and meter, built at the first call; skips or fails the test when they can't be."""
        if self._unavailable is None and self._engine is None:
            try:
                self._engine, self._meter = self._build()
            except _CannotBuild as exc:
                self._unavailable = Unavailable(str(exc), exc.fail or self.options.require_gpu)
        if self._unavailable is not None:
            self._raise_unavailable()  # outside `except`: no chained traceback in the report
        assert self._engine is not None and self._meter is not None
        return self._engine, self._meter

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a baseline of this session is keyed by besides the test (store/fingerprint.py)."""
        if self._fingerprint is None:
            from ..store.fingerprint import fingerprint

            engine, meter = self.get()
            self._fingerprint = fingerprint(engine.identity(), meter.device_info(), engine.simulated)
        return self._fingerprint

    def close(self) -> None:
        for thing in (self._meter, self._engine):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing must not hide the session's results
                    pass
        self._engine = self._meter = None

    def _raise_unavailable(self) -> NoReturn:
        u = self._unavailable
        assert u is not None
        if u.fail:
            pytest.fail(u.message, pytrace=False)
        pytest.skip(u.message)

    def _build(self) -> tuple[Engine, Meter]:
        from .. import registry
        from ..meters.base import MeterSpec

        name = self.options.engine
        if self.options.sim_slowdown is not None and name in xdist.GPU_ENGINES:
            # never simulated: say so before loading a model (its create would only call 'slowdown' unknown)
            raise _CannotBuild(f"--joules-sim-slowdown only applies to simulated engines, not {name!r}", fail=True)
        shared = self._pin_gpu()
        try:
            engine = registry.make_engine(self.engine_spec())
        except (ModuleNotFoundError, EngineUnavailable) as exc:
            raise _CannotBuild(f"engine {name!r} is not available: {exc}", fail=False) from None
        except ConfigError as exc:
            raise _CannotBuild(f"engine {name!r}: {exc}", fail=True) from None
        try:
            if self.options.sim_slowdown is not None and not engine.simulated:
                raise _CannotBuild(f"--joules-sim-slowdown only applies to simulated engines, not {engine.kind!r}", fail=True)
            if shared and not engine.simulated:
                raise _CannotBuild(shared, fail=True)
            meter_name = self.options.meter or engine.default_meter
            try:
                meter = registry.make_meter(MeterSpec(name=meter_name, options=dict(self.options.meter_options)), engine)
            except (ModuleNotFoundError, MeterUnavailable) as exc:
                raise _CannotBuild(f"meter {meter_name!r} is not available: {exc}", fail=False) from None
            except ConfigError as exc:
                raise _CannotBuild(f"meter {meter_name!r}: {exc}", fail=True) from None
            if meter.name == "rapl" and self.worker is not None and self.worker[1] > 1:
                meter.close()
                raise _CannotBuild(
                    f"meter 'rapl' reads the whole CPU package: with {self.worker[1]} pytest-xdist workers "
                    "each would count the others' energy; run the energy tests without -n", fail=True)
            problem = self._not_a_gpu(engine, meter) if self.options.require_gpu else None
            if problem:
                meter.close()
                raise _CannotBuild(f"--joules-require-gpu: {problem}", fail=True)
        except _CannotBuild:
            engine.close()
            raise
        return engine, meter

    def _pin_gpu(self) -> str | None:
        """Under xdist, give this worker its own GPU (CUDA_VISIBLE_DEVICES) before the engine is built.

        Returns why workers would share a GPU when that can only be judged once the engine is
        built (an engine that may be simulated); raises _CannotBuild for the known GPU engines.
        """
        if self.worker is None or self.options.engine == "sim":
            return None
        visible = xdist.visible_gpus()
        if not visible:  # no GPU here at all: nothing to share (a CPU or simulated engine)
            return None
        worker_id, count = self.worker
        try:
            os.environ[xdist.ENV] = xdist.assign(worker_id, count, visible)
        except ConfigError as exc:
            if self.options.engine in xdist.GPU_ENGINES:
                raise _CannotBuild(str(exc), fail=True) from None
            return str(exc)
        return None

    @staticmethod
    def _not_a_gpu(engine: Engine, meter: Meter) -> str | None:
        if engine.simulated:
            return f"engine {engine.kind!r} is SIMULATED, not a real GPU"
        if not engine.devices() and not meter.device_info().get("gpu_count"):  # a server's GPUs: meter option devices=
            return f"engine {engine.kind!r} runs on no GPU"
        if meter.name in ("none", "rapl", "sim") or meter.device_info().get("simulated"):
            return f"meter {meter.name!r} does not read a GPU's energy"
        return None
