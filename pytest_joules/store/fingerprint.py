"""The device fingerprint: what a baseline was measured on, so it is never used on anything else.

It keeps what changes joules per token (GPU model, power limit, driver, CUDA; engine kind,
version, model, dtype, runtime) and nothing that varies run to run (temperature, clocks, free
memory). The runtime (graphs or eager, sim and hf) decides how long the GPU waits for the host:
the same model differs several-fold between the two, so neither judges the other's baselines.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Mapping

#: fingerprint field -> the keys meters and engines use for it (first one present wins)
DEVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "gpu": ("gpu", "gpu_name", "name"),
    "power_limit_w": ("power_limit_w", "power_limit", "enforced_power_limit_w"),
    "driver": ("driver", "driver_version"),
    "cuda": ("cuda", "cuda_version", "cuda_driver_version"),
    "gpu_count": ("gpu_count", "count"),
    # CPU meters (rapl) report no GPU: the CPU model keys their baselines instead
    "cpu": ("cpu",),
    # the fleet meters (dcgm, prometheus): a hash of the metered GPUs' UUIDs, and their hosts
    "gpu_set": ("gpu_set",),
    "host_count": ("host_count",),
}
#: the serving engines add what else changes their energy (absent keys are left out, so the other
#: engines' fingerprints are unchanged)
ENGINE_FIELDS = ("kind", "version", "model", "dtype", "runtime", "server", "max_model_len", "tensor_parallel_size",
                 "quantization", "kv_cache_dtype", "max_num_seqs", "prompt")


def _first(source: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = source.get(key)
        if value not in (None, ""):
            return value
    return None


def _plain(value: Any) -> Any:
    """JSON-stable scalars: numbers stay numbers, anything else becomes its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _gpus(device: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    gpus = device.get("gpus")
    if isinstance(gpus, list) and gpus and all(isinstance(g, Mapping) for g in gpus):
        return gpus
    return [device]


def fingerprint(engine: Mapping[str, Any], device: Mapping[str, Any], simulated: bool) -> dict[str, Any]:
    """Build the fingerprint from `Engine.identity()` and `Meter.device_info()`."""
    gpus = _gpus(device)
    dev: dict[str, Any] = {}
    for field, keys in DEVICE_FIELDS.items():
        values = [_plain(_first(g, keys)) for g in gpus]
        if field == "gpu_count":
            value = _plain(_first(device, keys)) or (len(gpus) if len(gpus) > 1 else None)
        else:
            value = values[0] if len(set(map(str, values))) == 1 else ", ".join(map(str, values))
        if value is not None:
            dev[field] = value
    dev["simulated"] = bool(simulated or device.get("simulated"))
    eng = {k: _plain(engine.get(k)) for k in ENGINE_FIELDS if engine.get(k) not in (None, "")}
    return {"device": dev, "engine": eng}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def device_slug(fp: Mapping[str, Any]) -> str:
    dev = fp.get("device", {})
    name = slug(dev.get("gpu") or dev.get("cpu") or "unknown-device")
    if dev.get("simulated") and "simulated" not in name:
        name += "-simulated"
    return name


#: a model slug longer than this is cut, and a hash of the whole name keeps the file name unique
MODEL_SLUG_MAX = 48


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def engine_stem(fp: Mapping[str, Any]) -> str:
    """`<kind>-<model>-<dtype>-<runtime>`: every part of the engine's identity that selects another
    configuration of one engine, so two configurations never share (and evict) a file. A model
    given as a path is named by its last component plus a hash of the whole path (`/engines/a/fp8`
    and `/engines/b/fp8` differ); a name too long for a file is cut and hashed likewise. The
    version is left out on purpose: an upgraded engine finds its old file and fails naming the
    version that changed (see baselines.FingerprintMismatch), instead of passing as "new"."""
    eng = fp.get("engine", {})
    model = str(eng.get("model") or "default")
    whole = model.rstrip("/\\") or model
    name = slug(re.split(r"[\\/]", whole)[-1])
    hashed = name != slug(whole) or len(name) > MODEL_SLUG_MAX
    parts = [slug(eng.get("kind") or "engine"), name[:MODEL_SLUG_MAX].strip("-")]
    parts += [slug(eng[key]) for key in ("dtype", "runtime") if eng.get(key) not in (None, "")]
    if hashed:
        parts.append(_short_hash(whole))
    return "-".join(parts)


def legacy_engine_stem(fp: Mapping[str, Any]) -> str:
    """The file name of stores written before 0.2 (`<kind>-<model's last part>`): read and
    migrated by store/migrate.py, never written."""
    eng = fp.get("engine", {})
    model = str(eng.get("model") or "default")
    if "/" in model or "\\" in model:
        model = PurePath(model.rstrip("/\\")).name or model
    return f"{slug(eng.get('kind') or 'engine')}-{slug(model)}"


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], then: str = "baseline") -> list[str]:
    """Human-readable differences, e.g. "device.power_limit_w: 700 (baseline) vs 600 (now)"."""
    out = []
    for section in ("device", "engine"):
        old = recorded.get(section) or {}
        new = current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"{section}.{key}: {old.get(key)!r} ({then}) vs {new.get(key)!r} (now)")
    return out


def describe(fp: Mapping[str, Any]) -> str:
    """One line for captions: "NVIDIA H100 (SIMULATED), 700 W · sim Llama-3.1-8B bf16"."""
    dev = fp.get("device", {})
    eng = fp.get("engine", {})
    parts = [str(dev.get("gpu") or "unknown device")]
    if dev.get("simulated") and "SIMULATED" not in parts[0].upper():
        parts[0] += " (SIMULATED)"
    if dev.get("power_limit_w") is not None:
        parts.append(f"{dev['power_limit_w']} W")
    if dev.get("driver"):
        parts.append(f"driver {dev['driver']}")
    engine = " ".join(str(eng[k]) for k in ("kind", "model", "dtype") if eng.get(k))
    if eng.get("version"):
        engine += f" {eng['version']}"
    return ", ".join(parts) + (f" · {engine}" if engine else "")
