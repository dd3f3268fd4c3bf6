"""pytest hooks of pytest-joules (entry point `pytest11: joules`; `-p no:joules` turns it off).

Nothing heavy is imported here or in any hook that runs without --joules: installing the plugin
must not slow down anyone's ordinary pytest run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import marker, options
from .fixtures import _joules_point, joules, joules_engine, joules_meter, trtllm_engine  # noqa: F401  (registers them)
from .fixtures import DRY_RUN, SKIP_REASON

WORKER_KEY = "pytest_joules"
SEED_KEY = "pytest_joules_seed"


def _state(config: pytest.Config) -> Any:
    from . import session

    return session.get(config)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker.HELP)
    opts = options.from_config(config)
    if not opts.enabled:
        return
    from .. import registry
    from . import session
    from ..errors import ConfigError

    try:
        registry.check_names(opts.engine, opts.meter)
        _check_workers(config, opts.engine)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _is_worker(config) and not opts.seed_given and SEED_KEY in config.workerinput:
        # one drawn seed for the whole run, so the header's "--joules-seed N" repeats it under xdist too
        import dataclasses

        opts = dataclasses.replace(opts, seed=int(config.workerinput[SEED_KEY]))
    state = session.JoulesSession(opts)
    state.rootdir = config.rootpath
    if _is_worker(config):
        state.worker = (config.workerinput["workerid"], int(config.workerinput["workercount"]))
    config.stash[session.STASH] = state


def _check_workers(config: pytest.Config, engine: str) -> None:
    """xdist controller: refuse `-n N` with fewer GPUs than workers for an engine known to need one.

    Other engines are checked in each worker once built (a plugin's engine may be simulated).
    """
    from . import xdist as workers

    count = getattr(config.option, "numprocesses", None)
    if _is_worker(config) or engine not in workers.GPU_ENGINES or not isinstance(count, int) or count < 1:
        return
    if getattr(config.option, "dist", "load") == "no":
        return
    visible = workers.visible_gpus()
    if visible:  # with no GPU at all the engine runs elsewhere (CPU) or skips
        workers.check_count(count, visible)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = _state(config)
    if state is None:
        return None
    o = state.options
    engine = o.engine + (" (SIMULATED)" if o.engine == "sim" else "")
    model = f", model {o.model}" if o.model else ""
    update = ", updating baselines" if o.update_baselines else ""
    noisy = " (noisy verdicts fail)" if o.noisy_fails else ""
    noisy += " (tests without a baseline fail)" if o.new_fails else ""
    rounds = f"rounds {o.rounds}" + (f" (at most {o.max_seconds:g} s a test)" if o.rounds == "auto" else "")
    seed = f"seed {o.seed}" + ("" if o.seed_given else f" (random; --joules-seed {o.seed} repeats this run)")
    new = "" if state.store_existed else " (does not exist yet)"
    dry = f", {DRY_RUN} (meter none)" if o.meter == "none" else ""
    return (f"joules: engine {engine}{model}, tolerance {o.tolerance:.1%}{noisy}, {rounds}, {seed}, "
            f"baselines {o.baselines}{new}{update}{dry}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    try:
        marker.generate(metafunc)
        return
    except marker.MarkerError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside `except`, so no chained traceback is shown


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a skip mark, not pytest.skip() in a hook: pytest reports a mark's skip at the test, not here
    if _state(config) is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker(marker.NAME) is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the outcome after xfail and the like
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    state = _state(item.config) if call.when == "call" else None
    if state is not None and state.options.update_baselines:
        state.test_done(item.nodeid, passed=report.passed)  # a failing test's baselines are not saved
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if state is None:
        return
    state.flush_baselines()  # each process (an xdist worker too) writes what it recorded, once
    state.close()
    if _is_worker(session.config):
        # xdist: ship this worker's measurements to the controller (see pytest_testnodedown)
        payload = {"records": state.records, "model_path": state.model_path,
                   "replaced": state.replaced, "baseline_errors": state.baseline_errors}
        session.config.workeroutput[WORKER_KEY] = json.dumps(payload, default=str)
        return
    from ..errors import JoulesError

    if state.model_check() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    try:
        state.write_json()
    except JoulesError as exc:
        state.json_error = str(exc)
    state.write_exports()  # the controller only: workers returned above
    state.autosave()
    if (state.json_error or state.export_errors or state.baseline_errors) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand this run's seed to each worker (see pytest_configure)."""
    state = _state(node.config)
    if state is not None:
        node.workerinput[SEED_KEY] = state.options.seed


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist controller: keep the collection order, so the summary lists tests as a run without -n does."""
    state = _state(node.config)
    if state is not None and not state.collection_order:
        state.collection_order = {nodeid: i for i, nodeid in enumerate(ids)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect the measurements a worker took."""
    state = _state(node.config)
    data = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if state is None or not data:
        return
    payload = json.loads(data)
    state.records.extend(payload.get("records", []))
    state.records.sort(key=state.record_order)  # workers finish in any order; stable: a test's own stay in order
    state.model_path = state.model_path or payload.get("model_path")
    state.replaced += payload.get("replaced", [])
    state.baseline_errors += payload.get("baseline_errors", [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state is None:
        return
    from ..report.summary import write_summary

    write_summary(terminalreporter, state)
