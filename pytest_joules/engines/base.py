"""The engine protocol: what the measurement path needs from anything that generates tokens.

An engine is built by a factory registered through the `joules_engines` hook (see
`pytest_joules.hookspecs`): ``factory(spec: EngineSpec) -> Engine``. Building it may load a model,
so the plugin builds each engine once per session.

An engine may also offer ``prepare(workload) -> None``: one-time work for a workload's shapes
(compilation, CUDA-graph capture) that `measure` runs before the warm-up, outside any window. It
is optional, so it is not part of the `Engine` protocol that `isinstance` checks. So is
``begin_measurement(name) -> None``, called first with the measurement's name (a test's key): the
simulated device draws its noise per name.

Traffic (engines/mix.py, docs/mixes.md): a workload may be a length mix, `Workload.lengths()`
giving each request's (n_in, n_out), and `run` returns one count per request in that order. A
workload with `arrival` (rate= / concurrency=) needs an engine that sends requests over time: it
says so with the optional attribute ``serves_over_time = True`` (and may explain a refusal in
``over_time_refusal``); any other engine is refused such a workload before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from .. import values
from .workload import EngineRun, Workload


@dataclass(frozen=True)
class EngineSpec:
    """How the user configured the engine (from options, ini keys or `joules sweep`).

    `model` is an architecture name (sim, hf random weights) or a path (hf checkpoint, TRT-LLM
    engine dir). `gpu` names the simulated GPU for the sim. `options` carries engine-specific
    settings such as {"slowdown": 1.1, "seed": 0} for the sim.
    """

    name: str
    model: str | None = None
    gpu: str | None = None
    dtype: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceRef:
    """A GPU the engine runs on, as robustly identified as the engine can (NVML ignores
    CUDA_VISIBLE_DEVICES, so meters map by UUID or PCI bus id before index)."""

    index: int | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    name: str | None = None


@runtime_checkable
class Engine(Protocol):
    #: registered name, e.g. "sim", "hf", "trtllm"
    kind: str
    #: True only for the simulated device: every report then says SIMULATED
    simulated: bool
    #: name of the meter to use when the user names none ("sim", "nvml", "rapl", "none")
    default_meter: str
    #: the longest n_in + n_out one request may have, or None when unknown
    max_positions: int | None

    def identity(self) -> dict[str, str]:
        """kind, model, dtype, version: what a baseline is keyed by besides the device."""

    def run(self, workload: Workload) -> EngineRun:
        """Run the workload to completion and return what was actually done."""

    def sync(self) -> None:
        """Wait until all device work issued so far has finished (called at window edges)."""

    def devices(self) -> list[DeviceRef]:
        """The GPUs this engine uses; empty for CPU engines."""

    def close(self) -> None:
        """Release the model and device memory."""


def parse_engine_options(items: list[str] | None, option: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` strings (``--joules-engine-option slowdown=1.1``) -> the engine's options."""
    return values.key_values(items, option, example="slowdown=1.1")


def reject_unknown_options(engine: str, options: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """ConfigError naming every option `engine` does not take: a typo must not be ignored silently."""
    values.reject_unknown(f"{engine} engine", options, accepted, f"the {engine} engine")
