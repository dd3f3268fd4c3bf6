"""The trtllm engine at work: the seam over tensorrt_llm (`TrtllmApi`, imported lazily), the
workload run as token-id prompts with exact output lengths (at most `max_batch_size` in flight when
the workload asks for fewer than the LLM's own), every output checked, and each request's perf
metrics read into phases.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, EngineUnavailable, WorkloadMismatch
from .base import DeviceRef
from .prompts import load_tokenizer, prompt_ids
from .trtllm_config import INSTALL_HINT, ModelDir
from .workload import EngineRun, Workload


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
    present = [v for v in (t[k] for k in _TIMES) if v is not None]
    if any(later < earlier for earlier, later in zip(present, present[1:])):
        return None
    found: dict[str, float] = {}
    for key, start, end in (("prefill_s", "first_scheduled_time", "first_token_time"),
                            ("decode_s", "first_token_time", "last_token_time"),
                            ("ttft_s", "arrival_time", "first_token_time")):
        begin, finish = t[start], t[end]
        if begin is not None and finish is not None:
            found[key] = finish - begin
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
    #: a mix runs as one in-flight batch (a SamplingParams per request); requests are sent at once
    serves_over_time = False
    over_time_refusal = "it sends a workload's requests to the LLM API at once; serving at a rate is not built yet"

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
        self._prompt_cache: dict[tuple[Any, ...], list[list[int]]] = {}
        self._encode: Any = None

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
        key = (workload.n_in, workload.requests, workload.seed, workload.mix, workload.prompts)
        if key not in self._prompt_cache:
            if workload.prompts is not None and self._encode is None:  # the model directory's tokenizer
                self._encode = load_tokenizer(self._model.path)
            self._prompt_cache = {key: prompt_ids(workload, self._vocab, [self._end_id], self._encode,
                                                  engine=f"the trtllm engine ({self._model.path} has no tokenizer files)")}
        return self._prompt_cache[key]

    def check_limits(self, workload: Workload) -> None:
        """ConfigError, naming the limit and the fix, for a workload TensorRT-LLM would refuse
        mid-run or silently shorten."""
        workload.check_positions(self.limits.max_positions, self.kind)
        n_in = max(n for n, _ in set(workload.lengths()))  # a mix's longest prompt
        limit = self.limits.max_input_len
        if limit is not None and n_in > limit:
            # LlmRequest::validate: "Prompt length (N) exceeds maximum input length (M)", raised in the
            # executor as a RequestError (cpp/tensorrt_llm/batch_manager/llmRequest.cpp, 1.2)
            raise ConfigError(
                f"n_in = {n_in} exceeds the max_input_len of {limit} the engine in {self._model.path} "
                "was built with; use shorter prompts, or rebuild with a larger trtllm-build --max_input_len"
            )
        limit = self.limits.max_num_tokens
        if limit is not None and n_in > limit:
            # `_check_arguments` (llmapi/llm.py, 1.2): without chunked prefill the PyTorch backend refuses
            # a prompt longer than max_num_tokens with a ValueError
            raise ConfigError(
                f"n_in = {n_in} exceeds the PyTorch backend's max_num_tokens of {limit}; use shorter "
                f"prompts, or raise it with --joules-engine-option max_num_tokens={n_in}"
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
        params: Any = self.sampling_params(workload.n_out)
        if workload.mix is not None:  # the LLM API takes one SamplingParams per prompt (llmapi/llm.py, generate)
            params = [self.sampling_params(m) for _, m in workload.lengths()]
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
        for i, prompt in enumerate(prompts):
            if len(pending) >= limit:
                outputs.append(pending.popleft().result())
            pending.append(self._llm.generate_async(prompt, params[i] if isinstance(params, list) else params))
        while pending:
            outputs.append(pending.popleft().result())
        return outputs

    def _account(self, workload: Workload, outputs: list[Any], seconds: float, limit: int | None) -> EngineRun:
        ins: list[int] = []
        outs: list[int] = []
        problems: list[str] = []
        perf: list[dict[str, float]] = []
        wanted = workload.lengths()
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
            elif i < len(wanted) and outs[-1] < wanted[i][1]:
                # `_deduce_max_tokens` (executor/base_worker.py, 1.2) lowers max_tokens to max_seq_len -
                # prompt length with only a warning in the log
                problems.append(
                    f"request {i} stopped at {outs[-1]} of {wanted[i][1]} tokens: tensorrt_llm lowered max_tokens "
                    f"to its max_seq_len minus the prompt, so it runs with a max_seq_len below n_in + n_out = "
                    f"{sum(wanted[i])} (see its log)"
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
