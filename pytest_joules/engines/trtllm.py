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

Behaviour is taken from TensorRT-LLM's source around 1.2 (cited where used). NOT YET RUN ON A
GPU: this module is tested against a fake tensorrt_llm only.
"""

from __future__ import annotations

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

#: NVIDIA's own install command (https://nvidia.github.io/TensorRT-LLM/installation/linux.html,
#: the 1.2-era page), pinned: PyPI's tensorrt-llm is a wheel stub that downloads the real wheel
#: from https://pypi.nvidia.com at install time (tensorrt_llm-1.2.1.tar.gz: build backend wheel_stub).
INSTALL_COMMAND = 'pip3 install --ignore-installed pip setuptools wheel && pip3 install "tensorrt_llm>=1.2,<1.3"'
INSTALL_HINT = (
    "install TensorRT-LLM 1.2.x as NVIDIA's guide says: its prerequisites (CUDA 13.1, torch 2.9.1 from the "
    f"cu130 index, libopenmpi-dev; see docs/hardware.md), then {INSTALL_COMMAND}"
)
#: engine options (--joules-engine-option); `seed` is accepted because the plugin always passes it
#: (the prompts take theirs from the workload)
OPTIONS = ("tensor_parallel_size", "max_batch_size", "max_num_tokens", "dtype", "end_id", "vocab_size", "seed")

#: the project's dtype names -> TensorRT-LLM's. The LLM API takes "auto" or a name that
#: tensorrt_llm/_utils.py `str_dtype_to_torch` knows; anything else fails its
#: `assert ..., f'Unsupported dtype: {dtype}'` (1.2). Its table has no bf16/fp16/fp32.
DTYPES = {"auto": "auto", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
#: BaseLlmArgs.max_num_tokens default (tensorrt_llm/llmapi/llm_args.py, 1.x)
DEFAULT_MAX_NUM_TOKENS = 8192
#: BuildConfig.max_input_len default, for an engine config.json that does not record it
DEFAULT_MAX_INPUT_LEN = 1024


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ModelDir:
    """What kind of directory `--joules-model` names, and what its config says."""

    path: str
    kind: str  # "engine" or "checkpoint"
    config: dict[str, Any]

    @property
    def build_config(self) -> dict[str, Any]:
        return self.config.get("build_config") or {}

    @property
    def max_positions(self) -> int | None:
        if self.kind == "engine":
            return _int(self.build_config.get("max_seq_len"))
        cfg = self.config.get("text_config") or self.config
        return _int(cfg.get("max_position_embeddings"))

    @property
    def max_input_len(self) -> int | None:
        """The longest prompt an engine takes (checkpoints: no such limit)."""
        if self.kind != "engine":
            return None
        return _int(self.build_config.get("max_input_len")) or DEFAULT_MAX_INPUT_LEN

    @property
    def max_batch_size(self) -> int | None:
        return _int(self.build_config.get("max_batch_size"))

    @property
    def vocab_size(self) -> int | None:
        cfg = self.config.get("pretrained_config") or self.config.get("text_config") or self.config
        return _int(cfg.get("vocab_size"))

    @property
    def eos_id(self) -> int | None:
        value = (self.config.get("text_config") or self.config).get("eos_token_id")
        if isinstance(value, list) and value:
            value = value[0]
        return _int(value)

    @property
    def dtype(self) -> str | None:
        """An engine's build dtype (pretrained_config.dtype); None for checkpoints."""
        if self.kind != "engine":
            return None
        value = (self.config.get("pretrained_config") or {}).get("dtype")
        return str(value) if value else None


@dataclass(frozen=True)
class Parallelism:
    """An engine's `pretrained_config.mapping`: the GPUs it was built for."""

    tp: int = 1
    pp: int = 1
    cp: int = 1

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.cp


def engine_parallelism(model: ModelDir) -> Parallelism:
    """The mapping a TensorRT engine was built with. The LLM API takes the engine's, not the
    tensor_parallel_size argument (`_load_config_from_engine`, tensorrt_llm/llmapi/llm_args.py, 1.x),
    and needs one GPU per rank."""
    mapping = (model.config.get("pretrained_config") or {}).get("mapping") or {}
    sizes = {key: mapping.get(f"{key}_size", 1) for key in ("tp", "pp", "cp")}
    world = mapping.get("world_size")
    bad = {k: v for k, v in sizes.items() if _int(v) is None or v < 1}
    if bad or (world is not None and (_int(world) is None or world < 1)):
        raise ConfigError(f"trtllm engine: {model.path}/config.json has an unreadable pretrained_config.mapping {mapping!r}")
    par = Parallelism(**sizes)
    if world is not None and world != par.world_size:
        raise ConfigError(
            f"trtllm engine: {model.path}/config.json mapping says world_size {world} but tp_size x pp_size x "
            f"cp_size = {par.tp} x {par.pp} x {par.cp}; rebuild the engine"
        )
    return par


def inspect_model_dir(path: str | None) -> ModelDir:
    """Tell an engine dir from a checkpoint dir the way TensorRT-LLM does; ConfigError naming the path otherwise."""
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
            "(config.json with pretrained_config and build_config, rank0.engine) or a Hugging Face checkpoint dir"
        )
    try:
        with open(config_path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"trtllm engine: cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"trtllm engine: {config_path} is not a JSON object")
    # An engine is a config.json with BOTH keys (`get_model_format`, tensorrt_llm/llmapi/llm_args.py,
    # 1.x); with one of them TensorRT-LLM would try to read it as a Hugging Face config and fail.
    engine_keys = [key for key in ("pretrained_config", "build_config") if key in config]
    if len(engine_keys) == 2:
        model = ModelDir(full, "engine", config)
        _check_rank_files(model)
        return model
    if engine_keys:
        missing = "build_config" if engine_keys == ["pretrained_config"] else "pretrained_config"
        raise ConfigError(
            f"trtllm engine: {config_path} has {engine_keys[0]} but no {missing}: a half-written engine "
            "config (was trtllm-build interrupted?); rebuild the engine"
        )
    if "architecture" in config and "dtype" in config:
        raise ConfigError(
            f"trtllm engine: {full} is a TensorRT-LLM checkpoint (converted, not built); build it into an "
            "engine with trtllm-build first, or point --joules-model at the Hugging Face checkpoint"
        )
    if "architectures" in config or "model_type" in config:
        return ModelDir(full, "checkpoint", config)
    raise ConfigError(
        f"trtllm engine: {full}/config.json is neither an engine config (pretrained_config + build_config) "
        "nor a Hugging Face config (architectures / model_type)"
    )


def _check_rank_files(model: ModelDir) -> None:
    ranks = engine_parallelism(model).world_size
    missing = [f"rank{r}.engine" for r in range(ranks) if not os.path.isfile(os.path.join(model.path, f"rank{r}.engine"))]
    if missing:
        raise ConfigError(
            f"trtllm engine: {model.path} is an engine for {ranks} GPU(s) but has no {', '.join(missing)}; "
            "was the build interrupted?"
        )


class TrtllmApi:
    """The narrow seam over tensorrt_llm: the classes this engine uses, imported lazily."""

    def __init__(self, module: Any, engine_llm: Any | None, kv_cache_config: Any,
                 request_error: type[BaseException] = RuntimeError) -> None:
        self.module = module
        self.version = str(getattr(module, "__version__", "unknown"))
        self.LLM = module.LLM
        self.SamplingParams = module.SamplingParams
        self.EngineLLM = engine_llm  # None when this version cannot load engine dirs
        self.KvCacheConfig = kv_cache_config
        #: tensorrt_llm.llmapi.RequestError, a RuntimeError (tensorrt_llm/executor/utils.py)
        self.RequestError = request_error


def load_api() -> TrtllmApi:
    try:
        module = importlib.import_module("tensorrt_llm")
    except Exception as exc:  # native libraries: ImportError, OSError, RuntimeError all happen
        raise EngineUnavailable(f"import tensorrt_llm failed: {type(exc).__name__}: {exc}") from None
    try:
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        kv = llmapi.KvCacheConfig
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailable(f"tensorrt_llm has no llmapi.KvCacheConfig ({exc}); {INSTALL_HINT}") from None
    try:
        engine_llm = importlib.import_module("tensorrt_llm._tensorrt_engine").LLM
    except (ImportError, AttributeError):
        engine_llm = None
    return TrtllmApi(module, engine_llm, kv, getattr(llmapi, "RequestError", RuntimeError))


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


#: request timestamps, in the order they must come
_TIMES = ("arrival_time", "first_scheduled_time", "first_token_time", "last_token_time")


def _timestamp(value: Any) -> float | None:
    """Seconds on the executor's steady clock; None when unset. An unset C++ time point is the
    clock's epoch and reaches Python as timedelta(0) (as issue 12 reads the bindings; not yet seen
    on hardware), so zero means missing, never a time."""
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        seconds = float(value.total_seconds())
    else:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return None
    return seconds if seconds > 0 else None


def timing_of(timing: Any) -> dict[str, float] | None:
    """A request's prefill_s, decode_s and ttft_s from its timing metrics; None when the
    timestamps it has are out of order (arrival <= scheduled <= first token <= last token)."""
    t = {k: _timestamp(getattr(timing, k, None)) for k in _TIMES}
    present = [t[k] for k in _TIMES if t[k] is not None]
    if any(later < earlier for earlier, later in zip(present, present[1:])):
        return None
    found: dict[str, float] = {}
    for key, start, end in (("prefill_s", "first_scheduled_time", "first_token_time"),
                            ("decode_s", "first_token_time", "last_token_time"),
                            ("ttft_s", "arrival_time", "first_token_time")):
        if t[start] is not None and t[end] is not None:
            found[key] = t[end] - t[start]
    return found


def perf_of(output: Any) -> dict[str, float]:
    """One request's perf metrics, read defensively (attribute names vary by version).
    `timing_dropped` = 1 marks a request whose timestamps were out of order (none used)."""
    metrics = getattr(output, "request_perf_metrics", None)
    if metrics is None:
        return {}
    found: dict[str, float] = {}
    timing = getattr(metrics, "timing_metrics", None)
    if timing is not None:
        times = timing_of(timing)
        if times is None:
            found["timing_dropped"] = 1.0
        else:
            found.update(times)
    kv = getattr(metrics, "kv_cache_metrics", None)
    reused = getattr(kv, "num_reused_blocks", None) if kv is not None else None
    if isinstance(reused, int):
        found["reused_kv_blocks"] = float(reused)
    return found


@dataclass(frozen=True)
class Limits:
    """What TensorRT-LLM refuses or shortens, checked before a run (see `TrtllmEngine.check_limits`)."""

    max_positions: int | None  # n_in + n_out (engine: build_config.max_seq_len; checkpoint: max_seq_len passed)
    max_input_len: int | None  # n_in, engine dirs (build_config.max_input_len)
    max_num_tokens: int | None  # n_in, PyTorch backend without chunked prefill


class TrtllmEngine:
    kind = "trtllm"
    simulated = False
    default_meter = "nvml"

    def __init__(self, api: TrtllmApi, llm: Any, model: ModelDir, dtype: str, max_batch_size: int | None,
                 end_id: int, vocab_size: int, gpus: int, limits: Limits | None = None) -> None:
        self._api = api
        self._llm = llm
        self._model = model
        self._dtype = dtype
        self._max_batch = max_batch_size
        self._end_id = end_id
        self._vocab = vocab_size
        self._gpus = gpus
        self.limits = limits or Limits(model.max_positions, model.max_input_len, None)
        self.max_positions = self.limits.max_positions
        self._prompt_cache: dict[tuple[int, int, int], list[list[int]]] = {}

    def identity(self) -> dict[str, str]:
        return {"kind": "trtllm", "model": self._model.path, "dtype": self._dtype,
                "version": self._api.version, "backend": "tensorrt" if self._model.kind == "engine" else "pytorch"}

    def sampling_params(self, n_out: int) -> Any:
        # No min_tokens: ignore_eos already sets the request's end id to -1 (`end_id=-1 if
        # ignore_eos`, tensorrt_llm/executor/base_worker.py, 1.2), so generation runs to max_tokens;
        # min_tokens would only add the PyTorch sampler's per-step penalty, which with end id -1
        # bans the last vocabulary entry (upstream issue #12324, fixed by PR #12358 after 1.2).
        # end_id is still required without a tokenizer (`_prepare_sampling_params`, llmapi/llm.py).
        return self._api.SamplingParams(
            max_tokens=n_out, ignore_eos=True, detokenize=False, return_perf_metrics=True, end_id=self._end_id,
        )

    def prompts(self, workload: Workload) -> list[list[int]]:
        key = (workload.n_in, workload.requests, workload.seed)
        if key not in self._prompt_cache:
            self._prompt_cache = {key: random_prompts(workload, self._vocab, [self._end_id])}
        return self._prompt_cache[key]

    def check_limits(self, workload: Workload) -> None:
        """ConfigError, naming the limit and the fix, for a workload TensorRT-LLM would refuse
        mid-run or silently shorten."""
        workload.check_positions(self.limits.max_positions, self.kind)
        limit = self.limits.max_input_len
        if limit is not None and workload.n_in > limit:
            # LlmRequest::validate: "Prompt length (N) exceeds maximum input length (M)", raised in the
            # executor as a RequestError (cpp/tensorrt_llm/batch_manager/llmRequest.cpp, 1.2)
            raise ConfigError(
                f"n_in = {workload.n_in} exceeds the max_input_len of {limit} the engine in {self._model.path} "
                "was built with; use shorter prompts, or rebuild with a larger trtllm-build --max_input_len"
            )
        limit = self.limits.max_num_tokens
        if limit is not None and workload.n_in > limit:
            # `_check_arguments` (llmapi/llm.py, 1.2): without chunked prefill the PyTorch backend refuses
            # a prompt longer than max_num_tokens with a ValueError
            raise ConfigError(
                f"n_in = {workload.n_in} exceeds the PyTorch backend's max_num_tokens of {limit}; use shorter "
                f"prompts, or raise it with --joules-engine-option max_num_tokens={workload.n_in}"
            )

    def run(self, workload: Workload) -> EngineRun:
        self.check_limits(workload)
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
            outputs = self._guarded(lambda: list(self._llm.generate(prompts, params, use_tqdm=False)))
        else:
            outputs = self._guarded(lambda: self._run_limited(prompts, params, limit))
        seconds = time.perf_counter() - t0
        return self._account(workload, outputs, seconds, limit)

    def _guarded(self, call: Callable[[], list[Any]]) -> list[Any]:
        """Run `call`; a refusal or failure from tensorrt_llm (ValueError from the argument checks,
        RequestError from the executor) becomes a WorkloadMismatch carrying its message."""
        try:
            return call()
        except (ValueError, self._api.RequestError, RuntimeError) as exc:
            # the first line only: C++ errors carry a stack trace on the lines after it
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            message = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
        raise WorkloadMismatch(f"engine 'trtllm' did not run the workload: tensorrt_llm failed it: {message}")

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
            elif outs[-1] < workload.n_out:
                # `_deduce_max_tokens` (executor/base_worker.py, 1.2) lowers max_tokens to max_seq_len -
                # prompt length with only a warning in the log
                problems.append(
                    f"request {i} stopped at {outs[-1]} of {workload.n_out} tokens: tensorrt_llm lowered max_tokens "
                    f"to its max_seq_len minus the prompt, so it runs with a max_seq_len below n_in + n_out = "
                    f"{workload.n_in + workload.n_out} (see its log)"
                )
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
        dropped = sum(1 for p in perf if "timing_dropped" in p)
        if dropped:
            info["timing_dropped"] = dropped  # requests whose timestamps were out of order
        if any("reused_kv_blocks" in p for p in perf):
            info["reused_kv_blocks"] = int(sum(p.get("reused_kv_blocks", 0.0) for p in perf))
        # per request, for the latency figures: TTFT from arrival, TPOT = decode time / (n_out - 1)
        ttft = [p["ttft_s"] for p in perf if "ttft_s" in p]
        tpot = [p["decode_s"] / (workload.n_out - 1) for p in perf if "decode_s" in p] if workload.n_out > 1 else []
        return EngineRun(input_tokens=ins, output_tokens=outs, seconds=seconds, phases=phases, info=info,
                         ttft_s=ttft, tpot_s=tpot)

    def sync(self) -> None:
        # generate() returns only after the last decode step: the GPU work is done.
        pass

    def devices(self) -> list[DeviceRef]:
        # TRT-LLM runs rank r on visible CUDA device r: one per rank of the engine or tensor_parallel_size.
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
    dtype = _dtype(spec, opts, model)
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


def _options(spec: EngineSpec) -> dict[str, Any]:
    """The engine options, checked: ConfigError for an unknown key or a bad number or dtype."""
    opts = dict(spec.options)
    reject_unknown_options("trtllm", opts, OPTIONS)
    opts["tensor_parallel_size"] = _positive(opts.get("tensor_parallel_size", 1), "tensor_parallel_size",
                                             "GPUs to shard over")
    if "max_num_tokens" in opts:
        opts["max_num_tokens"] = _positive(opts["max_num_tokens"], "max_num_tokens", "the longest prompt the "
                                           "PyTorch backend takes")
    raw = opts.get("dtype") or spec.dtype  # the engine option is the more specific setting (as for hf)
    if raw is not None and str(raw).lower() not in DTYPES:
        raise ConfigError(f"trtllm engine: unknown dtype {raw!r}; use auto, bf16, fp16 or fp32")
    return opts


def _positive(value: Any, name: str, meaning: str) -> int:
    try:
        number = None if isinstance(value, (bool, float)) else int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ConfigError(f"trtllm engine option {name} must be a positive integer ({meaning}), got {value!r}")
    return number


def _dtype(spec: EngineSpec, opts: dict[str, Any], model: ModelDir) -> str:
    """The dtype as the project names it (bf16, fp16, fp32, auto); an engine dir's is its build dtype."""
    raw = opts.get("dtype") or spec.dtype
    wanted = DTYPES[str(raw).lower()] if raw is not None else "auto"
    if model.kind != "engine":
        return _SHORT.get(wanted, wanted)
    built = model.dtype or wanted  # an engine's dtype is fixed when it is built
    if wanted not in ("auto", built):
        raise ConfigError(
            f"dtype {raw} does not apply: the engine in {model.path} was built for {built}; drop the dtype "
            "or rebuild the engine"
        )
    return _SHORT.get(built, built) if built != "auto" else "engine"


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
    if tuple(parts) < (1, 3):
        note = "engine dirs and checkpoints"
    else:
        note = ("checkpoints; engine dirs only if this version still has tensorrt_llm._tensorrt_engine "
                "(upstream removed the TensorRT backend after 1.2; pytest-joules targets 1.2.x)")
    return True, f"tensorrt-llm {version}: {note}; needs an NVIDIA GPU"
