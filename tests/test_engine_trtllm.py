"""The trtllm engine's logic against a fake `tensorrt_llm` module injected through sys.modules."""

from __future__ import annotations

import datetime
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_joules.engines import trtllm
from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError, EngineUnavailable, WorkloadMismatch
from pytest_joules.workload import Workload


# -- a fake tensorrt_llm ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class SamplingParams:
    max_tokens: int = 32
    min_tokens: int | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    return_perf_metrics: bool = False
    end_id: int | None = None


@dataclass
class KvCacheConfig:
    enable_block_reuse: bool = True


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str
    request_perf_metrics: Any = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[Completion]


class Future:
    def __init__(self, value, log, llm):
        self.value, self.log, self.llm = value, log, llm

    def result(self):
        self.llm.in_flight -= 1
        return self.value


def perf(first_sched=1.0, first_tok=1.25, last_tok=2.0, reused=0):
    td = datetime.timedelta
    timing = types.SimpleNamespace(arrival_time=td(seconds=0.5), first_scheduled_time=td(seconds=first_sched),
                                   first_token_time=td(seconds=first_tok), last_token_time=td(seconds=last_tok))
    return types.SimpleNamespace(timing_metrics=timing, kv_cache_metrics=types.SimpleNamespace(num_reused_blocks=reused))


@dataclass
class FakeLLM:
    model: str
    skip_tokenizer_init: bool = False
    kv_cache_config: Any = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_batch_size: int | None = None
    generate_calls: list = field(default_factory=list)
    async_calls: list = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    short_by: int = 0
    finish_reason: str = "length"
    shut: bool = False
    backend = "pytorch"

    def _one(self, prompt, sp):
        assert isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)
        n = sp.max_tokens - self.short_by
        return RequestOutput(list(prompt), [Completion(list(range(n)), self.finish_reason, perf())])

    def generate(self, inputs, sampling_params=None, use_tqdm=True):
        self.generate_calls.append((inputs, sampling_params))
        assert isinstance(inputs[0], list), "a batch of token prompts is a list of lists"
        return [self._one(p, sampling_params) for p in inputs]

    def generate_async(self, inputs, sampling_params=None):
        self.async_calls.append((inputs, sampling_params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return Future(self._one(inputs, sampling_params), self.async_calls, self)

    def shutdown(self):
        self.shut = True


class EngineLLM(FakeLLM):
    backend = "tensorrt"


@pytest.fixture
def fake_trtllm(monkeypatch):
    """Install the fake package; returns a record of the LLMs it built."""
    built: list[FakeLLM] = []

    def make(cls):
        def factory(**kwargs):
            llm = cls(**kwargs)
            built.append(llm)
            return llm

        return factory

    root = types.ModuleType("tensorrt_llm")
    root.__version__ = "1.2.1"
    root.LLM = make(FakeLLM)
    root.SamplingParams = SamplingParams
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.KvCacheConfig = KvCacheConfig
    engine_mod = types.ModuleType("tensorrt_llm._tensorrt_engine")
    engine_mod.LLM = make(EngineLLM)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", root)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", llmapi)
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", engine_mod)
    return types.SimpleNamespace(built=built, root=root, engine_mod=engine_mod)


def engine_dir(tmp_path, max_seq_len=2048, max_batch_size=16):
    d = tmp_path / "engine"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "version": "1.2.1",
        "pretrained_config": {"architecture": "LlamaForCausalLM", "dtype": "bfloat16", "vocab_size": 32000},
        "build_config": {"max_seq_len": max_seq_len, "max_batch_size": max_batch_size},
    }))
    (d / "rank0.engine").write_bytes(b"\0")
    return d


def checkpoint_dir(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "max_position_embeddings": 131072, "eos_token_id": [128001, 128009],
    }))
    return d


def make(path, gpus=1, **options):
    return trtllm.build(EngineSpec("trtllm", model=str(path), options=options), gpu_count=lambda: gpus)


# -- model directories ----------------------------------------------------------------------------


def test_engine_dir_uses_the_tensorrt_engine_llm(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path))
    llm = fake_trtllm.built[-1]
    assert isinstance(llm, EngineLLM)
    assert llm.kv_cache_config == KvCacheConfig(enable_block_reuse=False)
    assert llm.skip_tokenizer_init is True and llm.max_batch_size == 16
    assert e.max_positions == 2048
    assert e.identity() == {"kind": "trtllm", "model": str(tmp_path / "engine"), "dtype": "bfloat16",
                            "version": "1.2.1", "backend": "tensorrt"}


def test_checkpoint_uses_the_pytorch_llm(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path), max_batch_size=8)
    llm = fake_trtllm.built[-1]
    assert type(llm) is FakeLLM and llm.max_batch_size == 8 and llm.dtype == "auto"
    assert llm.kv_cache_config.enable_block_reuse is False
    assert e.max_positions == 131072 and e.identity()["backend"] == "pytorch"


def test_sampling_params_actually_passed(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    w = Workload(32, 7, requests=3, seed=5)
    run = e.run(w)
    run.verify(w, "trtllm")
    prompts, sp = fake_trtllm.built[-1].generate_calls[-1]
    assert sp == SamplingParams(max_tokens=7, min_tokens=7, ignore_eos=True, detokenize=False,
                                return_perf_metrics=True, end_id=128001)
    assert len(prompts) == 3 and all(len(p) == 32 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 3
    assert not any(128001 in p for p in prompts)
    assert all(0 <= i < 128256 for p in prompts for i in p)


def test_perf_metrics_become_phases_and_info(fake_trtllm, tmp_path):
    run = make(checkpoint_dir(tmp_path)).run(Workload(16, 4, requests=2))
    assert run.phases == {"prefill_s": pytest.approx(0.25), "decode_s": pytest.approx(0.75)}
    assert run.info["ttft_s"] == pytest.approx(0.75) and run.info["reused_kv_blocks"] == 0


def test_missing_perf_metrics_are_tolerated():
    assert trtllm.perf_of(types.SimpleNamespace()) == {}
    partial = types.SimpleNamespace(request_perf_metrics=types.SimpleNamespace(timing_metrics=None))
    assert trtllm.perf_of(partial) == {}


def test_max_batch_size_below_the_llms_caps_requests_in_flight(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path, max_batch_size=16))
    w = Workload(8, 4, requests=7, max_batch_size=3)
    run = e.run(w)
    run.verify(w, "trtllm")
    llm = fake_trtllm.built[-1]
    assert len(llm.async_calls) == 7 and llm.max_in_flight == 3 and not llm.generate_calls
    assert run.info["in_flight_limit"] == 3


def test_max_batch_size_above_the_engines_is_a_config_error(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path, max_batch_size=4))
    with pytest.raises(ConfigError, match="max_batch_size 8 exceeds the engine's max_batch_size 4"):
        e.run(Workload(8, 4, requests=9, max_batch_size=8))
    with pytest.raises(ConfigError, match="exceeds the 4 the engine"):
        make(tmp_path / "engine", max_batch_size=32)


def test_too_long_for_the_engine_is_a_config_error(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path, max_seq_len=128))
    with pytest.raises(ConfigError, match="exceeds trtllm's maximum of 128 positions"):
        e.run(Workload(100, 40))


def test_short_output_is_a_workload_mismatch(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    fake_trtllm.built[-1].short_by = 1
    w = Workload(8, 5, requests=2)
    with pytest.raises(WorkloadMismatch, match=r"generated \[4\] tokens, asked for exactly 5"):
        e.run(w).verify(w, "trtllm")


def test_stop_finish_reason_is_a_workload_mismatch(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    fake_trtllm.built[-1].finish_reason = "stop"
    with pytest.raises(WorkloadMismatch, match="finished with 'stop', not 'length'"):
        e.run(Workload(8, 5))


def test_devices_fall_back_to_cuda_indices_without_torch_cuda(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails: indices only
    e = make(checkpoint_dir(tmp_path), gpus=2, tensor_parallel_size=2)
    assert [(d.index, d.uuid) for d in e.devices()] == [(0, None), (1, None)]


def test_close_shuts_the_llm_down(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    e.close()
    assert fake_trtllm.built[-1].shut
    e.close()  # twice is fine


# -- errors -----------------------------------------------------------------------------------------


def test_missing_package(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    monkeypatch.setattr(trtllm.importlib.util, "find_spec", lambda name: None)  # as if not installed
    with pytest.raises(EngineUnavailable, match=r"not installed; install pytest-joules\[trtllm\] \(tensorrt-llm>=1.2,<1.3"):
        make(checkpoint_dir(tmp_path))


def test_no_gpu(fake_trtllm, tmp_path):
    with pytest.raises(EngineUnavailable, match="needs an NVIDIA GPU"):
        make(checkpoint_dir(tmp_path), gpus=0)


def test_no_gpu_beats_a_bad_path(fake_trtllm, tmp_path):
    """A CPU-only CI configured for a GPU model path skips instead of erroring."""
    with pytest.raises(EngineUnavailable, match="needs an NVIDIA GPU"):
        make(tmp_path / "not-here", gpus=0)


def test_import_failure_names_the_cause(monkeypatch, tmp_path):
    broken = types.ModuleType("tensorrt_llm")  # has no LLM: stands for a half-broken install
    monkeypatch.setitem(sys.modules, "tensorrt_llm", broken)

    def boom(name):
        if name == "tensorrt_llm":
            raise OSError("libnvinfer.so.10: cannot open shared object file")
        raise ImportError(name)

    monkeypatch.setattr(trtllm.importlib, "import_module", boom)
    with pytest.raises(EngineUnavailable, match="import tensorrt_llm failed: OSError: libnvinfer"):
        make(checkpoint_dir(tmp_path))


def test_version_without_engine_dirs(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.delattr(fake_trtllm.engine_mod, "LLM")
    fake_trtllm.root.__version__ = "1.3.0"
    with pytest.raises(EngineUnavailable, match="1.3.0 cannot load prebuilt engine dirs"):
        make(engine_dir(tmp_path))
    assert make(checkpoint_dir(tmp_path)).identity()["version"] == "1.3.0"


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "has no config.json"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")), "cannot read"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"architecture": "LlamaForCausalLM"}')),
         "must be built into an engine"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"build_config": {}}')), "no rank0.engine"),
    ],
)
def test_bad_model_dirs_name_the_path(fake_trtllm, tmp_path, setup, words):
    path = tmp_path / "model"
    setup(path)
    with pytest.raises(ConfigError, match=words) as exc:
        make(path)
    assert str(path) in str(exc.value)


def test_no_model_given(fake_trtllm):
    with pytest.raises(ConfigError, match="needs --joules-model"):
        trtllm.build(EngineSpec("trtllm"), gpu_count=lambda: 1)


def test_llm_constructor_error_is_unavailable(fake_trtllm, tmp_path):
    def refuse(**kwargs):
        raise ValueError("got invalid argument: kv_cache_config")

    fake_trtllm.root.LLM = refuse
    with pytest.raises(EngineUnavailable, match="could not load .*invalid argument"):
        make(checkpoint_dir(tmp_path))


def test_tensor_parallel_needs_enough_gpus(fake_trtllm, tmp_path):
    with pytest.raises(EngineUnavailable, match="tensor_parallel_size 2 needs 2 GPUs; 1 visible"):
        make(checkpoint_dir(tmp_path), tensor_parallel_size=2)


def test_unknown_engine_options_are_a_config_error_listing_the_accepted_ones(fake_trtllm, tmp_path):
    path = checkpoint_dir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        make(path, bogus=1, tensor_parallel=2)
    assert str(exc.value) == (
        "unknown trtllm engine option(s) 'bogus', 'tensor_parallel'; the trtllm engine accepts "
        "tensor_parallel_size, max_batch_size, end_id, vocab_size, seed"
    )
    assert make(path, seed=21, tensor_parallel_size=1).identity()["kind"] == "trtllm"


def test_a_typo_in_the_options_fails_even_where_trtllm_would_skip(monkeypatch, tmp_path):
    """An option is wrong on every machine: a CPU-only CI must not hide it behind a skip."""
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    monkeypatch.setattr(trtllm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="unknown trtllm engine option"):
        make(checkpoint_dir(tmp_path), gpus=0, bogus=1)


@pytest.mark.parametrize("tp", [0, -1, "two", 1.5, True])
def test_tensor_parallel_size_must_be_a_positive_integer(fake_trtllm, tmp_path, tp):
    with pytest.raises(ConfigError, match="tensor_parallel_size must be a positive integer"):
        make(checkpoint_dir(tmp_path), tensor_parallel_size=tp)


def test_probe_without_the_package():
    ok, reason = trtllm.probe()
    try:
        import importlib.metadata as md

        md.version("tensorrt-llm")
    except Exception:
        assert not ok and "not installed" in reason
    else:
        assert ok and "tensorrt-llm" in reason
