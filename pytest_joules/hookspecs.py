"""Extension points. Another package adds an engine or a meter by exposing a module with these
hooks under the ``pytest_joules`` entry-point group::

    [project.entry-points.pytest_joules]
    vllm = "my_package.joules_vllm"

    # my_package/joules_vllm.py
    from pytest_joules.hookspecs import hookimpl

    @hookimpl
    def joules_engines():
        return {"vllm": create_vllm_engine}   # factory(spec: EngineSpec) -> Engine
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "pytest_joules"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def joules_engines() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(spec: EngineSpec) -> Engine``.

    Factories should import their heavy dependencies inside the call, not at module import,
    so listing engines stays cheap.
    """
    raise NotImplementedError  # a hook specification: pluggy calls the implementations, never this


@hookspec
def joules_meters() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(spec: MeterSpec, engine: Engine) -> Meter``."""
    raise NotImplementedError  # a hook specification: pluggy calls the implementations, never this
