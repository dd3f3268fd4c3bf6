"""The trtllm engine's logic against a fake `tensorrt_llm` module injected through sys.modules.

The fake behaves like TensorRT-LLM 1.2 where the engine depends on it (sources cited in
pytest_joules/engines/trtllm*.py): it asserts on a dtype it does not know, takes an engine's
parallelism from its config.json, refuses over-long prompts the way each backend does, lowers
max_tokens to max_seq_len minus the prompt, stamps an unset time as timedelta(0) and the arrival
time only when the LLM itself was built with return_perf_metrics, and raises RequestError (a
RuntimeError) from the executor. None of this has run against the real library.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_joules.engines import trtllm
from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError, EngineUnavailable, WorkloadMismatch
from pytest_joules.engines.workload import Workload

# -- a fake tensorrt_llm ----------------------------------------------------------------------------

TD = datetime.timedelta


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


class RequestError(RuntimeError):
    """tensorrt_llm.llmapi.RequestError: a request the executor failed."""


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
    def __init__(self, llm, make):
        self.llm, self.make = llm, make

    def result(self):
        self.llm.in_flight -= 1
        if self.llm.fail_in == "result":
            raise self.llm.failure
        return self.make()  # the executor's errors surface here, as in the real future


def perf(arrival=0.5, first_sched=1.0, first_tok=1.25, last_tok=2.0, reused=0):
    timing = types.SimpleNamespace(arrival_time=TD(seconds=arrival), first_scheduled_time=TD(seconds=first_sched),
                                   first_token_time=TD(seconds=first_tok), last_token_time=TD(seconds=last_tok))
    return types.SimpleNamespace(timing_metrics=timing, kv_cache_metrics=types.SimpleNamespace(num_reused_blocks=reused))


DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass
class FakeLLM:
    model: str
    skip_tokenizer_init: bool = False
    kv_cache_config: Any = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    return_perf_metrics: bool = False
    enable_chunked_prefill: bool = False
    generate_calls: list = field(default_factory=list)
    async_calls: list = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    short_by: int = 0
    finish_reason: str = "length"
    shut: bool = False
    timing: dict = field(default_factory=dict)  # perf() overrides
    inferred_max_seq_len: int | None = None  # what the library would pick without max_seq_len
    banned_ids: set = field(default_factory=set)
    fail_in: str | None = None  # "generate", "generate_async" or "result"
    failure: Exception = field(default_factory=lambda: RequestError("Encountered an error in forwardAsync"))
    backend = "pytorch"

    def __post_init__(self):
        # str_dtype_to_torch: assert ret is not None, f'Unsupported dtype: {dtype}'
        assert self.dtype in DTYPES, f"Unsupported dtype: {self.dtype}"
        with open(os.path.join(self.model, "config.json")) as fh:
            self.config = json.load(fh)
        self.vocab = self.config.get("vocab_size", 32000)

    def _seq_len(self):
        return self.max_seq_len or self.inferred_max_seq_len or self.config.get("max_position_embeddings")

    def _check_arguments(self, prompt, sp):
        # llm.py _check_arguments, PyTorch backend: prompt vs max_num_tokens unless chunked prefill
        limit = self.max_num_tokens or 8192
        if not self.enable_chunked_prefill and len(prompt) > limit:
            raise ValueError(f"The sum of prompt length ({float(len(prompt))}), query length (0) should not exceed "
                             f"max_num_tokens ({limit})")

    def _validate(self, prompt, sp):
        """The executor's checks, raised when the result is read."""

    def _one(self, prompt, sp):
        assert isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)
        self._validate(prompt, sp)
        if sp.min_tokens and sp.ignore_eos:
            self.banned_ids.add(self.vocab - 1)  # min-length penalty on end id -1 (upstream #12324)
        # _deduce_max_tokens: max_tokens lowered to max_seq_len - prompt length, with a warning only
        n = min(sp.max_tokens, self._seq_len() - len(prompt)) - self.short_by
        stamps = dict(arrival=0.5 if self.return_perf_metrics else 0.0)  # unset arrival: timedelta(0)
        stamps.update(self.timing)
        return RequestOutput(list(prompt), [Completion(list(range(n)), self.finish_reason, perf(**stamps))])

    def generate(self, inputs, sampling_params=None, use_tqdm=True):
        self.generate_calls.append((inputs, sampling_params))
        assert isinstance(inputs[0], list), "a batch of token prompts is a list of lists"
        if self.fail_in == "generate":
            raise self.failure
        # one SamplingParams for all, or a list with one per prompt (`generate`, llmapi/llm.py)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(inputs)
        assert len(params) == len(inputs)
        for p, sp in zip(inputs, params):
            self._check_arguments(p, sp)
        return [self._one(p, sp) for p, sp in zip(inputs, params)]

    def generate_async(self, inputs, sampling_params=None):
        self.async_calls.append((inputs, sampling_params))
        if self.fail_in == "generate_async":
            raise self.failure
        self._check_arguments(inputs, sampling_params)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return Future(self, lambda: self._one(inputs, sampling_params))

    def shutdown(self):
        self.shut = True


class EngineLLM(FakeLLM):
    backend = "tensorrt"

    def __post_init__(self):
        super().__post_init__()
        build, pretrained = self.config["build_config"], self.config["pretrained_config"]
        tp = pretrained.get("mapping", {}).get("tp_size", 1)
        if self.tensor_parallel_size not in (1, tp):  # _load_config_from_engine
            raise ValueError(f"tp_size {self.tensor_parallel_size} is not consistent with the engine's tp_size {tp}")
        self.tensor_parallel_size = tp
        self.vocab = pretrained["vocab_size"]
        self.max_input_len = build.get("max_input_len", 1024)
        self.max_seq_len = self.max_seq_len or build["max_seq_len"]

    def _check_arguments(self, prompt, sp):
        # llm.py _check_arguments, TensorRT backend: prompt + max_tokens vs the engine's max_seq_len
        if len(prompt) + sp.max_tokens > self.config["build_config"]["max_seq_len"]:
            raise ValueError(f"The sum of prompt length ({float(len(prompt))}) and query length (0) max_tokens "
                             f"({sp.max_tokens}) should not exceed max_seq_len ({self.max_seq_len})")

    def _validate(self, prompt, sp):
        if len(prompt) > self.max_input_len:  # LlmRequest::validate
            raise RequestError(f"Prompt length ({len(prompt)}) exceeds maximum input length ({self.max_input_len}).")


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
    llmapi.RequestError = RequestError
    engine_mod = types.ModuleType("tensorrt_llm._tensorrt_engine")
    engine_mod.LLM = make(EngineLLM)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", root)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", llmapi)
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", engine_mod)
    return types.SimpleNamespace(built=built, root=root, engine_mod=engine_mod)


def engine_dir(tmp_path, max_seq_len=2048, max_batch_size=16, max_input_len=1024, tp=1, pp=1, ranks=None,
               name="engine", **config):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "version": "1.2.1",
        "pretrained_config": {"architecture": "LlamaForCausalLM", "dtype": "bfloat16", "vocab_size": 32000,
                              "mapping": {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}},
        "build_config": {"max_seq_len": max_seq_len, "max_batch_size": max_batch_size,
                         "max_input_len": max_input_len},
        **config,
    }))
    for rank in range(tp * pp if ranks is None else ranks):
        (d / f"rank{rank}.engine").write_bytes(b"\0")
    return d


def checkpoint_dir(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "max_position_embeddings": 131072, "eos_token_id": [128001, 128009],
    }))
    return d


def make(path, gpus=1, spec_dtype=None, **options):
    spec = EngineSpec("trtllm", model=str(path), dtype=spec_dtype, options=options)
    return trtllm.build(spec, gpu_count=lambda: gpus)


# -- model directories ----------------------------------------------------------------------------


def test_engine_dir_uses_the_tensorrt_engine_llm(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path))
    llm = fake_trtllm.built[-1]
    assert isinstance(llm, EngineLLM)
    assert llm.kv_cache_config == KvCacheConfig(enable_block_reuse=False)
    assert llm.skip_tokenizer_init is True and llm.max_batch_size == 16
    assert e.max_positions == 2048
    assert e.identity() == {"kind": "trtllm", "model": str(tmp_path / "engine"), "dtype": "bf16",
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
    assert sp == SamplingParams(max_tokens=7, ignore_eos=True, detokenize=False,
                                return_perf_metrics=True, end_id=128001)
    assert len(prompts) == 3 and all(len(p) == 32 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 3
    assert not any(128001 in p for p in prompts)
    assert all(0 <= i < 128256 for p in prompts for i in p)


def test_perf_metrics_become_phases_and_info(fake_trtllm, tmp_path):
    run = make(checkpoint_dir(tmp_path)).run(Workload(16, 4, requests=2))
    assert run.phases == {"prefill_s": pytest.approx(0.25), "decode_s": pytest.approx(0.75)}
    assert run.info["ttft_s"] == pytest.approx(0.75) and run.info["reused_kv_blocks"] == 0
    assert "timing_dropped" not in run.info
    # and per request, for the latency figures: TPOT = decode 0.75 s over the 3 tokens after the first
    assert run.ttft_s == pytest.approx([0.75, 0.75]) and run.tpot_s == pytest.approx([0.25, 0.25])


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
    with pytest.raises(WorkloadMismatch, match=r"stopped at 4 of 5 tokens"):
        e.run(w)


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


# -- 1. dtype names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("given, passed, shown", [("bf16", "bfloat16", "bf16"), ("fp16", "float16", "fp16"),
                                                  ("FP32", "float32", "fp32"), ("bfloat16", "bfloat16", "bf16"),
                                                  ("auto", "auto", "auto")])
def test_dtype_names_are_mapped_to_tensorrt_llms(fake_trtllm, tmp_path, given, passed, shown):
    e = make(checkpoint_dir(tmp_path), spec_dtype=given)  # joules sweep --dtype
    assert fake_trtllm.built[-1].dtype == passed and e.identity()["dtype"] == shown


def test_dtype_engine_option_wins_over_the_spec(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path), spec_dtype="fp32", dtype="bf16")
    assert fake_trtllm.built[-1].dtype == "bfloat16" and e.identity()["dtype"] == "bf16"


@pytest.mark.parametrize("bad", ["int8", "fp8", "half-ish"])
def test_unknown_dtype_is_a_config_error_before_anything_loads(fake_trtllm, tmp_path, bad):
    with pytest.raises(ConfigError, match=rf"unknown dtype '{bad}'; use auto, bf16, fp16 or fp32"):
        make(checkpoint_dir(tmp_path), spec_dtype=bad)
    assert not fake_trtllm.built


def test_a_dtype_the_engine_was_not_built_for_is_a_config_error(fake_trtllm, tmp_path):
    path = engine_dir(tmp_path)
    with pytest.raises(ConfigError, match="dtype fp16 does not apply: the engine .* was built for bfloat16"):
        make(path, spec_dtype="fp16")
    assert make(path, spec_dtype="bf16").identity()["dtype"] == "bf16"


def test_an_assertion_from_the_llm_constructor_is_unavailable_not_a_traceback(fake_trtllm, tmp_path):
    def refuse(**kwargs):
        raise AssertionError("Pre SM 80 GPUs do not support bfloat16")

    fake_trtllm.root.LLM = refuse
    with pytest.raises(EngineUnavailable, match="could not load .*AssertionError: Pre SM 80"):
        make(checkpoint_dir(tmp_path), spec_dtype="bf16")


# -- 2. tensor parallelism of engine dirs ------------------------------------------------------------


def test_an_engine_dirs_parallelism_comes_from_its_mapping(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    e = make(engine_dir(tmp_path, tp=2), gpus=4)
    assert fake_trtllm.built[-1].tensor_parallel_size == 2
    assert [d.index for d in e.devices()] == [0, 1]  # the meter reads both GPUs, not one


def test_pipeline_ranks_count_as_gpus_too(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    e = make(engine_dir(tmp_path, tp=2, pp=2), gpus=4)
    assert [d.index for d in e.devices()] == [0, 1, 2, 3]


def test_an_engine_for_more_gpus_than_visible_is_unavailable(fake_trtllm, tmp_path):
    with pytest.raises(EngineUnavailable, match=r"built for 2 GPUs; 1 visible"):
        make(engine_dir(tmp_path, tp=2), gpus=1)
    assert not fake_trtllm.built


def test_a_tensor_parallel_size_the_engine_was_not_built_with_is_a_config_error(fake_trtllm, tmp_path):
    path = engine_dir(tmp_path, tp=2)
    with pytest.raises(ConfigError, match="tensor_parallel_size 4 does not match the tp_size 2"):
        make(path, gpus=4, tensor_parallel_size=4)
    make(path, gpus=2, tensor_parallel_size=2)  # the engine's own value is fine


def test_an_inconsistent_mapping_is_a_config_error(fake_trtllm, tmp_path):
    path = engine_dir(tmp_path, tp=2)
    config = json.loads((path / "config.json").read_text())
    config["pretrained_config"]["mapping"]["world_size"] = 3
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="world_size 3 but tp_size x pp_size x cp_size = 2 x 1 x 1"):
        make(path, gpus=4)


# -- 3. the engine's input limit -------------------------------------------------------------------


def test_a_prompt_over_the_engines_max_input_len_is_refused_before_it_runs(fake_trtllm, tmp_path):
    e = make(engine_dir(tmp_path, max_input_len=64))
    with pytest.raises(ConfigError, match=r"n_in = 100 exceeds the max_input_len of 64 the engine in .* was built "
                                          r"with; .* --max_input_len"):
        e.run(Workload(100, 8))
    assert not fake_trtllm.built[-1].generate_calls
    e.run(Workload(64, 8)).verify(Workload(64, 8), "trtllm")


def test_an_engine_without_max_input_len_gets_the_build_default(fake_trtllm, tmp_path):
    path = engine_dir(tmp_path, max_seq_len=4096)
    config = json.loads((path / "config.json").read_text())
    del config["build_config"]["max_input_len"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="max_input_len of 1024"):
        make(path).run(Workload(1025, 8))


# -- 4. checkpoint (PyTorch backend) prompt limit and max_seq_len ------------------------------------


def test_a_prompt_over_max_num_tokens_is_refused_before_it_runs(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    with pytest.raises(ConfigError, match=r"n_in = 9000 exceeds the PyTorch backend's max_num_tokens of 8192; .*"
                                          r"--joules-engine-option max_num_tokens=9000"):
        e.run(Workload(9000, 4))
    assert not fake_trtllm.built[-1].generate_calls


def test_max_num_tokens_option_raises_the_limit(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path), max_num_tokens=16384)
    assert fake_trtllm.built[-1].max_num_tokens == 16384
    w = Workload(9000, 4)
    e.run(w).verify(w, "trtllm")


@pytest.mark.parametrize("bad", [0, -8, "many", 1.5])
def test_max_num_tokens_must_be_a_positive_integer(fake_trtllm, tmp_path, bad):
    with pytest.raises(ConfigError, match="max_num_tokens must be a positive integer"):
        make(checkpoint_dir(tmp_path), max_num_tokens=bad)


def test_max_num_tokens_is_built_into_engine_dirs(fake_trtllm, tmp_path):
    with pytest.raises(ConfigError, match="max_num_tokens applies to checkpoints"):
        make(engine_dir(tmp_path), max_num_tokens=4096)


def test_max_seq_len_is_passed_so_max_tokens_is_not_clamped(fake_trtllm, tmp_path):
    make(checkpoint_dir(tmp_path)).run(Workload(16, 4))
    llm = fake_trtllm.built[-1]
    assert llm.max_seq_len == 131072 and llm.max_num_tokens == 8192


def test_a_clamped_output_says_what_happened(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    fake_trtllm.built[-1].max_seq_len = 64  # as if the library had lowered it (for instance to fit its KV cache)
    with pytest.raises(WorkloadMismatch, match=r"stopped at 4 of 8 tokens: tensorrt_llm lowered max_tokens .* "
                                               r"below n_in \+ n_out = 68"):
        e.run(Workload(60, 8))


# -- 5. no min_tokens ------------------------------------------------------------------------------


def test_min_tokens_is_not_sent(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    w = Workload(16, 6, requests=2)
    e.run(w).verify(w, "trtllm")
    llm = fake_trtllm.built[-1]
    sp = llm.generate_calls[-1][1]
    assert sp.min_tokens is None and sp.ignore_eos is True and sp.max_tokens == 6
    assert llm.banned_ids == set()  # the last vocabulary entry stays allowed


# -- 6. perf metrics -------------------------------------------------------------------------------


def test_the_llm_itself_returns_perf_metrics(fake_trtllm, tmp_path):
    make(checkpoint_dir(tmp_path))
    make(engine_dir(tmp_path))
    assert [llm.return_perf_metrics for llm in fake_trtllm.built] == [True, True]


def test_zero_timestamps_are_missing_not_times(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    fake_trtllm.built[-1].timing = {"arrival": 0.0, "first_sched": 0.0}
    run = e.run(Workload(16, 4, requests=2))
    assert run.phases == {"decode_s": pytest.approx(0.75)}  # no prefill from an unset scheduling time
    assert "ttft_s" not in run.info  # nor a TTFT from an unset arrival


def test_unordered_timestamps_drop_the_requests_timing(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    fake_trtllm.built[-1].timing = {"arrival": 9000.0}  # arrival after the first token: not a TTFT of hours
    run = e.run(Workload(16, 4, requests=3))
    assert run.phases == {} and "ttft_s" not in run.info
    assert run.info["timing_dropped"] == 3 and run.info["reused_kv_blocks"] == 0


@pytest.mark.parametrize("stamps, expected", [
    ((0.5, 1.0, 1.25, 2.0), {"prefill_s": 0.25, "decode_s": 0.75, "ttft_s": 0.75}),
    ((0.0, 1.0, 1.25, 2.0), {"prefill_s": 0.25, "decode_s": 0.75}),
    ((0.5, 0.0, 1.25, 0.0), {"ttft_s": 0.75}),
    ((0.5, 1.5, 1.25, 2.0), None),
    ((0.5, 1.0, 2.5, 2.0), None),
])
def test_timing_of(stamps, expected):
    names = ("arrival_time", "first_scheduled_time", "first_token_time", "last_token_time")
    timing = types.SimpleNamespace(**{n: TD(seconds=s) for n, s in zip(names, stamps)})
    got = trtllm.timing_of(timing)
    assert got == (None if expected is None else pytest.approx(expected))


# -- 7. errors during a run ------------------------------------------------------------------------


@pytest.mark.parametrize("where, workload", [
    ("generate", Workload(8, 4, requests=2)),
    ("generate_async", Workload(8, 4, requests=4, max_batch_size=2)),
    ("result", Workload(8, 4, requests=4, max_batch_size=2)),
])
@pytest.mark.parametrize("failure", [RequestError("Encountered an error in forwardAsync: CUDA out of memory"),
                                     ValueError("The sum of prompt length (8.0) should not exceed max_num_tokens (4)")])
def test_errors_from_tensorrt_llm_become_workload_mismatches(fake_trtllm, tmp_path, where, workload, failure):
    e = make(engine_dir(tmp_path))
    llm = fake_trtllm.built[-1]
    llm.fail_in, llm.failure = where, failure
    with pytest.raises(WorkloadMismatch) as exc:
        e.run(workload)
    message = str(exc.value)
    assert message.startswith("engine 'trtllm' did not run the workload: tensorrt_llm failed it: ")
    assert f"{type(failure).__name__}: {failure}" in message and "\n" not in message


def test_a_cpp_stack_trace_stays_out_of_the_message(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    llm = fake_trtllm.built[-1]
    llm.fail_in, llm.failure = "generate", RequestError(
        "[TensorRT-LLM][ERROR] Assertion failed: mMaxNewTokens > 0\n1  0x7f3a tensorrt_llm::common::throwRuntimeError\n")
    with pytest.raises(WorkloadMismatch) as exc:
        e.run(Workload(8, 4))
    assert str(exc.value).endswith("RequestError: [TensorRT-LLM][ERROR] Assertion failed: mMaxNewTokens > 0")


def test_a_request_the_executor_refuses_is_a_workload_mismatch(fake_trtllm, tmp_path):
    """Should a prompt pass the engine's checks and still be refused, its message reaches the user."""
    e = make(engine_dir(tmp_path, max_input_len=64))
    fake_trtllm.built[-1].max_input_len = 32  # a stricter limit than the config says
    with pytest.raises(WorkloadMismatch, match=r"RequestError: Prompt length \(40\) exceeds maximum input length \(32\)"):
        e.run(Workload(40, 4))


# -- 8. engine-dir detection -----------------------------------------------------------------------


@pytest.mark.parametrize("drop, kept", [("pretrained_config", "build_config"), ("build_config", "pretrained_config")])
def test_a_half_written_engine_config_is_a_config_error(fake_trtllm, tmp_path, drop, kept):
    path = engine_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    del config[drop]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"has {kept} but no {drop}: a half-written engine config"):
        make(path)
    assert not fake_trtllm.built


def test_a_missing_rank_file_is_a_config_error(fake_trtllm, tmp_path):
    with pytest.raises(ConfigError, match=r"an engine for 2 GPU\(s\) but has no rank1.engine"):
        make(engine_dir(tmp_path, tp=2, ranks=1), gpus=2)


# -- errors -----------------------------------------------------------------------------------------


def test_missing_package(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    monkeypatch.setattr(trtllm.importlib.util, "find_spec", lambda name: None)  # as if not installed
    with pytest.raises(EngineUnavailable) as exc:
        make(checkpoint_dir(tmp_path))
    assert str(exc.value).startswith("tensorrt_llm is not installed; install TensorRT-LLM 1.2.x as NVIDIA's guide says")


def test_the_install_hint_gives_nvidias_command_pinned():
    """9. PyPI's tensorrt-llm is a stub that fetches NVIDIA's wheel: the hint shows NVIDIA's command."""
    assert ('pip3 install --ignore-installed pip setuptools wheel && pip3 install "tensorrt_llm>=1.2,<1.3"'
            in trtllm.INSTALL_HINT)
    assert "cu130" in trtllm.INSTALL_HINT and "libopenmpi-dev" in trtllm.INSTALL_HINT
    assert "\n" not in trtllm.INSTALL_HINT


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
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"architecture": "LlamaForCausalLM", "dtype": "bfloat16"}')),
         "a TensorRT-LLM checkpoint .* build it into an engine with trtllm-build"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"hidden_size": 64}')), "neither an engine config"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"build_config": {}, "pretrained_config": {}}')),
         "has no rank0.engine"),
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
        "tensor_parallel_size, max_batch_size, max_num_tokens, dtype, end_id, vocab_size, seed"
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


@pytest.mark.parametrize("version, words", [("1.2.1", "engine dirs and checkpoints"),
                                            ("1.3.0", "engine dirs only if this version still has")])
def test_probe_says_what_a_version_loads_without_claiming_a_release(monkeypatch, version, words):
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: version)
    ok, reason = trtllm.probe()
    assert ok and words in reason and "removed in 1.3" not in reason and "1.3 removed" not in reason
