"""pytest hooks of pytest-joules (entry point `pytest11: joules`; `-p no:joules` turns it off).

Always on: the options, the marker's validation at collection, and the fixtures. Everything else
lives on the session object (`session.JoulesSession`) that `pytest_configure` registers only when
--joules is on, as pytest-xdist registers its DSession; with --joules off a small plugin marks the
energy tests skipped instead. Nothing heavy is imported here or in any hook that runs without
--joules: installing the plugin must not slow down anyone's ordinary pytest run.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import marker, options
from .fixtures import _joules_point, joules, joules_engine, joules_meter, trtllm_engine  # noqa: F401  (registers them)
from .fixtures import SKIP_REASON


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker.HELP)
    opts = options.from_config(config)
    if not opts.enabled:
        config.pluginmanager.register(SkipEnergyTests(), "joules-off")
        return
    from .. import registry
    from ..errors import ConfigError
    from . import session

    try:
        registry.check_names(opts.engine, opts.meter)
        _check_workers(config, opts.engine)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    worker = None
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})  # set by pytest-xdist in a worker
    if workerinput:
        worker = (workerinput["workerid"], int(workerinput["workercount"]))
        if not opts.seed_given and session.SEED_KEY in workerinput:
            # one drawn seed for the whole run, so the header's "--joules-seed N" repeats it under xdist too
            import dataclasses

            opts = dataclasses.replace(opts, seed=int(workerinput[session.SEED_KEY]))
    state = session.JoulesSession(opts, worker=worker, rootdir=config.rootpath)
    from .missing import Missing

    state.judging.missing = Missing.from_config(config, opts.key_base)  # the command that records a new test
    if session.SESSION_ID_KEY in workerinput:  # the controller's session names the baselines workers record
        state.judging.drift.session_id = str(workerinput[session.SESSION_ID_KEY])
    config.stash[session.STASH] = state
    config.pluginmanager.register(state, session.PLUGIN_NAME)


def _check_workers(config: pytest.Config, engine: str) -> None:
    """xdist controller: refuse `-n N` with fewer GPUs than workers for an engine known to need one.

    Other engines are checked in each worker once built (a plugin's engine may be simulated).
    """
    from . import xdist

    count = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or engine not in xdist.GPU_ENGINES or not isinstance(count, int) or count < 1:
        return
    if getattr(config.option, "dist", "load") == "no":
        return
    visible = xdist.visible_gpus()
    if visible:  # with no GPU at all the engine runs elsewhere (CPU) or skips
        xdist.check_count(count, visible)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    try:
        marker.generate(metafunc)
        return
    except marker.MarkerError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside `except`, so no chained traceback is shown


class SkipEnergyTests:
    """Registered when --joules is off: the energy tests are skipped, with how to run them."""

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # a skip mark, not pytest.skip() in a hook: pytest reports a mark's skip at the test, not here
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            if item.get_closest_marker(marker.NAME) is not None:
                item.add_marker(skip)
