"""The `sim` engine: runs workloads on the simulated device (pytest_joules.sim).

Its numbers come from physics (docs/simulator.md), never from the paper's fitted formula, so
fitting that formula to the sim is a real test. Every report of it says SIMULATED.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .workload import EngineRun, Workload
from .base import DeviceRef, EngineSpec, reject_unknown_options

DEFAULT_MODEL = "Llama-3.1-8B"
DEFAULT_GPU = "H100-SXM"
#: dtypes the sim models: 2-byte weights, KV cache and activations on BF16 tensor cores
DTYPES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "auto": "bf16"}
OPTIONS = ("runtime", "noise", "slowdown", "seed", "tp", "host_ms", "host_seq_us")


def _number(options: Mapping[str, Any], key: str, default: float, kind: type) -> Any:
    value = options.get(key, default)
    if isinstance(value, bool):
        raise ConfigError(f"sim engine option {key!r} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"sim engine option {key!r} must be a number, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ConfigError(f"sim engine option {key!r} must be an integer, got {value!r}")
    return number


def probe() -> tuple[bool, str]:
    """For `joules doctor`."""
    return True, "the SIMULATED H100 (a physical model); always available"


class SimEngine:
    kind = "sim"
    simulated = True
    default_meter = "sim"

    def __init__(self, model: str, gpu: str, dtype: str, slowdown: float, seed: int,
                 runtime: str = "graphs", noise: float = 1.0, tp: int = 1, host: dict[str, float] | None = None):
        from ..sim.architectures import get_architecture
        from ..sim.device import SimDevice
        from ..sim.gpus import get_gpu

        self.arch = get_architecture(model)
        self.gpu = get_gpu(gpu)
        self.dtype = dtype
        #: host_ms / host_seq_us when given: another serving stack's host time (part of the identity)
        self.host = dict(host or {})
        self.sim_device = SimDevice(self.arch, self.gpu, dtype_bytes=2, slowdown=slowdown, seed=seed,
                                    runtime=runtime, noise=noise, tp=tp,
                                    host_s=_scaled(self.host, "host_ms", 1e-3),
                                    host_seq_s=_scaled(self.host, "host_seq_us", 1e-6))
        self.max_positions: int | None = self.arch.max_positions
        #: in-flight batching serves requests as they arrive; the eager runtime runs static batches
        self.serves_over_time = not self.sim_device.runtime.static_batching
        self.over_time_refusal = "runtime=eager runs static batches like transformers' generate"
        self._prompt_lengths: dict[tuple, list[int]] = {}

    def identity(self) -> dict[str, str]:
        from ..sim.device import SIM_VERSION

        # the runtime and the host's time change the energy (another engine); the noise and seed do not
        out = {"kind": self.kind, "model": self.arch.name, "dtype": self.dtype, "version": SIM_VERSION,
               "runtime": self.sim_device.runtime.name}
        out.update({k: f"{v:g}" for k, v in sorted(self.host.items())})
        return out

    def _input_lengths(self, workload: Workload) -> list[int]:
        """Each request's prompt length; text prompts are cut with the sim's tokenizer rule
        (engines/prompt_text.py: one token per 4 characters) to prove they can be."""
        if workload.prompts is None:
            return [n for n, _ in workload.lengths()]
        key = (workload.prompts, workload.mix, workload.n_in, workload.requests)
        if key not in self._prompt_lengths:
            from .prompt_text import sim_encode, token_prompts

            ids = token_prompts(workload.prompts, [n for n, _ in workload.lengths()], sim_encode)
            self._prompt_lengths = {key: [len(p) for p in ids]}
        return self._prompt_lengths[key]

    def run(self, workload: Workload) -> EngineRun:
        inputs = self._input_lengths(workload)
        done = self.sim_device.run(workload)
        return EngineRun(
            input_tokens=inputs,
            output_tokens=[m for _, m in workload.lengths()],
            seconds=done.seconds,
            phases=done.phases,
            info={**done.info, "joules": done.joules, "simulated": True},
            ttft_s=done.ttft_s,
            tpot_s=done.tpot_s,
        )

    def begin_measurement(self, name: str) -> None:
        """The measurement path names each measurement: the simulated device draws its noise per
        name, so selecting tests (or reordering them) does not change a test's numbers."""
        self.sim_device.label(name)

    def sync(self) -> None:
        """Nothing is in flight on a simulated device: every run finishes before it returns."""

    def devices(self) -> list[DeviceRef]:
        return [DeviceRef(index=i, uuid=None, pci_bus_id=None, name=f"SIMULATED {self.gpu.name}")
                for i in range(self.sim_device.tp)]

    def close(self) -> None:
        """The simulated device holds no resources."""


def _scaled(options: Mapping[str, float], key: str, unit: float) -> float | None:
    return options[key] * unit if key in options else None


def create(spec: EngineSpec) -> SimEngine:
    options = dict(spec.options or {})
    reject_unknown_options("sim", options, OPTIONS)
    from ..sim.device import MAX_NOISE, MAX_SLOWDOWN

    slowdown = _number(options, "slowdown", 1.0, float)
    if not 0 < slowdown <= MAX_SLOWDOWN:
        raise ConfigError(f"sim slowdown must be a positive number of at most {MAX_SLOWDOWN:g} (1.0 = normal, "
                          f"1.1 = 10% slower), got {slowdown!r}")
    seed = _number(options, "seed", 0, int)
    if seed < 0:
        raise ConfigError(f"sim seed must be a non-negative integer, got {seed!r}")
    noise = _number(options, "noise", 1.0, float)
    if not 0 <= noise <= MAX_NOISE:
        raise ConfigError(f"sim noise must be a number from 0 to {MAX_NOISE:g} (0 = exact, 1 = realistic, the "
                          f"default), got {noise!r}")
    tp = _number(options, "tp", 1, int)
    if not 1 <= tp <= 64:
        raise ConfigError(f"sim tp (GPUs sharing the model by tensor parallelism) must be 1 to 64, got {tp!r}")
    host: dict[str, float] = {}
    for key in ("host_ms", "host_seq_us"):
        if key in options:
            host[key] = _number(options, key, 0.0, float)
            if not 0 <= host[key] < 1e6:
                raise ConfigError(f"sim {key} (the host's time per engine step) must be a non-negative number, "
                                  f"got {options[key]!r}")
    from ..sim.runtime import get_runtime

    runtime = get_runtime(options.get("runtime", "graphs")).name
    dtype_name = (spec.dtype or "bf16").lower()
    if dtype_name not in DTYPES:
        raise ConfigError(f"the sim models 16-bit inference only; dtype {spec.dtype!r} is not one of bf16, fp16")
    return SimEngine(spec.model or DEFAULT_MODEL, spec.gpu or DEFAULT_GPU, DTYPES[dtype_name], slowdown, seed,
                     runtime=runtime, noise=noise, tp=tp, host=host)
