"""The hf engine's `runtime` option (graphs: static KV cache and CUDA graphs; eager), on the CPU:
the static-cache path CUDA runs, with exact counts, a cache sized to each workload, the fallback
to eager with its reason, and compilation kept out of the measured windows."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError
from pytest_joules.store.fingerprint import fingerprint
from pytest_joules.measure import measure
from pytest_joules.meters.base import MeterSpec
from pytest_joules.engines.workload import Workload

from . import plugin_fake  # noqa: F401  (preloads what inner runs import lazily)
from .fakes import FakeEngine, FakeMeter

# -- what needs no torch ---------------------------------------------------------------------------


def test_prepare_runs_before_the_warmup_and_the_windows():
    calls = []

    class Preparing(FakeEngine):
        def prepare(self, workload):
            calls.append(("prepare", self.device.energy_j, meter.windows))

        def run(self, workload):
            calls.append(("run", None, meter.windows))
            return super().run(workload)

    engine = Preparing()
    meter = CountingMeter(engine)
    measure(engine, meter, Workload(8, 4), rounds=2, warmup=0)
    assert calls[0] == ("prepare", 0.0, 0)  # before any run and any window, even without warm-up
    assert [c[0] for c in calls].count("prepare") == 1


class CountingMeter(FakeMeter):
    windows: int = 0

    def begin(self) -> None:
        self.windows += 1
        super().begin()


def test_a_run_that_reports_a_problem_spoils_its_round():
    class Compiling(FakeEngine):
        def run(self, workload):
            done = super().run(workload)
            if self.runs == 2:  # the warm-up is run 1: the first measured run compiles
                done.problems.append("compiled inside this run")
            return done

    engine = Compiling()
    m = measure(engine, FakeMeter(engine), Workload(8, 4), rounds=3, warmup=1)
    assert [r.valid for r in m.rounds] == [False, True, True]
    assert m.rounds[0].problems == ["compiled inside this run"] and "compiled inside this run" in m.problems
    assert len(m.round_values) == 2


def test_the_runtime_option_is_checked_before_torch_is_imported(monkeypatch):
    from pytest_joules.engines import hf

    monkeypatch.setattr(hf, "_import", lambda: pytest.fail("imported torch for a spec it refuses"))
    with pytest.raises(ConfigError) as exc:
        hf.create(EngineSpec("hf", model="tiny-llama", options={"runtime": "cuda-graphs"}))
    assert str(exc.value) == ("hf engine option runtime must be graphs (static KV cache and CUDA graphs) "
                              "or eager (plain generate), got 'cuda-graphs'")


def test_what_keeps_graphs_from_compiling():
    from pytest_joules.engines import hf_runtime as R

    torch = SimpleNamespace(__version__="2.5.0", compile=lambda f: f)
    assert R.compile_unavailable("4.46.3", torch, cuda=False) is None  # the CPU never compiles
    assert "CompileConfig arrived in 4.47" in R.compile_unavailable("4.46.3", torch, cuda=True)
    assert "no torch.compile" in R.compile_unavailable("4.57.3", SimpleNamespace(__version__="1.13"), cuda=True)
    assert R.version_tuple("5.0.0rc1") == (5, 0) and R.version_tuple("4.47") == (4, 47)


def test_fit_cache_forgets_a_cache_of_another_length():
    from pytest_joules.engines import hf_runtime as R

    model = SimpleNamespace(_cache=object(), _previous_max_cache_length=900)
    assert R.fit_cache(model, 100, None) == 100  # the first call: nothing known to forget
    assert hasattr(model, "_cache")
    R.fit_cache(model, 100, 100)
    assert hasattr(model, "_cache") and model._previous_max_cache_length == 900  # same length: keep it
    R.fit_cache(model, 50, 100)
    assert not hasattr(model, "_cache") and model._previous_max_cache_length == -1


def test_the_runtime_is_part_of_the_baseline_fingerprint():
    """A runtime=eager run must not be judged against baselines of runtime=graphs (and back)."""
    from pytest_joules.engines import sim

    graphs = sim.create(EngineSpec("sim", options={"runtime": "graphs"})).identity()
    eager = sim.create(EngineSpec("sim", options={"runtime": "eager"})).identity()
    device = {"gpu": "H100-SXM", "power_limit_w": 700}
    assert fingerprint(graphs, device, True) != fingerprint(eager, device, True)
    assert fingerprint(eager, device, True)["engine"]["runtime"] == "eager"


def test_a_baseline_of_the_other_runtime_is_not_used_and_is_named(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_chat(joules):
            joules()
        """
    )
    common = ["--joules", "--joules-rounds", "3", "--joules-engine-option", "noise=0"]
    pytester.runpytest_inprocess(*common, "--joules-update-baselines").assert_outcomes(passed=1)
    result = pytester.runpytest_inprocess(*common, "--joules-engine-option", "runtime=eager")
    result.assert_outcomes(passed=1)  # its own file (issue 21): "new", and the graphs runtime's file is named
    result.stdout.fnmatch_lines(["*holds no baselines for this device and engine*it holds *sim-llama-3-1-8b-bf16-graphs.json "
                                 "(1 baseline; runtime 'graphs' (not 'eager'))*"])
    result = pytester.runpytest_inprocess(*common, "--joules-engine-option", "runtime=eager", "--joules-require-baselines")
    result.assert_outcomes(failed=1)


# -- the engine on the CPU -------------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_joules.engines import hf  # noqa: E402  (after the importorskips)


@pytest.fixture(scope="module")
def graphs():
    e = hf.create(EngineSpec("hf", model="tiny-llama", options={"runtime": "graphs"}))
    yield e
    e.close()


def configs_of(engine, monkeypatch):
    """Record the GenerationConfig of every generate call."""
    seen = []
    real = engine._model.generate

    def spy(**kw):
        seen.append(kw["generation_config"])
        return real(**kw)

    monkeypatch.setattr(engine._model, "generate", spy)
    return seen


def test_the_default_runtime_is_eager_on_the_cpu():
    e = hf.create(EngineSpec("hf", model="tiny-llama"))
    try:
        assert e.identity()["runtime"] == "eager" and "runtime_note" not in e.identity()
        assert e.runtime.compile is False
    finally:
        e.close()


def test_graphs_on_the_cpu_is_the_static_cache_without_compilation(graphs, monkeypatch):
    ident = graphs.identity()
    assert ident["runtime"] == "graphs" and "static KV cache without torch.compile" in ident["runtime_note"]
    seen = configs_of(graphs, monkeypatch)
    w = Workload(12, 5, requests=5, max_batch_size=2, seed=3)
    run = graphs.run(w)
    run.verify(w, "hf")
    assert run.output_tokens == [5] * 5 and run.info["batches"] == [2, 2, 1] and run.problems == []
    assert [c.cache_implementation for c in seen] == ["static"] * 3
    assert all(getattr(c, "compile_config", None) is None for c in seen)


def test_graphs_and_eager_generate_the_same_token_counts(graphs):
    eager = hf.create(EngineSpec("hf", model="tiny-llama", options={"runtime": "eager"}))
    try:
        for w in (Workload(8, 6, requests=3), Workload(30, 2, requests=4, max_batch_size=3)):
            a, b = graphs.run(w), eager.run(w)
            a.verify(w, "hf")
            b.verify(w, "hf")
            assert (a.input_tokens, a.output_tokens) == (b.input_tokens, b.output_tokens)
    finally:
        eager.close()


def test_graphs_does_not_stop_at_eos(graphs, monkeypatch):
    model = graphs._model
    forward = model.forward

    def eos_always(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits[..., 2] += 1e4
        return out

    monkeypatch.setattr(model, "forward", eos_always)
    w = Workload(8, 6, requests=2)
    graphs.run(w).verify(w, "hf")


def test_each_workload_gets_a_cache_of_its_own_length(graphs, monkeypatch):
    """A static cache is attended over in full: a short workload after a long one must not inherit
    the long one's cache, or its energy would depend on the order of the tests."""
    lengths = []
    real = graphs._model.generate

    def spy(**kw):
        out = real(**kw)
        cache = getattr(graphs._model, "_cache", None)  # transformers 4.x keeps it here
        lengths.append(cache.max_cache_len if cache is not None else graphs._model._previous_max_cache_length)
        return out

    monkeypatch.setattr(graphs._model, "generate", spy)
    graphs.run(Workload(100, 20))
    graphs.run(Workload(10, 5))
    assert lengths[1] < 20 < lengths[0]


def test_prepare_generates_every_batch_shape_twice(graphs, monkeypatch):
    seen = configs_of(graphs, monkeypatch)
    w = Workload(9, 3, requests=5, max_batch_size=2)
    graphs.prepare(w)
    assert len(seen) == 4  # batch 2 and the remainder batch 1, twice each
    graphs.prepare(w)
    assert len(seen) == 4  # prepared shapes are not prepared again


def test_eager_prepares_nothing(monkeypatch):
    e = hf.create(EngineSpec("hf", model="tiny-llama", options={"runtime": "eager"}))
    try:
        seen = configs_of(e, monkeypatch)
        e.prepare(Workload(9, 3, requests=2))
        assert seen == []
    finally:
        e.close()


def test_a_compilation_inside_a_run_is_a_problem_of_that_run(graphs, monkeypatch):
    from pytest_joules.engines import hf_runtime as R

    counts = iter([7, 8])  # dynamo's graph count before and after the run
    monkeypatch.setattr(R, "compiles", lambda: next(counts))
    monkeypatch.setattr(graphs, "runtime", R.Runtime("graphs", compile=True))
    monkeypatch.setattr(R, "generation_kwargs", lambda runtime: {"cache_implementation": "static"})
    w = Workload(6, 3)
    run = graphs.run(w)
    assert run.problems and "compiled the decode step inside this run" in run.problems[0]


def test_graphs_that_cannot_run_falls_back_to_eager_with_the_reason(monkeypatch):
    real = hf.HFEngine._generate

    def no_static_cache(self, ids, n_out, *steps):
        if self.runtime.name == "graphs":
            raise ValueError("This model does not support cache_implementation='static'\nmore detail")
        return real(self, ids, n_out, *steps)

    monkeypatch.setattr(hf.HFEngine, "_generate", no_static_cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = hf.create(EngineSpec("hf", model="tiny-llama", options={"runtime": "graphs"}))
    try:
        ident = e.identity()
        assert ident["runtime"] == "eager"
        assert ident["runtime_note"] == ("graphs unavailable: ValueError: This model does not support "
                                         "cache_implementation='static'")
        assert any("runtime=graphs does not work here, running eager" in str(w.message) for w in caught)
        w = Workload(8, 4, requests=2)
        e.run(w).verify(w, "hf")
    finally:
        e.close()


def test_measure_through_graphs_with_the_none_meter(graphs):
    from pytest_joules.meters import none

    meter = none.create(MeterSpec("none"), graphs)
    m = measure(graphs, meter, Workload(8, 4, requests=3, max_batch_size=2), rounds=2, warmup=0)
    assert m.dry_run and [r.output_tokens for r in m.rounds] == [12, 12]
    assert m.engine["runtime"] == "graphs" and m.problems == []


def test_plugin_runs_hf_graphs_through_the_engine_option(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=8, n_out=4, requests=2)
        def test_tiny(joules):
            joules()  # a dry run (meter none): skips after the token check
        """
    )
    result = pytester.runpytest_inprocess(
        "--joules", "--joules-engine", "hf", "--joules-model", "tiny-llama", "--joules-meter", "none",
        "--joules-rounds", "1", "--joules-engine-option", "runtime=graphs", "--joules-json", "out.json",
    )
    result.assert_outcomes(skipped=1)
    import json

    (r,) = json.loads((pytester.path / "out.json").read_text())["results"]
    assert r["engine"]["runtime"] == "graphs"
    assert [x["output_tokens"] for x in r["rounds"]] == [8] * len(r["rounds"])


def test_a_prepare_that_fails_fails_the_test_in_one_line(pytester):
    pytester.makeconftest(
        """
        import pytest
        from pytest_joules.engines import hf
        from pytest_joules.errors import EngineUnavailable

        def broken(self, workload):
            raise EngineUnavailable("hf engine: runtime=graphs failed to prepare n_in=8-n_out=4 at batch 2: "
                                    "OutOfMemoryError: CUDA out of memory; use --joules-engine-option runtime=eager")

        @pytest.fixture(autouse=True)
        def no_prepare(monkeypatch):
            monkeypatch.setattr(hf.HFEngine, "prepare", broken)
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=8, n_out=4, requests=2)
        def test_tiny(joules):
            joules()
        """
    )
    result = pytester.runpytest_inprocess(
        "--joules", "--joules-engine", "hf", "--joules-model", "tiny-llama", "--joules-meter", "none",
        "--joules-rounds", "1", "--joules-engine-option", "runtime=graphs",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_tiny*: hf engine: runtime=graphs failed to prepare n_in=8-n_out=4 at batch 2*"])
    assert "Traceback" not in result.stdout.str() and "raise EngineUnavailable" not in result.stdout.str()


def test_compiled_without_cuda_graphs_is_said_in_the_runtime_note(graphs, monkeypatch):
    from pytest_joules.engines import hf_runtime as R

    monkeypatch.setattr(graphs, "runtime", R.Runtime("graphs", compile=True))
    monkeypatch.setattr(R, "cudagraph_skips", lambda: 5)
    graphs._note_cudagraph_skips(3)
    assert graphs.identity()["runtime_note"].startswith("torch.compile ran 2 graph(s) without CUDA graphs")
    graphs._note_cudagraph_skips(5)  # nothing new: the note stays as it is
    assert graphs.identity()["runtime"] == "graphs"
