"""What NVML says about a metered GPU besides its energy (utilisation, temperature, clocks,
throttle reasons, other processes), and the verdict on one window's energy: believable or not, and why.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import InvalidMeasurement
from .api import (GPU_IS_LOST, NOT_FOUND, RESET_REQUIRED, SPOILING_REASONS, NvmlCallError,
                  decode_throttle_reasons)
from .options import GpuEnergy, MeteredGpu, NvmlOptions


def raise_if_lost(gpu: MeteredGpu, exc: NvmlCallError) -> None:
    if exc.code in (GPU_IS_LOST, RESET_REQUIRED):
        raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): {exc}") from None


class WindowJudge:
    """Reads one GPU's auxiliary facts through the NVML seam and judges its window's energy."""

    def __init__(self, api: Any, options: NvmlOptions, own_pids: Callable[[], set[int]]) -> None:
        self._api = api
        self._opt = options
        self._own_pids = own_pids

    def util_mark(self, gpu: MeteredGpu) -> int | None:
        """The newest utilisation sample before the window: later ones fall inside it."""
        try:
            samples = self._api.utilization_samples(gpu.handle, 0)
        except NvmlCallError as exc:
            raise_if_lost(gpu, exc)
            return 0 if exc.code == NOT_FOUND else None  # NOT_FOUND: none kept yet, every later one is new
        return max((ts for ts, _ in samples), default=0)

    def utilization(self, gpu: MeteredGpu) -> tuple[float | None, int]:
        """The GPU's busy fraction over the window and how many driver samples it averages; from
        the driver's last sample period (0 samples) where it keeps none; None where unsupported."""
        values: list[float] = []
        if gpu.util_mark is not None:
            try:
                samples = self._api.utilization_samples(gpu.handle, gpu.util_mark)
            except NvmlCallError as exc:
                raise_if_lost(gpu, exc)
                samples = []
            # drivers now and then report garbage (values far above 100): leave those out
            values = [v for ts, v in samples if ts > gpu.util_mark and 0.0 <= v <= 100.0]
        if values:
            return sum(values) / len(values) / 100.0, len(values)
        percent = self.soft(self._api.utilization_percent, gpu)
        if percent is None or not 0.0 <= percent <= 100.0:
            return None, 0
        return percent / 100.0, 0

    def judge(self, gpu: MeteredGpu, energy: GpuEnergy, seconds: float) -> tuple[dict[str, Any], list[str], bool]:
        """Record what the window was like on one GPU, and whether its energy is believable."""
        problems: list[str] = []
        valid = True
        who = f"GPU {gpu.label} ({gpu.name})"
        delta_j = energy.joules
        watts = delta_j / seconds if seconds > 0 else float("nan")
        if energy.backwards:
            valid = False
            problems.append(
                f"{who}: the energy counter went backwards ({energy.start_raw} -> {energy.end_raw} mJ): "
                "counter reset (driver reload?); window discarded"
            )
        elif delta_j == 0:
            valid = False
            problems.append(
                f"{who}: zero energy in a {seconds:.3f} s window: the counter did not move "
                "(window shorter than its update period, or the counter is stuck); raise min_window_s"
            )
        elif seconds > 0 and watts < self._opt.min_watts:
            valid = False
            problems.append(f"{who}: implausibly low average power {watts:.2f} W (floor {self._opt.min_watts:g} W)")
        elif gpu.power_limit_w and watts > self._opt.max_power_factor * gpu.power_limit_w:
            valid = False
            problems.append(
                f"{who}: implausible average power {watts:.1f} W, above {self._opt.max_power_factor:g}x "
                f"the enforced power limit of {gpu.power_limit_w:g} W"
            )
        if not gpu.counter and seconds < self._opt.min_sampling_window_s:
            valid = False
            problems.append(
                f"{who}: a {seconds:.3f} s window is too short for power sampling (minimum "
                f"{self._opt.min_sampling_window_s:g} s, meter option min_sampling_window_s): the power "
                f"reading averages over {self._opt.power_average_s:g} s and lags every load change; "
                "run the workload longer"
            )
        others = sorted(set(gpu.start.get("others") or []) | set(self.others(gpu) or []))
        if others:
            problems.append(f"{who}: other processes used the GPU during the window (pids {', '.join(map(str, others))})")
        mask = self.soft(self._api.throttle_mask, gpu)
        reasons = decode_throttle_reasons(mask) if mask is not None else None
        spoiling = sorted(SPOILING_REASONS.intersection(reasons or []))
        if spoiling:
            problems.append(f"{who}: clocks slowed by {', '.join(spoiling)} at the end of the window")
        info = {
            "name": gpu.name,
            "uuid": gpu.label,
            "mapped_by": gpu.how,
            "joules": delta_j,
            "avg_watts": watts,
            "power_limit_w": gpu.power_limit_w,
            "temperature_c_start": gpu.start.get("temperature_c"),
            "temperature_c_end": self.soft(self._api.temperature_c, gpu),
            "clocks_mhz": self.soft(self._api.clocks_mhz, gpu),
            "clocks_mhz_start": gpu.start.get("clocks_mhz"),
            "throttle_reasons": reasons,
            "throttle_reasons_start": gpu.start.get("throttle_reasons"),
            "other_pids": others,
        }
        if gpu.idle_w is not None:
            info["idle_watts"] = gpu.idle_w
            info["joules_above_idle"] = delta_j - gpu.idle_w * seconds
        return info, problems, valid

    def others(self, gpu: MeteredGpu) -> list[int] | None:
        pids = self.soft(self._api.compute_pids, gpu)
        if pids is None:
            return None
        mine = self._own_pids()
        return sorted(p for p in pids if p not in mine)

    def soft(self, fn: Callable[[Any], Any], gpu: MeteredGpu) -> Any:
        """Auxiliary facts: None when this GPU or driver does not report them."""
        try:
            return fn(gpu.handle)
        except NvmlCallError as exc:
            raise_if_lost(gpu, exc)
            return None

    def hard(self, fn: Callable[[Any], Any], gpu: MeteredGpu, what: str) -> Any:
        try:
            return fn(gpu.handle)
        except NvmlCallError as exc:
            raise InvalidMeasurement(f"GPU {gpu.label} ({gpu.name}): could not {what}: {exc}") from None
