"""The engines and meters that ship with pytest-joules, registered like any third-party ones.

Each factory imports its module only when called, so listing names costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .hookspecs import hookimpl


def _lazy(module: str, attr: str = "create") -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    factory.__qualname__ = f"{module}.{attr}"
    return factory


@hookimpl
def joules_engines() -> dict[str, Callable[..., Any]]:
    return {
        "sim": _lazy("pytest_joules.engines.sim"),
        "hf": _lazy("pytest_joules.engines.hf"),
        "trtllm": _lazy("pytest_joules.engines.trtllm"),
        "vllm": _lazy("pytest_joules.engines.vllm"),
        "openai": _lazy("pytest_joules.engines.openai"),
    }


@hookimpl
def joules_meters() -> dict[str, Callable[..., Any]]:
    return {
        "sim": _lazy("pytest_joules.meters.sim"),
        "nvml": _lazy("pytest_joules.meters.nvml"),
        "rapl": _lazy("pytest_joules.meters.rapl"),
        "none": _lazy("pytest_joules.meters.none"),
        "dcgm": _lazy("pytest_joules.meters.dcgm"),
        "prometheus": _lazy("pytest_joules.meters.prometheus"),
    }
