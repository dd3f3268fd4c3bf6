"""The nvml meter's factory: NVML opened, the engine's GPUs found and checked (MIG, an energy
counter or at least a power reading), their idle power measured when asked for, the meter built."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from ...errors import MeterUnavailable
from ..base import MeterSpec
from .conditions import lock_clocks
from .api import NOT_SUPPORTED, NvmlApi, NvmlCallError, open_api, quiet_shutdown
from .devices import own_pids, resolve_device, visible_devices
from .meter import NvmlMeter
from .options import MeteredGpu, NvmlOptions
from .server import check_server_gpus, server_pids, with_server
from .sampling import PowerSampler, integrate

if TYPE_CHECKING:
    from ...engines.base import Engine


def _probe_gpu(api: Any, handle: Any, how: str, opt: NvmlOptions) -> MeteredGpu:
    uuid = api.uuid(handle)
    name = api.name(handle)
    try:
        if api.mig_enabled(handle):
            raise MeterUnavailable(
                f"GPU {uuid} ({name}) has MIG enabled; NVML cannot measure the energy of MIG "
                "slices; disable MIG (nvidia-smi -mig 0) or run on a GPU without it"
            )
    except NvmlCallError:
        pass  # GPUs without MIG support report NotSupported
    try:
        limit_w: float | None = api.power_limit_mw(handle) / 1000.0
    except NvmlCallError:
        limit_w = None
    try:
        api.energy_mj(handle)
        counter = True
    except NvmlCallError as exc:
        if exc.code != NOT_SUPPORTED:
            raise MeterUnavailable(f"GPU {uuid} ({name}): cannot read the energy counter: {exc}") from None
        try:
            api.power_mw(handle)
        except NvmlCallError as exc2:
            raise MeterUnavailable(
                f"GPU {uuid} ({name}) has no energy counter and no power reading ({exc2}); "
                "the nvml meter cannot measure it"
            ) from None
        counter = False
    return MeteredGpu(label=uuid, handle=handle, name=name, how=how, power_limit_w=limit_w, counter=counter)


def _idle_watts(api: Any, gpu: MeteredGpu, seconds: float, interval: float) -> float:
    sampler = PowerSampler(lambda: api.power_mw(gpu.handle) / 1000.0, interval)
    sampler.start()
    time.sleep(seconds)
    samples = sampler.stop()
    span = samples[-1][0] - samples[0][0]
    return integrate(samples) / span if span > 0 else samples[-1][1]


def build(spec: MeterSpec, engine: Engine, api_factory: Callable[[], Any] = NvmlApi,
          env: dict[str, str] | None = None, pids: Callable[[], set[int]] = own_pids,
          clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> NvmlMeter:
    """`create` with its seams open: the NVML API, the environment, our PIDs, the clock and the
    sleep used while waiting for counter ticks."""
    opt = NvmlOptions.from_spec(spec)
    refs = list(engine.devices())
    if not refs and not opt.all_devices and not opt.device_list:
        raise MeterUnavailable(
            f"engine {engine.kind!r} reports no GPU (it runs on the CPU, or serves from another process), so the "
            "nvml meter has nothing to meter; name the GPUs with meter option devices=0,1 (NVML indices or UUIDs), "
            "use --joules-meter rapl or none, or meter option devices=all to meter every visible GPU anyway"
        )
    api = open_api(api_factory)
    try:
        found: list[tuple[Any, str]] = []
        if opt.device_list:
            for entry in opt.device_list:
                try:
                    found.append((api.handle_by_uuid(entry), f"uuid {entry} (meter option devices)") if entry.startswith("GPU-")
                                 else (api.handle_by_index(int(entry)), f"NVML index {entry} (meter option devices)"))
                except NvmlCallError as exc:
                    raise MeterUnavailable(f"meter option devices: no GPU {entry} in NVML: {exc}") from None
        elif refs:
            for ref in refs:
                try:
                    found.append(resolve_device(api, ref, env))
                except NvmlCallError as exc:
                    raise MeterUnavailable(f"cannot find the engine's GPU {ref} in NVML: {exc}") from None
        else:
            from ...engines.base import DeviceRef

            visible = visible_devices(env)
            count = len(visible) if visible is not None else api.device_count()
            found = [resolve_device(api, DeviceRef(index=i), env) for i in range(count)]
            if not found:
                raise MeterUnavailable("NVML sees no GPU to meter")
        gpus: dict[str, MeteredGpu] = {}
        for handle, how in found:
            gpu = _probe_gpu(api, handle, how, opt)
            gpus.setdefault(gpu.label, gpu)  # the same GPU named twice is metered once
        server = server_pids(engine)
        if server:  # a server metered from outside: its processes must run on the metered GPUs
            check_server_gpus(api, engine, list(gpus.values()), server)
            pids = with_server(pids, server)
        for gpu in gpus.values():
            if opt.idle_s > 0:
                gpu.idle_w = _idle_watts(api, gpu, opt.idle_s, opt.sample_interval_s)
        locked = lock_clocks(api, list(gpus.values()), int(opt.lock_sm_clock_mhz)) if opt.lock_sm_clock_mhz else []
    except NvmlCallError as exc:
        quiet_shutdown(api)
        raise MeterUnavailable(f"NVML failed while setting up the meter: {exc}") from None
    except BaseException:
        quiet_shutdown(api)
        raise
    meter = NvmlMeter(api, list(gpus.values()), opt, pids=pids, clock=clock, sleep=sleep)
    meter.locked = locked  # reset when the meter closes
    return meter


def create(spec: MeterSpec, engine: Engine) -> NvmlMeter:
    return build(spec, engine)
