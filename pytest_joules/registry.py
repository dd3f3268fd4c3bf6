"""Finds engines and meters: the built-ins plus whatever ``pytest_joules`` entry points add."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from . import builtin, hookspecs
from .errors import ConfigError

if TYPE_CHECKING:
    from .engines.base import Engine, EngineSpec
    from .meters.base import Meter, MeterSpec


@lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="pytest_joules.builtin")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def register(plugin: object, name: str | None = None) -> None:
    """Register an object or module with `joules_engines` / `joules_meters` hookimpls."""
    pm = plugin_manager()
    if not pm.is_registered(plugin):
        pm.register(plugin, name=name)


def unregister(plugin: object) -> None:
    pm = plugin_manager()
    if pm.is_registered(plugin):
        pm.unregister(plugin)


def _merge(results: list[dict[str, Callable[..., Any]]]) -> dict[str, Callable[..., Any]]:
    # pluggy calls later registrations first; let them override built-ins of the same name.
    merged: dict[str, Callable[..., Any]] = {}
    for mapping in reversed(results):
        merged.update(mapping or {})
    return merged


def engine_factories() -> dict[str, Callable[..., Any]]:
    return _merge(plugin_manager().hook.joules_engines())


def meter_factories() -> dict[str, Callable[..., Any]]:
    return _merge(plugin_manager().hook.joules_meters())


def _lookup(kind: str, name: str, factories: dict[str, Callable[..., Any]], option: str) -> Callable[..., Any]:
    try:
        return factories[name]
    except KeyError:
        known = ", ".join(sorted(factories)) or "none"
        raise ConfigError(f"unknown {kind} {name!r} ({option}); known {kind}s: {known}") from None


def make_engine(spec: EngineSpec) -> Engine:
    return _lookup("engine", spec.name, engine_factories(), "--joules-engine")(spec)


def make_meter(spec: MeterSpec, engine: Engine) -> Meter:
    return _lookup("meter", spec.name, meter_factories(), "--joules-meter")(spec, engine)


def check_names(engine: str | None, meter: str | None) -> None:
    """Validate names early (pytest_configure) without building anything."""
    if engine is not None:
        _lookup("engine", engine, engine_factories(), "--joules-engine")
    if meter is not None:
        _lookup("meter", meter, meter_factories(), "--joules-meter")
