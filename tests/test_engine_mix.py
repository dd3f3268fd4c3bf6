"""Mixes and text prompts on the real engines: hf (tiny random-weight models on the CPU) and trtllm
(against the fake tensorrt_llm of test_engine_trtllm.py). Neither serves over time."""

from __future__ import annotations

import pytest

from pytest_joules.engines import mix as M
from pytest_joules.engines import prompt_text
from pytest_joules.engines.base import EngineSpec
from pytest_joules.engines.workload import Workload
from pytest_joules.errors import ConfigError
from pytest_joules.measure import measure
from pytest_joules.meters.base import MeterSpec

from .test_engine_trtllm import SamplingParams, checkpoint_dir, fake_trtllm, make  # noqa: F401  (fixture)

MIX = M.from_list([(6, 3, 2), (9, 2, 1), (4, 5, 1)])


def prompts_file(tmp_path, text="the cat sat on the mat and the dog ran to the cat"):
    (tmp_path / "p.jsonl").write_text(f'{{"prompt": "{text}"}}\n"the dog sat"\n')
    return prompt_text.load(tmp_path / "p.jsonl")


def word_tokenizer(path):
    """A word-level tokenizer saved as a transformers checkpoint's would be (no download)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to"])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return vocab


# -- hf ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_engine():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pytest_joules.engines import hf

    e = hf.create(EngineSpec("hf", model="tiny-llama"))
    yield e
    e.close()


def test_hf_runs_a_mix_as_static_batches_of_each_length_with_every_count_exact(hf_engine):
    w = Workload.of_mix(MIX, 8, max_batch_size=2)
    run = hf_engine.run(w)
    run.verify(w, "hf")
    assert list(zip(run.input_tokens, run.output_tokens)) == list(w.lengths())
    assert run.info["batches"] == [2, 2, 2, 2]  # 4 of (6, 3), 2 of (9, 2), 2 of (4, 5), two at a time


def test_hf_refuses_arrivals_before_anything_runs(hf_engine):
    from pytest_joules.meters import none

    w = Workload.of_mix(MIX, 4, arrival=M.Arrival(rate=2.0))
    with pytest.raises(ConfigError, match=r"rate=2/s: engine 'hf' cannot serve requests over time \(transformers' "
                                          r"generate runs static batches, with no in-flight batching\)"):
        measure(hf_engine, none.create(MeterSpec("none"), hf_engine), w)


def test_hf_random_weights_have_no_tokenizer_for_text_prompts(hf_engine, tmp_path):
    w = Workload(6, 2, requests=2, prompts=prompts_file(tmp_path))
    with pytest.raises(ConfigError, match="has no tokenizer to cut text prompts to n_in tokens; point it at a model "
                                          "directory with a tokenizer, or use prompts='random'"):
        hf_engine.run(w)


@pytest.mark.slow
def test_hf_cuts_text_prompts_with_the_checkpoints_tokenizer(hf_engine, tmp_path):
    from pytest_joules.engines import hf

    hf_engine._model.save_pretrained(tmp_path / "ckpt")
    vocab = word_tokenizer(tmp_path / "ckpt")
    e = hf.create(EngineSpec("hf", model=str(tmp_path / "ckpt")))
    try:
        w = Workload.of_mix(MIX, 4, prompts=prompts_file(tmp_path))
        run = e.run(w)
        run.verify(w, "hf")  # every prompt exactly its n_in tokens of the checkpoint's tokenizer
        used = {i for _, ids, _ in e._plan(w) for row in ids.tolist() for i in row}
        assert used <= set(vocab.values()) - {vocab["[UNK]"]}
    finally:
        e.close()


# -- trtllm (fake) ---------------------------------------------------------------------------------
def test_trtllm_runs_a_mix_as_one_batch_with_a_sampling_params_per_request(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    w = Workload.of_mix(M.from_list([(32, 7, 1), (64, 3, 1), (16, 9, 2)]), 8)
    run = e.run(w)
    run.verify(w, "trtllm")
    prompts, params = fake_trtllm.built[-1].generate_calls[-1]
    assert [len(p) for p in prompts] == [n for n, _ in w.lengths()]
    assert [p.max_tokens for p in params] == [m for _, m in w.lengths()]
    assert len({tuple(p) for p in prompts}) == 8


def test_trtllm_in_flight_limit_keeps_each_requests_params(fake_trtllm, tmp_path):
    e = make(checkpoint_dir(tmp_path))
    w = Workload.of_mix(M.from_list([(32, 7, 1), (16, 2, 1)]), 6, max_batch_size=2)
    e.run(w).verify(w, "trtllm")
    calls = fake_trtllm.built[-1].async_calls
    assert [(len(p), sp.max_tokens) for p, sp in calls] == list(w.lengths())


def test_trtllm_checks_a_mixs_longest_prompt_and_refuses_arrivals(fake_trtllm, tmp_path):
    from pytest_joules.meters import none

    e = make(checkpoint_dir(tmp_path), max_num_tokens=100)
    with pytest.raises(ConfigError, match="n_in = 200 exceeds the PyTorch backend's max_num_tokens of 100"):
        e.run(Workload.of_mix(M.from_list([(32, 7), (200, 3)]), 4))
    w = Workload(32, 4, requests=4, arrival=M.Arrival(concurrency=2))
    with pytest.raises(ConfigError, match="concurrency=2: engine 'trtllm' cannot serve requests over time"):
        measure(e, none.create(MeterSpec("none"), e), w)


def test_trtllm_text_prompts_need_the_model_dirs_tokenizer(fake_trtllm, tmp_path):
    pytest.importorskip("transformers")
    path = checkpoint_dir(tmp_path)
    e = make(path)
    w = Workload(6, 2, requests=2, prompts=prompts_file(tmp_path))
    with pytest.raises(ConfigError, match=r"has no tokenizer files\) has no tokenizer"):
        e.run(w)
    vocab = word_tokenizer(path)
    e = make(path)
    e.run(w).verify(w, "trtllm")
    prompts, _ = fake_trtllm.built[-1].generate_calls[-1]
    words = "the cat sat on the mat and the dog ran to the cat".split()
    assert prompts[0] == [vocab[x] for x in words[:6]]  # request 0: prompt 0, cut to 6
    assert prompts[1] == [vocab[x] for x in ("the", "dog", "sat")] + [vocab[x] for x in words[:3]]  # 1: padded, wrapping
