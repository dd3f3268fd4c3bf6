"""The hf engine on the CPU with tiny random-weight models: exact token counts, prompts, errors,
and the CI proof of the whole path (`joules sweep --engine hf --meter none`, and the plugin)."""

from __future__ import annotations

import json

import pytest

from pytest_joules.engines.base import EngineSpec
from pytest_joules.engines.prompts import random_prompts
from pytest_joules.errors import ConfigError, EngineUnavailable, WorkloadMismatch
from pytest_joules.measure import measure
from pytest_joules.meters.base import MeterSpec
from pytest_joules.engines.workload import EngineRun, Workload

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_joules.engines import hf  # noqa: E402  (after the importorskips)


@pytest.fixture(scope="module")
def engine():
    e = hf.create(EngineSpec("hf", model="tiny-llama"))
    yield e
    e.close()


# -- prompts ------------------------------------------------------------------------------------


def test_prompts_are_exact_distinct_and_avoid_special_ids():
    w = Workload(50, 1, requests=20, seed=7)
    prompts = random_prompts(w, 512, special_ids=[0, 1, 2, None])
    assert len(prompts) == 20 and all(len(p) == 50 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 20
    assert all(len(set(p)) == 50 for p in prompts)  # no repeats inside a prompt either
    assert not {0, 1, 2} & {i for p in prompts for i in p}
    assert all(0 <= i < 512 for p in prompts for i in p)


def test_prompts_are_seeded():
    w = Workload(16, 1, requests=3, seed=1)
    assert random_prompts(w, 512) == random_prompts(w, 512)
    assert random_prompts(w, 512) != random_prompts(Workload(16, 1, requests=3, seed=2), 512)


def test_prompts_longer_than_the_vocabulary_repeat_ids_but_stay_exact():
    prompts = random_prompts(Workload(40, 1, requests=2), 10, special_ids=[0])
    assert [len(p) for p in prompts] == [40, 40] and 0 not in prompts[0]


def test_too_many_requests_for_the_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot build 10 distinct prompts"):
        random_prompts(Workload(1, 1, requests=10), 5)


# -- the engine -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_exact_token_counts_batched_up_to_max_batch_size(engine):
    w = Workload(12, 5, requests=5, max_batch_size=2, seed=3)
    run = engine.run(w)
    run.verify(w, "hf")
    assert run.input_tokens == [12] * 5 and run.output_tokens == [5] * 5
    assert run.info["batches"] == [2, 2, 1]
    assert run.seconds > 0
    # latency from the decode loop: one TTFT and TPOT per request, later batches waiting longer
    assert len(run.ttft_s) == len(run.tpot_s) == 5 and all(t > 0 for t in run.tpot_s)
    assert run.ttft_s[0] == run.ttft_s[1] < run.ttft_s[2] == run.ttft_s[3] < run.ttft_s[4] < run.seconds
    whole = engine.run(Workload(12, 5, requests=3))
    assert whole.info["batches"] == [3]


@pytest.mark.slow
def test_generation_does_not_stop_at_eos(engine, monkeypatch):
    """Make EOS (id 2) every step's certain choice: the engine must still generate n_out tokens."""
    model = engine._model
    forward = model.forward

    def eos_always(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits[..., 2] += 1e4
        return out

    monkeypatch.setattr(model, "forward", eos_always)
    ids = engine.prompts(Workload(8, 1, requests=2))
    # control: a plain generate with EOS enabled stops after one token
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                           eos_token_id=2, pad_token_id=0, do_sample=False)
    assert plain.shape[1] == 8 + 1
    w = Workload(8, 6, requests=2)
    engine.run(w).verify(w, "hf")


def test_engine_prompts_are_distinct_and_cached(engine):
    w = Workload(20, 1, requests=4, seed=9)
    ids = engine.prompts(w)
    assert tuple(ids.shape) == (4, 20)
    assert len({tuple(r) for r in ids.tolist()}) == 4
    assert engine.prompts(w) is ids
    assert not torch.equal(engine.prompts(Workload(20, 1, requests=4, seed=10)), ids)


def test_identity_devices_and_default_meter_on_cpu(engine):
    ident = engine.identity()
    assert ident["kind"] == "hf" and ident["model"] == "tiny-llama" and ident["dtype"] == "fp32"
    assert ident["version"] == f"transformers {__import__('transformers').__version__}, torch {torch.__version__}"
    assert engine.devices() == [] and engine.simulated is False
    assert engine.default_meter in ("rapl", "none")
    assert engine.max_positions == 512


def test_too_long_for_the_model_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="exceeds hf's maximum of 512 positions"):
        engine.run(Workload(500, 20))


def test_generate_returning_a_short_row_is_a_mismatch(engine, monkeypatch):
    real = engine._model.generate

    def short(**kw):
        return real(**kw)[:, :-1]

    monkeypatch.setattr(engine._model, "generate", short)
    w = Workload(8, 4, requests=2)
    with pytest.raises(WorkloadMismatch, match=r"generated \[3\] tokens, asked for exactly 4"):
        engine.run(w).verify(w, "hf")


@pytest.mark.parametrize(
    "model, error, words",
    [
        ("no-such-model", ConfigError, "neither a checkpoint directory nor a known architecture"),
        (None, ConfigError, "needs a model"),
    ],
)
def test_bad_model_names(model, error, words):
    with pytest.raises(error, match=words) as exc:
        hf.create(EngineSpec("hf", model=model))
    assert "tiny-llama" in str(exc.value)  # the known names are listed


def test_directory_without_config_is_unavailable(tmp_path):
    with pytest.raises(EngineUnavailable, match="without config.json"):
        hf.create(EngineSpec("hf", model=str(tmp_path)))


def test_bad_dtype_and_device():
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        hf.create(EngineSpec("hf", model="tiny-llama", dtype="int3"))
    with pytest.raises(ConfigError, match="device must be"):
        hf.create(EngineSpec("hf", model="tiny-llama", options={"device": "tpu"}))
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="no CUDA GPU"):
            hf.create(EngineSpec("hf", model="tiny-llama", options={"device": "cuda"}))


def test_unknown_engine_options_are_refused_before_loading_anything(monkeypatch):
    monkeypatch.setattr(hf, "_import", lambda: pytest.fail("imported torch for a spec it refuses"))
    with pytest.raises(ConfigError) as exc:
        hf.create(EngineSpec("hf", model="tiny-llama", options={"x": 1, "seed": 0}))
    assert str(exc.value) == "unknown hf engine option(s) 'x'; the hf engine accepts device, dtype, seed, runtime"


def test_the_dtype_engine_option_overrides_the_specs_dtype():
    assert hf._dtype_name(EngineSpec("hf", dtype="fp32", options={"dtype": "fp16"}), cuda=False) == "float16"
    assert hf._dtype_name(EngineSpec("hf", dtype="fp32"), cuda=True) == "float32"
    assert hf._dtype_name(EngineSpec("hf", options={"dtype": "bf16"}), cuda=False) == "bfloat16"


def test_dtype_keyword_follows_the_transformers_version():
    assert hf._dtype_kwarg("4.57.1") == "dtype"
    assert hf._dtype_kwarg("5.0.0rc1") == "dtype"
    assert hf._dtype_kwarg("4.45.2") == "torch_dtype"


def test_every_simulated_architecture_maps_to_a_config_of_its_shape():
    from pytest_joules.sim.architectures import ARCHITECTURES

    assert "Llama-3.2-1B" in hf.known_architectures()
    for name, arch in ARCHITECTURES.items():
        cfg = hf.build_config(hf.lookup_architecture(name))
        assert cfg.num_hidden_layers == arch.layers and cfg.hidden_size == arch.hidden, name
        assert cfg.vocab_size == arch.vocab and cfg.num_attention_heads == arch.heads, name


@pytest.mark.slow
def test_local_checkpoint_loads_from_a_path(engine, tmp_path):
    engine._model.save_pretrained(tmp_path)
    e = hf.create(EngineSpec("hf", model=str(tmp_path)))
    try:
        assert e.identity()["model"] == str(tmp_path)
        w = Workload(6, 3, requests=2)
        e.run(w).verify(w, "hf")
    finally:
        e.close()


@pytest.mark.slow
def test_measure_with_the_none_meter_is_a_dry_run_with_exact_counts(engine):
    from pytest_joules.meters import none

    meter = none.create(MeterSpec("none"), engine)
    m = measure(engine, meter, Workload(8, 4, requests=3, max_batch_size=2), rounds=2, warmup=1)
    assert m.dry_run and m.j_per_out_token is None
    assert [r.output_tokens for r in m.rounds] == [12, 12] and [r.reps for r in m.rounds] == [1, 1]
    assert m.device["meter"] == "none"
    with pytest.raises(AssertionError, match="dry run"):
        m.assert_no_regression()


# -- the CI proofs: the CLI and the plugin --------------------------------------------------------


@pytest.mark.slow
def test_joules_sweep_hf_tiny_llama_meter_none(tmp_path, capsys):
    from pytest_joules.cli import main

    out = tmp_path / "sweep.json"
    rc = main(["sweep", "--engine", "hf", "--model", "tiny-llama", "--meter", "none", "--n-in", "8,16",
               "--n-out", "4", "--requests", "3", "--max-batch-size", "2", "--rounds", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    doc = json.loads(out.read_text())
    text = json.dumps(doc)
    assert "tiny-llama" in text and '"hf"' in text
    assert "dry run" in capsys.readouterr().out


def test_joules_sweep_hf_bad_model_is_one_error_line(capsys):
    from pytest_joules.cli import main

    rc = main(["sweep", "--engine", "hf", "--model", "nope", "--meter", "none", "--n-in", "8", "--n-out", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "neither a checkpoint directory nor a known architecture" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_plugin_runs_hf_tiny_llama_with_meter_none(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=8, n_out=4, requests=2)
        def test_tiny(joules):
            joules()
            raise AssertionError("a dry run skips after the token check: never reached")
        """
    )
    result = pytester.runpytest_inprocess(
        "--joules", "--joules-engine", "hf", "--joules-model", "tiny-llama",
        "--joules-meter", "none", "--joules-rounds", "1", "--joules-json", "out.json", "-rs",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*dry run: no energy read (meter 'none'): token counts checked*"])
    (r,) = json.loads((pytester.path / "out.json").read_text())["results"]
    assert r["verdict"]["status"] == "dry-run" and [x["output_tokens"] for x in r["rounds"]] == [8] * len(r["rounds"])


class _Counting:
    """A stand-in engine, to check the none meter needs no GPU engine."""

    kind = "counting"
    simulated = False
    default_meter = "none"
    max_positions = None

    def run(self, w):
        return EngineRun([w.n_in] * w.requests, [w.n_out] * w.requests, 0.001)

    def sync(self):
        pass

    def devices(self):
        return []

    def identity(self):
        return {"kind": "counting"}

    def close(self):
        pass


def test_none_meter_reads_wall_time_and_no_energy():
    from pytest_joules.meters import none

    meter = none.create(MeterSpec("none", {"min_window_s": "0.0"}), _Counting())
    meter.begin()
    r = meter.end()
    assert r.joules is None and r.valid and r.seconds >= 0
    assert meter.device_info()["meter"] == "none"
    with pytest.raises(ConfigError, match="min_window_s must be a number"):
        none.create(MeterSpec("none", {"min_window_s": "x"}), _Counting())
    for bad in ("nan", "inf"):  # a NaN window never closes: 10,000 reps a round
        with pytest.raises(ConfigError, match="min_window_s must be a finite number"):
            none.create(MeterSpec("none", {"min_window_s": bad}), _Counting())
