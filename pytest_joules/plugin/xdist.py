"""pytest-xdist: one GPU per worker.

Two workers metering one GPU would each read the other's energy, so under `-n N` with a real GPU
engine each worker takes the GPU at its worker index in the visible list (the controller's
CUDA_VISIBLE_DEVICES if set, else every GPU NVML counts), and sets CUDA_VISIBLE_DEVICES to it
before its engine is built. More workers than GPUs is refused. The simulator needs no GPU: each
worker has its own simulated device.

Stdlib only at import time: CUDA_VISIBLE_DEVICES is read and NVML asked through the nvml meter's
`devices` module, imported when first needed (pynvml only by `nvml_gpu_count`, and only when
CUDA_VISIBLE_DEVICES is unset).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ..errors import ConfigError

ENV = "CUDA_VISIBLE_DEVICES"
#: engines known to need a real GPU before they are built (others are judged by `simulated`)
GPU_ENGINES = frozenset({"hf", "trtllm", "vllm"})


def worker_index(worker_id: str) -> int:
    """`gw3` -> 3 (xdist's worker ids)."""
    digits = worker_id[2:] if worker_id.startswith("gw") else ""
    if not digits.isdigit():
        raise ConfigError(f"unexpected pytest-xdist worker id {worker_id!r}; expected gw0, gw1, ...")
    return int(digits)


def parse_visible(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES "2,3,5,7" or "GPU-aa,GPU-bb" -> its entries (blank entries dropped)."""
    from ..meters.nvml.devices import parse_visible

    return parse_visible(value)


def nvml_gpu_count() -> int:
    """GPUs NVML sees; 0 when NVML (the driver or nvidia-ml-py) is not available."""
    from ..meters.nvml.devices import gpu_count

    return gpu_count()


def visible_gpus(environ: Mapping[str, str] | None = None, count: Callable[[], int] = nvml_gpu_count) -> list[str]:
    """The GPUs a worker may take: CUDA_VISIBLE_DEVICES' entries if it is set, else 0..count()-1."""
    from ..meters.nvml.devices import visible_devices

    visible = visible_devices(environ)
    if visible is not None:
        return visible
    return [str(i) for i in range(count())]


def too_many(workers: int, visible: Sequence[str]) -> str:
    gpus = f"{len(visible)} visible GPU" + ("" if len(visible) == 1 else "s")
    return (
        f"-n {workers} with {gpus}: energy tests need one GPU per worker; "
        f"use -n {max(len(visible), 1)} or fewer, or run energy tests without xdist"
    )


def check_count(workers: int, visible: Sequence[str]) -> None:
    """ConfigError when `workers` workers cannot each have a GPU of their own."""
    if workers > len(visible):
        raise ConfigError(too_many(workers, visible))


def assign(worker_id: str, workers: int, visible: Sequence[str]) -> str:
    """The CUDA_VISIBLE_DEVICES value for one worker: the visible GPU at its worker index."""
    check_count(workers, visible)
    index = worker_index(worker_id)
    if index >= workers:
        raise ConfigError(f"pytest-xdist worker {worker_id} of only {workers} workers")
    return visible[index]
