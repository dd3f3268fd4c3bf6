"""The `trtllm` engine: TensorRT-LLM's LLM API with token-id prompts and exact output lengths.

Two kinds of model directory (see docs/hardware.md):
- a prebuilt TensorRT engine dir (`config.json` with both `pretrained_config` and `build_config`,
  one `rank<N>.engine` per GPU), run by `tensorrt_llm._tensorrt_engine.LLM` (tensorrt-llm 1.2.x;
  TensorRT-LLM's main branch has since removed this backend);
- a Hugging Face checkpoint dir, run by `tensorrt_llm.LLM` (the PyTorch backend).

Every request is a list of n_in token ids, sampled with `SamplingParams(max_tokens=n_out,
ignore_eos=True, detokenize=False, return_perf_metrics=True)`, KV block reuse off (no prefix
cache). TensorRT-LLM's limits (engine max_input_len and max_seq_len, the PyTorch backend's
max_num_tokens) are checked before anything runs, and every output's length is checked after.
A workload's `max_batch_size` below the LLM's own is honoured by keeping at most that many
requests in flight. All tensorrt_llm use goes through `TrtllmApi`.

This module is the factory (`build`, `create`) and the doctor's `probe`; the model directory and
options are read in trtllm_config.py, the engine runs in trtllm_run.py.

Behaviour is taken from TensorRT-LLM's source around 1.2 (cited where used). NOT YET RUN ON A
GPU: this module is tested against a fake tensorrt_llm only.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, EngineUnavailable
from .base import EngineSpec
from .trtllm_config import (DEFAULT_MAX_NUM_TOKENS, DTYPES, INSTALL_HINT, check_options, dtype_for,
                            engine_parallelism, inspect_model_dir)
from .trtllm_run import Limits, TrtllmApi, TrtllmEngine, load_api, perf_of, timing_of

if TYPE_CHECKING:
    from ..meters.base import GpuSurvey

__all__ = ["INSTALL_HINT", "TrtllmApi", "TrtllmEngine", "build", "create", "load_api", "perf_of", "probe",
           "timing_of"]


def cuda_gpu_count() -> int:
    """GPUs CUDA can use here (torch is a dependency of tensorrt_llm)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0



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
    opts = check_options(spec)
    if not installed():
        raise EngineUnavailable(f"tensorrt_llm is not installed; {INSTALL_HINT}")
    gpus = gpu_count()
    if gpus < 1:
        raise EngineUnavailable("the trtllm engine needs an NVIDIA GPU and CUDA; none is visible here")
    model = inspect_model_dir(spec.model)
    api = api_loader()
    tp = opts["tensor_parallel_size"]
    if model.kind == "engine":
        par = engine_parallelism(model)
        if tp not in (1, par.tp):  # the LLM API's own rule: 1 means "the engine's"
            raise ConfigError(
                f"tensor_parallel_size {tp} does not match the tp_size {par.tp} the engine in {model.path} was "
                "built with; drop the option (the engine's is used) or rebuild"
            )
        tp, world = par.tp, par.world_size
    else:
        world = tp
    if world > gpus:
        if model.kind == "engine":
            raise EngineUnavailable(f"the engine in {model.path} was built for {world} GPUs; {gpus} visible")
        raise EngineUnavailable(f"tensor_parallel_size {tp} needs {tp} GPUs; {gpus} visible")
    dtype = dtype_for(spec, opts, model)
    max_batch = opts.get("max_batch_size")
    max_batch = int(max_batch) if max_batch is not None else model.max_batch_size
    kwargs: dict[str, Any] = {
        "model": model.path,
        "skip_tokenizer_init": True,  # token-id prompts: no tokenizer, end_id set explicitly
        "kv_cache_config": api.KvCacheConfig(enable_block_reuse=False),
        "tensor_parallel_size": tp,
        # also at LLM level: only then does generate_async stamp the arrival time at the call
        # (`steady_clock_now() if self.args.return_perf_metrics`, llmapi/llm.py, 1.2)
        "return_perf_metrics": True,
    }
    if model.kind == "engine":
        if api.EngineLLM is None:
            raise EngineUnavailable(
                f"tensorrt_llm {api.version} cannot load prebuilt engine dirs (its TensorRT backend is gone); "
                f"{INSTALL_HINT}, or point --joules-model at a Hugging Face checkpoint"
            )
        if "max_num_tokens" in opts:
            raise ConfigError(
                f"engine option max_num_tokens applies to checkpoints (the PyTorch backend); the engine in "
                f"{model.path} has its own, built in (trtllm-build --max_num_tokens)"
            )
        built = model.max_batch_size
        if built is not None and max_batch is not None and max_batch > built:
            raise ConfigError(f"max_batch_size {max_batch} exceeds the {built} the engine in {model.path} was built with")
        llm_class = api.EngineLLM
        limits = Limits(model.max_positions, model.max_input_len, None)
    else:
        llm_class = api.LLM
        kwargs["dtype"] = DTYPES[dtype]
        num_tokens = int(opts.get("max_num_tokens", DEFAULT_MAX_NUM_TOKENS))
        kwargs["max_num_tokens"] = num_tokens  # passed, so the limit checked is the limit used
        if model.max_positions is not None:
            # passed, so max_tokens is not lowered to a different default behind the check (see _account)
            kwargs["max_seq_len"] = model.max_positions
        limits = Limits(model.max_positions, None, num_tokens)
    if max_batch is not None:
        kwargs["max_batch_size"] = max_batch
    end_id = opts.get("end_id", model.eos_id)
    end_id = int(end_id) if end_id is not None else 2
    vocab = opts.get("vocab_size", model.vocab_size)
    if vocab is None:
        raise ConfigError(f"trtllm engine: cannot tell the vocabulary size of {model.path}; pass engine option vocab_size")
    try:
        llm = llm_class(**kwargs)
    except (ValueError, TypeError, RuntimeError, OSError, AssertionError) as exc:  # TRT-LLM validates with asserts too
        raise EngineUnavailable(f"tensorrt_llm could not load {model.path}: {type(exc).__name__}: {exc}") from None
    return TrtllmEngine(api, llm, model, dtype, max_batch, end_id, int(vocab), world, limits)



def create(spec: EngineSpec) -> TrtllmEngine:
    return build(spec)


def probe(*, gpus: GpuSurvey | None = None) -> tuple[bool, str]:
    """For `joules doctor`: installed, and with the GPU survey (`gpus`), a GPU to run on?"""
    usable, reason = package_status()
    if usable and gpus is not None and not gpus.usable:
        return False, f"{reason}, but no GPU is usable here ({gpus.reason})"
    return usable, reason


def package_status() -> tuple[bool, str]:
    """Installed, which version, engine dirs supported? (package metadata: no import)"""
    from importlib import metadata

    try:
        version = metadata.version("tensorrt-llm")
    except metadata.PackageNotFoundError:
        return False, f"tensorrt_llm is not installed; {INSTALL_HINT}"
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2]]
    if tuple(parts) < (1, 3):
        note = "engine dirs and checkpoints"
    else:
        note = ("checkpoints; engine dirs only if this version still has tensorrt_llm._tensorrt_engine "
                "(upstream removed the TensorRT backend after 1.2; pytest-joules targets 1.2.x)")
    return True, f"tensorrt-llm {version}: {note}; needs an NVIDIA GPU"
