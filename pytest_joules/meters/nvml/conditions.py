"""The GPU's state in each window, and two optional controls of it (off by default).

Every window records the state a reading depends on besides the work (`window_state`): the GPU
temperature when the window opened, the SM clock, the clock-event ("throttle") reasons and the
enforced power limit; `measure/state.py` flags a reading taken while throttled or far from the
session's usual temperature.

Optional, through meter options:

- `lock_sm_clock_mhz=N`: hold every metered GPU's SM clock at N MHz for the session
  (nvmlDeviceSetGpuLockedClocks, reset when the meter closes). Needs root (or the driver's
  permission for it) and a Volta or newer GPU; a clock the GPU cannot hold is its own choice.
  A locked clock removes boost-clock drift between runs, and changes the energy: record
  baselines with the same setting.
- `precondition_s=T`: before the first window, run the workload until the GPU temperature has
  settled (it rose less than `settle_c` °C, default 1, over the last `settle_window_s` seconds,
  default 30), for at most T seconds. A cold GPU draws less power than a warm one at the same
  work; the first window then does not start cold. Needs nothing beyond the nvml meter; costs
  up to T seconds once per session.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ...errors import ConfigError
from .api import NO_PERMISSION, NOT_SUPPORTED, SPOILING_REASONS, NvmlCallError, decode_throttle_reasons
from .options import MeteredGpu, NvmlOptions

#: reasons that are no slowdown of the work: the GPU had none to do, or the user set the clocks
NOT_SLOWDOWNS = {"gpu_idle", "applications_clocks_setting"}


def lock_clocks(api: Any, gpus: Sequence[MeteredGpu], mhz: int) -> list[MeteredGpu]:
    """Lock each GPU's SM clock at `mhz`; ConfigError naming what it needs when it cannot."""
    locked: list[MeteredGpu] = []
    for gpu in gpus:
        try:
            api.lock_sm_clocks(gpu.handle, mhz)
        except NvmlCallError as exc:
            reset_clocks(api, locked)
            if exc.code == NO_PERMISSION:
                need = "root (run as root, or let users change clocks: nvidia-smi -acp UNRESTRICTED)"
            elif exc.code == NOT_SUPPORTED:
                need = "a Volta or newer GPU and a driver that supports locked clocks"
            else:
                need = "a GPU and driver that accept it"
            raise ConfigError(f"nvml meter option lock_sm_clock_mhz={mhz}: GPU {gpu.label} ({gpu.name}): {exc}; "
                              f"locking clocks needs {need}") from None
        locked.append(gpu)
    return locked


def reset_clocks(api: Any, gpus: Sequence[MeteredGpu]) -> None:
    for gpu in gpus:
        try:
            api.reset_sm_clocks(gpu.handle)
        except NvmlCallError:
            pass  # closing: the driver resets them at the next reboot anyway


def start_state(api: Any, gpu: MeteredGpu, soft: Callable[[Callable[[Any], Any], MeteredGpu], Any]) -> dict[str, Any]:
    """What a window's opening records besides the energy (each read may be unsupported: None)."""
    mask = soft(api.throttle_mask, gpu)
    return {"temperature_c": soft(api.temperature_c, gpu), "clocks_mhz": soft(api.clocks_mhz, gpu),
            "throttle_reasons": decode_throttle_reasons(mask) if mask is not None else None}


def window_state(gpus: dict[str, dict[str, Any]], locked_mhz: float = 0.0) -> dict[str, Any]:
    """The window's state over its GPUs: the hottest start temperature, the lowest SM clock, every
    slowdown reason seen at either edge, and the power limit (each GPU's, where they differ)."""
    temps = [g.get("temperature_c_start") for g in gpus.values()]
    clocks = [(g.get("clocks_mhz") or {}).get("sm") for g in gpus.values()]
    reasons: set[str] = set()
    for g in gpus.values():
        reasons.update((g.get("throttle_reasons") or []) + (g.get("throttle_reasons_start") or []))
    limits = sorted({g["power_limit_w"] for g in gpus.values() if g.get("power_limit_w") is not None})
    state: dict[str, Any] = {
        "temperature_c": max((t for t in temps if t is not None), default=None),
        "sm_clock_mhz": min((c for c in clocks if c is not None), default=None),
        "throttle_reasons": sorted(reasons - NOT_SLOWDOWNS),
        "throttled": sorted(reasons & SPOILING_REASONS),
        "power_limit_w": limits[0] if len(limits) == 1 else (limits or None),
    }
    if locked_mhz:
        state["locked_sm_clock_mhz"] = locked_mhz
    return state


def precondition(api: Any, gpus: Sequence[MeteredGpu], opt: NvmlOptions, run_once: Callable[[], None],
                 clock: Callable[[], float]) -> dict[str, Any]:
    """Run the workload until the hottest GPU's temperature settles, or `precondition_s` passes."""
    def hottest() -> float | None:
        temps = []
        for gpu in gpus:
            try:
                temps.append(float(api.temperature_c(gpu.handle)))
            except NvmlCallError:
                pass
        return max(temps) if temps else None

    start = clock()
    first = hottest()
    if first is None:
        return {"settled": False, "seconds": 0.0, "why": "the GPU reports no temperature"}
    history = [(start, first)]
    settled = False
    while clock() - start < opt.precondition_s:
        run_once()
        now, temp = clock(), hottest()
        if temp is None:
            break
        history.append((now, temp))
        before = [t for at, t in history if at <= now - opt.settle_window_s]
        if before and temp - before[-1] < opt.settle_c:
            settled = True
            break
    return {"settled": settled, "seconds": clock() - start, "temperature_c_start": first,
            "temperature_c": history[-1][1], "runs": len(history) - 1}
