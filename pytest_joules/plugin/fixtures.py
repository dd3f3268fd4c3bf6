"""The fixtures: `joules` (per test), `joules_engine`, `joules_meter`, `trtllm_engine` (per session).

Registered by the plugin; their bodies import the measurement code only when a test uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import pytest

from . import marker as _marker

if TYPE_CHECKING:
    from ..measure.measurement import Measurement
    from .session import JoulesSession

SKIP_REASON = "energy test: run with `pytest --joules` (add --joules-engine trtllm|hf to measure a real GPU)"


def _session(config: pytest.Config) -> JoulesSession:
    from . import session

    state = session.get(config)
    if state is None or not state.options.enabled:
        pytest.skip(SKIP_REASON)
    return state


class Joules:
    """The `joules` fixture: `joules()` / `joules.measure(**overrides)` measures the test's workload.

    Overrides: n_in, n_out, requests, max_batch_size, rounds, warmup, tolerance, model_tolerance,
    mix, rate, concurrency, prompts, and name (the key of a second measurement within one test;
    default "#2", "#3", ...).
    """

    def __init__(self, request: pytest.FixtureRequest, state: JoulesSession, spec: _marker.EnergySpec | None, point: tuple[int, int] | None) -> None:
        self._request = request
        self._state = state
        self._spec = spec
        self._point = point
        #: every Measurement this test took, in order
        self.measurements: list[Measurement] = []
        #: whether the test called joules() at all (a call that failed still counts)
        self.called = False
        #: the keys this test's measurements took: a second one with a key would overwrite the first
        self._keys: set[str] = set()

    def __call__(self, **overrides: Any) -> Measurement:
        __tracebackhide__ = True  # a skip's location is the test's line, not this one
        return self.measure(**overrides)

    def workload(self, **overrides: Any) -> Any:
        from ..errors import ConfigError
        from ..engines.workload import Workload

        spec = self._spec
        nodeid = self._request.node.nodeid
        if "mix" in overrides or (spec is not None and spec.mix is not None and not {"n_in", "n_out"} & set(overrides)):
            return self._mix_workload(overrides)
        n_in, n_out = self._point if self._point else (None, None)
        values = {
            "n_in": overrides.pop("n_in", n_in),
            "n_out": overrides.pop("n_out", n_out),
            "requests": overrides.pop("requests", spec.requests if spec else 1),
            "max_batch_size": overrides.pop("max_batch_size", spec.max_batch_size if spec else None),
        }
        if values["n_in"] is None or values["n_out"] is None:
            pytest.fail(
                f"{nodeid}: no workload: mark the test @pytest.mark.energy(n_in=..., n_out=...) "
                "or call joules(n_in=..., n_out=...)",
                pytrace=False,
            )
        traffic = {k: overrides.pop(k, getattr(spec, k, None)) for k in ("arrival", "prompts")}
        try:
            return Workload(seed=self._state.options.seed, **values, **traffic)
        except ConfigError as exc:
            problem = str(exc)
        pytest.fail(f"{nodeid}: {problem}", pytrace=False)  # outside `except`: no chained traceback

    def _mix_workload(self, overrides: dict[str, Any]) -> Any:
        """A workload of a length mix: the marker's, or joules(mix=...)'s (engines/mix.py)."""
        from ..engines.mix import DEFAULT_REQUESTS
        from ..engines.workload import Workload
        from ..errors import ConfigError

        spec = self._spec
        mix = overrides.pop("mix", spec.mix if spec else None)
        given_mix = spec is not None and spec.mix is not None
        requests = overrides.pop("requests", spec.requests if given_mix and spec else DEFAULT_REQUESTS)
        try:
            return Workload.of_mix(mix, requests, seed=self._state.options.seed,
                                   max_batch_size=overrides.pop("max_batch_size", spec.max_batch_size if spec else None),
                                   arrival=overrides.pop("arrival", spec.arrival if spec else None),
                                   prompts=overrides.pop("prompts", spec.prompts if spec else None))
        except ConfigError as exc:
            problem = str(exc)
        pytest.fail(f"{self._request.node.nodeid}: {problem}", pytrace=False)

    def measure(self, **overrides: Any) -> Measurement:
        from ..store.record import ResultRecord
        from ..errors import ConfigError, EngineUnavailable, InvalidMeasurement, WorkloadMismatch
        from ..measure.measurement import DRY_RUN
        from ..measure.path import measure

        self.called = True
        state, spec, opts = self._state, self._spec, self._state.options
        known = {"n_in", "n_out", "requests", "max_batch_size", "rounds", "warmup", "tolerance", "model_tolerance", "name",
                 "mix", "rate", "concurrency", "prompts"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"joules() got unexpected argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        nodeid = self._request.node.nodeid
        problem = None
        try:
            overrides = _marker.parse_overrides(nodeid, overrides, base=self._request.node.path.parent)
        except _marker.MarkerError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        name = overrides.pop("name", None)
        rounds = overrides.pop("rounds", None) or (spec.rounds if spec and spec.rounds else opts.rounds)
        warmup = overrides.pop("warmup", None)
        tolerance = overrides.pop("tolerance", spec.tolerance if spec else None)
        model_tolerance = overrides.pop("model_tolerance", spec.model_tolerance if spec else None)
        workload = self.workload(**overrides)
        engine, meter = state.devices.get()
        self._check_fits(workload, engine)
        base = state.test_key(self._request.node)  # the node id, or one independent of the rootdir
        key = base
        if name:
            key = f"{base}::{name}"
        elif self._keys:
            key = f"{base}::#{len(self._keys) + 1}"
        label = key[len(base) + 2:]  # "" for the test's first measurement
        if key in self._keys:
            what = f"name={name!r}" if name else f"the automatic name {label!r}"
            pytest.fail(f"{nodeid}: joules({what}) measures a second time under a key this test already "
                        "used; its baseline would overwrite the first: give each measurement its own name",
                        pytrace=False)
        self._keys.add(key)
        rule = state.judging.rounds_rule(key, workload, tolerance) if rounds == "auto" else None
        problem = None
        try:
            fixed = rounds if isinstance(rounds, int) else 3  # `auto`: the rule decides, from at least 3
            m = measure(engine, meter, workload, rounds=fixed, rule=rule,
                        warmup=opts.warmup if warmup is None else warmup, name=key, max_seconds=opts.max_seconds)
        # ConfigError: a limit only the run checks; EngineUnavailable: an engine's prepare() failed
        except (WorkloadMismatch, InvalidMeasurement, ConfigError, EngineUnavailable) as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(f"{nodeid}: {problem}", pytrace=False)
        judged = state.judging.judge(m, key, tolerance, model_tolerance, test=base)
        failures = judged.failures
        state.recording.add(ResultRecord.from_measurement(
            m, **judged.record_fields(), nodeid=nodeid, test=self._request.node.name, label=label))
        self._junit_properties(m, label)
        self.measurements.append(m)
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        if m.dry_run:
            # the token counts were checked; the test's own assertions would only meet None
            __tracebackhide__ = True  # pytest reports the skip at the test's joules() call
            pytest.skip(f"{DRY_RUN} (meter {m.meter!r}): token counts checked ({workload.label()}, "
                        f"{workload.requests} request(s)); the test's own assertions were not run")
        return m

    def _junit_properties(self, m: Measurement, label: str) -> None:
        """Per-test <property> elements for --junitxml (also shipped from xdist workers in reports)."""
        from ..report.exporters import JUNIT_PREFIX, junit_properties

        for name, value in junit_properties(m):
            if label:  # a second measurement of the test: joules_quarter-length_j_per_out_token
                name = f"{JUNIT_PREFIX}{label}_{name[len(JUNIT_PREFIX):]}"
            self._request.node.user_properties.append((name, value))

    def _check_fits(self, workload: Any, engine: Any) -> None:
        from ..engines.mix import check_serves
        from ..errors import ConfigError

        try:
            workload.check_positions(engine.max_positions, engine.kind)
            check_serves(engine, workload)
            return
        except ConfigError as exc:
            problem = str(exc)
        pytest.fail(f"{self._request.node.nodeid}: {workload.label()}: {problem}", pytrace=False)


@pytest.fixture(name=_marker.POINT_FIXTURE)
def _joules_point(request: pytest.FixtureRequest) -> tuple[int, int] | None:
    """The (n_in, n_out) of one grid item (parametrized by the energy marker); None otherwise."""
    return getattr(request, "param", None)


@pytest.fixture
def joules(request: pytest.FixtureRequest, _joules_point: tuple[int, int] | None) -> Iterator[Joules]:
    """Measure this test's workload: `m = joules()` returns a Measurement (see `Joules`)."""
    state = _session(request.config)
    mark = request.node.get_closest_marker(_marker.NAME)
    problem = None
    try:
        _marker.check_single(request.node, request.node.nodeid)  # pytest.param(marks=...) too
    except _marker.MarkerError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    spec = _marker.parse(mark, request.node.nodeid, base=request.node.path.parent) if mark is not None else None
    point = _marker.point_of(spec, _joules_point) if spec else None
    handle = Joules(request, state, spec, point)
    if point is not None or (spec is not None and spec.mix is not None):
        # Known at setup: a workload the engine cannot hold is an error of this test's setup.
        engine, _ = state.devices.get()
        handle._check_fits(handle.workload(), engine)
    yield handle
    if spec is not None and not handle.called:
        # A marked test that never measured passes with no energy figure at all: say so.
        request.node.warn(  # located at the test, not at this line of the plugin
            pytest.PytestWarning(
                f"{request.node.nodeid} is marked @pytest.mark.energy but never called joules(): "
                "nothing was measured or compared"
            )
        )


@pytest.fixture(scope="session")
def joules_engine(request: pytest.FixtureRequest) -> Any:
    """The engine this run is configured for (--joules-engine; the simulated H100 by default)."""
    return _session(request.config).devices.get()[0]


@pytest.fixture(scope="session")
def joules_meter(request: pytest.FixtureRequest) -> Any:
    """The energy meter bound to `joules_engine` (--joules-meter; the engine's default)."""
    return _session(request.config).devices.get()[1]


@pytest.fixture(scope="session")
def trtllm_engine(request: pytest.FixtureRequest) -> Any:
    """A TensorRT-LLM engine for --joules-model, loaded once; skips with the reason when unavailable."""
    from .. import registry
    from ..engines.base import EngineSpec
    from ..errors import ConfigError, EngineUnavailable

    state = _session(request.config)
    if state.options.engine == "trtllm":
        yield state.devices.get()[0]
        return
    if not state.options.model:
        pytest.skip("trtllm_engine needs --joules-model (a TensorRT-LLM engine dir or a checkpoint dir)")
    engine, problem, broken = None, "", False
    try:
        engine = registry.make_engine(EngineSpec(name="trtllm", model=state.options.model))
    except (ModuleNotFoundError, EngineUnavailable) as exc:
        problem = f"the TensorRT-LLM engine is not available: {exc}"
    except ConfigError as exc:
        problem, broken = f"trtllm_engine: {exc}", True
    if engine is None:  # decided outside `except`, so no chained traceback is shown
        if broken:
            pytest.fail(problem, pytrace=False)
        _unavailable(state, problem)
    assert engine is not None  # _unavailable skipped or failed the test
    try:
        yield engine
    finally:
        engine.close()


def _unavailable(state: JoulesSession, message: str) -> None:
    if state.options.require_gpu:
        pytest.fail(f"--joules-require-gpu: {message}", pytrace=False)
    pytest.skip(message)
