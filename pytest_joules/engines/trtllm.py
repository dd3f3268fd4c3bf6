"""The `trtllm` engine: TensorRT-LLM's LLM API with token-id prompts and exact output lengths.

Two kinds of model directory (see docs/hardware.md):
- a prebuilt TensorRT engine dir (`config.json` with `build_config`, `rank0.engine`), run by
  `tensorrt_llm._tensorrt_engine.LLM` (tensorrt-llm 1.2.x; removed in 1.3);
- a Hugging Face checkpoint dir, run by `tensorrt_llm.LLM` (the PyTorch backend).

Every request is a list of n_in token ids, sampled with
`SamplingParams(max_tokens=n_out, min_tokens=n_out, ignore_eos=True, detokenize=False)`, KV block
reuse off (no prefix cache). A workload's `max_batch_size` below the LLM's own is honoured by
keeping at most that many requests in flight. All tensorrt_llm use goes through `TrtllmApi`.

NOT YET RUN ON A GPU: this module is tested against a fake tensorrt_llm only.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, EngineUnavailable, WorkloadMismatch
from ..workload import EngineRun, Workload
from .base import DeviceRef, EngineSpec, reject_unknown_options
from .prompts import random_prompts

INSTALL_HINT = "install pytest-joules[trtllm] (tensorrt-llm>=1.2,<1.3, which still loads engine dirs)"
#: engine options (--joules-engine-option); `seed` is accepted because the plugin always passes it
#: (the prompts take theirs from the workload)
OPTIONS = ("tensor_parallel_size", "max_batch_size", "end_id", "vocab_size", "seed")


@dataclass(frozen=True)
class ModelDir:
    """What kind of directory `--joules-model` names, and what its config says."""

    path: str
    kind: str  # "engine" or "checkpoint"
    config: dict[str, Any]

    @property
    def max_positions(self) -> int | None:
        if self.kind == "engine":
            value = (self.config.get("build_config") or {}).get("max_seq_len")
        else:
            cfg = self.config.get("text_config") or self.config
            value = cfg.get("max_position_embeddings")
        return int(value) if isinstance(value, int) else None

    @property
    def max_batch_size(self) -> int | None:
        value = (self.config.get("build_config") or {}).get("max_batch_size")
        return int(value) if isinstance(value, int) else None

    @property
    def vocab_size(self) -> int | None:
        cfg = self.config.get("pretrained_config") or self.config.get("text_config") or self.config
        value = cfg.get("vocab_size")
        return int(value) if isinstance(value, int) else None

    @property
    def eos_id(self) -> int | None:
        value = (self.config.get("text_config") or self.config).get("eos_token_id")
        if isinstance(value, list) and value:
            value = value[0]
        return int(value) if isinstance(value, int) else None


def inspect_model_dir(path: str | None) -> ModelDir:
    """Tell an engine dir from a checkpoint dir; ConfigError naming the path otherwise."""
    if not path:
        raise ConfigError(
            "the trtllm engine needs --joules-model: a TensorRT-LLM engine dir (config.json + rank0.engine) "
            "or a Hugging Face checkpoint dir"
        )
    full = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(full):
        raise ConfigError(f"trtllm engine: model path {full} does not exist or is not a directory")
    config_path = os.path.join(full, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(
            f"trtllm engine: {full} has no config.json; expected a TensorRT-LLM engine dir "
            "(config.json with build_config, rank0.engine) or a Hugging Face checkpoint dir"
        )
    try:
        with open(config_path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"trtllm engine: cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"trtllm engine: {config_path} is not a JSON object")
    engines = glob.glob(os.path.join(full, "rank*.engine"))
    if "build_config" in config:
        if not engines:
            raise ConfigError(f"trtllm engine: {full} has a build_config but no rank0.engine; was the build interrupted?")
        return ModelDir(full, "engine", config)
    if "architectures" in config or "model_type" in config:
        return ModelDir(full, "checkpoint", config)
    raise ConfigError(
        f"trtllm engine: {full}/config.json is neither an engine config (build_config) nor a Hugging "
        "Face config (architectures / model_type); a TensorRT-LLM *checkpoint* must be built into "
        "an engine with trtllm-build first"
    )


class TrtllmApi:
    """The narrow seam over tensorrt_llm: the classes this engine uses, imported lazily."""

    def __init__(self, module: Any, engine_llm: Any | None, kv_cache_config: Any) -> None:
        self.module = module
        self.version = str(getattr(module, "__version__", "unknown"))
        self.LLM = module.LLM
        self.SamplingParams = module.SamplingParams
        self.EngineLLM = engine_llm  # None when this version cannot load engine dirs
        self.KvCacheConfig = kv_cache_config


def load_api() -> TrtllmApi:
    try:
        module = importlib.import_module("tensorrt_llm")
    except Exception as exc:  # native libraries: ImportError, OSError, RuntimeError all happen
        raise EngineUnavailable(f"import tensorrt_llm failed: {type(exc).__name__}: {exc}") from None
    try:
        kv = importlib.import_module("tensorrt_llm.llmapi").KvCacheConfig
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailable(f"tensorrt_llm has no llmapi.KvCacheConfig ({exc}); {INSTALL_HINT}") from None
    try:
        engine_llm = importlib.import_module("tensorrt_llm._tensorrt_engine").LLM
    except (ImportError, AttributeError):
        engine_llm = None
    return TrtllmApi(module, engine_llm, kv)


def cuda_gpu_count() -> int:
    """GPUs CUDA can use here (torch is a dependency of tensorrt_llm)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def cuda_device_ref(index: int) -> DeviceRef:
    """A CUDA device with its UUID and PCI bus id where torch can tell them."""
    try:
        import torch

        from .hf import device_ref

        return device_ref(torch, index)
    except Exception:  # no torch or no CUDA: the meter maps the index via CUDA_VISIBLE_DEVICES
        return DeviceRef(index=index)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def perf_of(output: Any) -> dict[str, float]:
    """One request's perf metrics, read defensively (attribute names vary by version)."""
    metrics = getattr(output, "request_perf_metrics", None)
    if metrics is None:
        return {}
    found: dict[str, float] = {}
    timing = getattr(metrics, "timing_metrics", None)
    if timing is not None:
        t = {k: _seconds(getattr(timing, k, None)) for k in
             ("arrival_time", "first_scheduled_time", "first_token_time", "last_token_time")}
        if t["first_scheduled_time"] is not None and t["first_token_time"] is not None:
            found["prefill_s"] = t["first_token_time"] - t["first_scheduled_time"]
        if t["first_token_time"] is not None and t["last_token_time"] is not None:
            found["decode_s"] = t["last_token_time"] - t["first_token_time"]
        if t["arrival_time"] is not None and t["first_token_time"] is not None:
            found["ttft_s"] = t["first_token_time"] - t["arrival_time"]
    kv = getattr(metrics, "kv_cache_metrics", None)
    reused = getattr(kv, "num_reused_blocks", None) if kv is not None else None
    if isinstance(reused, int):
        found["reused_kv_blocks"] = float(reused)
    return found


class TrtllmEngine:
    kind = "trtllm"
    simulated = False
    default_meter = "nvml"

    def __init__(self, api: TrtllmApi, llm: Any, model: ModelDir, dtype: str, max_batch_size: int | None,
                 end_id: int, vocab_size: int, gpus: int) -> None:
        self._api = api
        self._llm = llm
        self._model = model
        self._dtype = dtype
        self._max_batch = max_batch_size
        self._end_id = end_id
        self._vocab = vocab_size
        self._gpus = gpus
        self.max_positions = model.max_positions
        self._prompt_cache: dict[tuple[int, int, int], list[list[int]]] = {}

    def identity(self) -> dict[str, str]:
        return {"kind": "trtllm", "model": self._model.path, "dtype": self._dtype,
                "version": self._api.version, "backend": "tensorrt" if self._model.kind == "engine" else "pytorch"}

    def sampling_params(self, n_out: int) -> Any:
        return self._api.SamplingParams(
            max_tokens=n_out, min_tokens=n_out, ignore_eos=True, detokenize=False,
            return_perf_metrics=True, end_id=self._end_id,
        )

    def prompts(self, workload: Workload) -> list[list[int]]:
        key = (workload.n_in, workload.requests, workload.seed)
        if key not in self._prompt_cache:
            self._prompt_cache = {key: random_prompts(workload, self._vocab, [self._end_id])}
        return self._prompt_cache[key]

    def run(self, workload: Workload) -> EngineRun:
        workload.check_positions(self.max_positions, self.kind)
        limit = workload.max_batch_size
        if limit is not None and self._max_batch is not None and limit > self._max_batch:
            raise ConfigError(
                f"workload max_batch_size {limit} exceeds the engine's max_batch_size {self._max_batch}; "
                "lower it, or load the engine with a larger max_batch_size (engine dirs: rebuild)"
            )
        prompts = self.prompts(workload)
        params = self.sampling_params(workload.n_out)
        t0 = time.perf_counter()
        if limit is None or limit >= workload.requests or (self._max_batch is not None and limit >= self._max_batch):
            # the LLM's own scheduler already caps what runs at once
            outputs = list(self._llm.generate(prompts, params, use_tqdm=False))
        else:
            outputs = self._run_limited(prompts, params, limit)
        seconds = time.perf_counter() - t0
        return self._account(workload, outputs, seconds, limit)

    def _run_limited(self, prompts: list[list[int]], params: Any, limit: int) -> list[Any]:
        """At most `limit` requests in flight: submit the next as the oldest finishes."""
        outputs: list[Any] = []
        pending: deque[Any] = deque()
        for prompt in prompts:
            if len(pending) >= limit:
                outputs.append(pending.popleft().result())
            pending.append(self._llm.generate_async(prompt, params))
        while pending:
            outputs.append(pending.popleft().result())
        return outputs

    def _account(self, workload: Workload, outputs: list[Any], seconds: float, limit: int | None) -> EngineRun:
        ins: list[int] = []
        outs: list[int] = []
        problems: list[str] = []
        perf: list[dict[str, float]] = []
        for i, out in enumerate(outputs):
            completions = list(getattr(out, "outputs", None) or [])
            if not completions:
                problems.append(f"request {i} returned no completion")
                continue
            first = completions[0]
            ins.append(len(getattr(out, "prompt_token_ids", None) or []))
            outs.append(len(first.token_ids))
            reason = getattr(first, "finish_reason", None)
            if reason != "length":
                problems.append(f"request {i} finished with {reason!r}, not 'length'")
            perf.append(perf_of(first))
        if problems:
            raise WorkloadMismatch(f"engine 'trtllm' did not run the workload: {'; '.join(problems)}")
        phases: dict[str, float] = {}
        info: dict[str, Any] = {"in_flight_limit": limit, "backend": self.identity()["backend"]}
        for key in ("prefill_s", "decode_s", "ttft_s"):
            values = [p[key] for p in perf if key in p]
            if values:
                target = phases if key != "ttft_s" else info
                target[key] = sum(values) / len(values)  # mean per request
        reused = sum(p.get("reused_kv_blocks", 0.0) for p in perf)
        if any("reused_kv_blocks" in p for p in perf):
            info["reused_kv_blocks"] = int(reused)
        return EngineRun(input_tokens=ins, output_tokens=outs, seconds=seconds, phases=phases, info=info)

    def sync(self) -> None:
        # generate() returns only after the last decode step: the GPU work is done.
        pass

    def devices(self) -> list[DeviceRef]:
        # TRT-LLM runs on the first tensor_parallel_size visible CUDA devices.
        return [cuda_device_ref(i) for i in range(self._gpus)]

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "shutdown"):
            llm.shutdown()


def installed() -> bool:
    if "tensorrt_llm" in sys.modules:  # imported already (or a test's stand-in)
        return True
    try:
        return importlib.util.find_spec("tensorrt_llm") is not None
    except (ImportError, ValueError):
        return False


def build(spec: EngineSpec, api_loader: Callable[[], TrtllmApi] = load_api,
          gpu_count: Callable[[], int] = cuda_gpu_count) -> TrtllmEngine:
    """`create` with its seams open. Checks run cheapest and most fundamental first, so a
    machine without the package or a GPU gets EngineUnavailable (a skip), whatever the path.
    Options come first of all: a typo in them is wrong on every machine, so it fails everywhere."""
    opts = _options(spec)
    if not installed():
        raise EngineUnavailable(f"tensorrt_llm is not installed; {INSTALL_HINT}")
    gpus = gpu_count()
    if gpus < 1:
        raise EngineUnavailable("the trtllm engine needs an NVIDIA GPU and CUDA; none is visible here")
    model = inspect_model_dir(spec.model)
    api = api_loader()
    tp = opts["tensor_parallel_size"]
    if tp > gpus:
        raise EngineUnavailable(f"tensor_parallel_size {tp} needs {tp} GPUs; {gpus} visible")
    max_batch = opts.get("max_batch_size")
    max_batch = int(max_batch) if max_batch is not None else model.max_batch_size
    if model.kind == "engine":
        if api.EngineLLM is None:
            raise EngineUnavailable(
                f"tensorrt_llm {api.version} cannot load prebuilt engine dirs (removed in 1.3); "
                f"{INSTALL_HINT}, or point --joules-model at a Hugging Face checkpoint"
            )
        built = model.max_batch_size
        if built is not None and max_batch is not None and max_batch > built:
            raise ConfigError(f"max_batch_size {max_batch} exceeds the {built} the engine in {model.path} was built with")
        llm_class = api.EngineLLM
    else:
        llm_class = api.LLM
    end_id = opts.get("end_id", model.eos_id)
    end_id = int(end_id) if end_id is not None else 2
    vocab = opts.get("vocab_size", model.vocab_size)
    if vocab is None:
        raise ConfigError(f"trtllm engine: cannot tell the vocabulary size of {model.path}; pass engine option vocab_size")
    dtype = spec.dtype or "auto"
    kwargs: dict[str, Any] = {
        "model": model.path,
        "skip_tokenizer_init": True,  # token-id prompts: no tokenizer, end_id set explicitly
        "kv_cache_config": api.KvCacheConfig(enable_block_reuse=False),
        "tensor_parallel_size": tp,
    }
    if model.kind == "checkpoint":
        kwargs["dtype"] = dtype
    if max_batch is not None:
        kwargs["max_batch_size"] = max_batch
    try:
        llm = llm_class(**kwargs)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        raise EngineUnavailable(f"tensorrt_llm could not load {model.path}: {type(exc).__name__}: {exc}") from None
    return TrtllmEngine(api, llm, model, dtype if model.kind == "checkpoint" else _engine_dtype(model),
                        max_batch, end_id, int(vocab), min(gpus, tp))


def _options(spec: EngineSpec) -> dict[str, Any]:
    """The engine options, checked: ConfigError for an unknown key or a bad tensor_parallel_size."""
    opts = dict(spec.options)
    reject_unknown_options("trtllm", opts, OPTIONS)
    tp = opts.get("tensor_parallel_size", 1)
    try:
        number = None if isinstance(tp, (bool, float)) else int(tp)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ConfigError(f"trtllm engine option tensor_parallel_size must be a positive integer (GPUs to shard over), got {tp!r}")
    opts["tensor_parallel_size"] = number
    return opts


def _engine_dtype(model: ModelDir) -> str:
    pretrained = model.config.get("pretrained_config") or {}
    return str(pretrained.get("dtype") or "engine")


def create(spec: EngineSpec) -> TrtllmEngine:
    return build(spec)


def probe() -> tuple[bool, str]:
    """For `joules doctor`: installed, which version, engine dirs supported? (no import)"""
    from importlib import metadata

    try:
        version = metadata.version("tensorrt-llm")
    except metadata.PackageNotFoundError:
        return False, f"tensorrt_llm is not installed; {INSTALL_HINT}"
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2]]
    engine_dirs = tuple(parts) < (1, 3)
    note = "engine dirs and checkpoints" if engine_dirs else "checkpoints only (1.3 removed engine dirs)"
    return True, f"tensorrt-llm {version}: {note}; needs an NVIDIA GPU"
