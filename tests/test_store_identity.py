"""Baseline files are named by the whole engine identity, so no configuration evicts another's
baselines; stores in the old layout migrate without losing an entry; a fitted model judges only
the device and engine it was fitted on (issue 21, items 4 and 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_joules.engines.workload import Workload
from pytest_joules.store.baselines import BaselineStore
from pytest_joules.store.fingerprint import engine_stem, legacy_engine_stem

from .plugin_fake import BASELINE, THETA, TWO_TESTS, project

ROOT = Path(__file__).resolve().parent.parent
DEVICE = {"gpu": "H100", "power_limit_w": 700, "simulated": False}


def fp(**engine):
    return {"device": dict(DEVICE), "engine": {"kind": "trtllm", "version": "1.2", "dtype": "fp8", **engine}}


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TWO_TESTS)
    return p


# -- item 4: one file per configuration ------------------------------------------------------
def test_two_engine_dirs_with_the_same_last_name_keep_their_own_baselines(tmp_path):
    store = BaselineStore(tmp_path)
    a, b = fp(model="/engines/a/fp8"), fp(model="/engines/b/fp8")
    assert store.path_for(a) != store.path_for(b)
    w = Workload(128, 64)
    store.record(a, "t", w, [1.0, 1.01, 0.99], 0.02)
    store.record(b, "t", w, [2.0, 2.02, 1.98], 0.02)
    fresh = BaselineStore(tmp_path)
    assert fresh.lookup(a, "t", w).entry.j_per_out_token == 1.0
    assert fresh.lookup(b, "t", w).entry.j_per_out_token == 2.0
    assert not list(tmp_path.rglob("*.bak"))  # nothing was replaced


@pytest.mark.parametrize("change", [{"runtime": "eager"}, {"dtype": "bf16"}])
def test_another_runtime_or_dtype_does_not_share_the_file(change):
    base = fp(model="Llama-3.1-8B", runtime="graphs")
    other = {**base, "engine": {**base["engine"], **change}}
    assert engine_stem(base) != engine_stem(other)
    assert legacy_engine_stem(base) == legacy_engine_stem(other)  # what used to collide


def test_the_file_name_holds_kind_model_dtype_runtime_and_a_hash_of_a_path():
    assert engine_stem(fp(model="Llama-3.1-8B", runtime="graphs")) == "trtllm-llama-3-1-8b-fp8-graphs"
    stem = engine_stem(fp(model="/engines/a/fp8"))
    assert stem.startswith("trtllm-fp8-fp8-") and len(stem.rsplit("-", 1)[1]) == 8
    long = engine_stem(fp(model="x" * 300))
    assert len(long) < 100  # a file name the file system takes


def test_recording_the_eager_runtime_keeps_the_default_runtimes_baselines(pytester, monkeypatch):
    """Before: `runtime=eager` "replaced ... dropped 2 baselines", and the next default run was all new."""
    proj = project(pytester, monkeypatch, joules_engine="sim", joules_model="tiny-gqa")
    proj.makepyfile(test_energy=TWO_TESTS.replace("[256, 512]", "[128, 256]"))
    exact = ["--joules", "--joules-engine-option", "noise=0"]
    proj.runpytest(*exact, "--joules-update-baselines").assert_outcomes(passed=3)
    result = proj.runpytest(*exact, "--joules-engine-option", "runtime=eager", "--joules-update-baselines", "-k", "chat")
    result.assert_outcomes(passed=1)
    assert "replaced" not in result.stdout.str() and "dropped" not in result.stdout.str()
    files = sorted(p.name for p in (proj.path / "baselines/h100-sxm-simulated").glob("*.json"))
    assert files == ["sim-tiny-gqa-bf16-eager.json", "sim-tiny-gqa-bf16-graphs.json"]
    result = proj.runpytest(*exact, "-rA")
    result.assert_outcomes(passed=3)
    assert " new" not in result.stdout.str()  # each test judged against its own runtime's baseline


# -- item 4: stores in the old layout --------------------------------------------------------
def _old_layout(proj):
    """Record with this version, then put the file under its pre-0.2 name (`fake-fake-1.json`)."""
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    new = proj.path / BASELINE
    old = new.with_name("fake-fake-1.json")
    new.rename(old)
    return old, new


def test_a_store_in_the_old_layout_gates_without_being_written(proj):
    old, new = _old_layout(proj)
    before = old.read_bytes()
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.5")
    result.assert_outcomes(failed=3)  # compared with the old file's baselines, not "new"
    assert old.read_bytes() == before and not new.exists()


def test_the_first_write_renames_an_old_file_and_loses_no_entry(proj):
    old, new = _old_layout(proj)
    entries = json.loads(old.read_text())["entries"]
    # 20% slower: re-recorded (a test that passes against its baseline keeps it, and writes nothing)
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-sim-slowdown", "1.2", "-k", "chat")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*renamed *fake-fake-1.json to *fake-fake-1-fp16.json*"])
    assert not old.exists() and set(json.loads(new.read_text())["entries"]) == set(entries)
    proj.runpytest("--joules", "--joules-sim-slowdown", "1.5").assert_outcomes(failed=3)


def test_an_old_file_beside_a_new_one_is_merged_and_kept_as_bak(proj):
    old, new = _old_layout(proj)
    data = json.loads(old.read_text())
    only_old = {k: v for k, v in data["entries"].items() if "grid" in k}
    only_new = {k: v for k, v in data["entries"].items() if "grid" not in k}
    old.write_text(json.dumps({**data, "entries": only_old}))
    new.write_text(json.dumps({**data, "entries": only_new}))
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-sim-slowdown", "1.2", "-k", "chat").assert_outcomes(passed=1)
    assert set(json.loads(new.read_text())["entries"]) == set(data["entries"])
    assert not old.exists() and old.with_name(old.name + ".bak").exists()


def test_an_old_file_of_another_configuration_is_left_for_it(tmp_path):
    """An old-named file holding another runtime's baselines is not read as this one's."""
    eager, graphs = fp(model="m", runtime="eager"), fp(model="m", runtime="graphs")
    store = BaselineStore(tmp_path)
    store.record(eager, "t", Workload(128, 64), [1.0, 1.0, 1.0], 0.0)
    store.path_for(eager).rename(tmp_path / "h100" / f"{legacy_engine_stem(eager)}.json")
    fresh = BaselineStore(tmp_path)
    assert fresh.lookup(graphs, "t", Workload(128, 64)).entry is None
    assert fresh.lookup(eager, "t", Workload(128, 64)).entry.rounds == [1.0, 1.0, 1.0]
    fresh.record(graphs, "t", Workload(128, 64), [2.0, 2.0, 2.0], 0.0)  # migrates the eager file on the way
    again = BaselineStore(tmp_path)
    assert again.lookup(eager, "t", Workload(128, 64)).entry.rounds == [1.0, 1.0, 1.0]
    assert again.lookup(graphs, "t", Workload(128, 64)).entry.rounds == [2.0, 2.0, 2.0]


def test_the_examples_committed_store_is_named_by_identity_and_its_model_carries_it():
    directory = ROOT / "baselines" / "h100-sxm-simulated"
    store = BaselineStore(ROOT / "baselines")
    for path in directory.glob("*.json"):
        if path.name.endswith((".model.json", ".sweep.json")):
            continue
        fingerprint = json.loads(path.read_text())["fingerprint"]
        assert store.path_for(fingerprint) == path
        model = json.loads(store.model_path_for(fingerprint).read_text())
        assert model["fingerprint"] == fingerprint


# -- item 16: a fitted model carries its fingerprint -----------------------------------------
def _model_file(proj, fingerprint):
    from pytest_joules.models.analytical import FittedModel, save_models

    path = proj.path / BASELINE.replace(".json", ".model.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"fingerprint": fingerprint} if fingerprint else {}
    save_models(path, [FittedModel("memflops", THETA, 0.0, 0.0, 25, (128, 512), (32, 128))], **extra)
    return path


def _session_fingerprint(proj):
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    return json.loads((proj.path / BASELINE).read_text())["fingerprint"]


def test_a_model_fitted_on_another_engine_is_not_used_and_says_why(proj):
    """Before: an eager run was judged against a graphs model ("session MAPE 161%")."""
    fingerprint = _session_fingerprint(proj)
    other = {**fingerprint, "engine": {**fingerprint["engine"], "runtime": "graphs"}}
    _model_file(proj, other)
    result = proj.runpytest("--joules", "--joules-model-tolerance", "5%")
    result.assert_outcomes(passed=3)
    assert result.ret == 1  # the session check fails for the right reason
    out = result.stdout.str()
    assert "session MAPE" not in out
    result.stdout.fnmatch_lines(["*fitted model *was fitted on another device or engine (engine.runtime: 'graphs' "
                                 "(model) vs None (now)); it is not used*"])


def test_a_model_of_this_fingerprint_or_of_none_is_used(proj):
    fingerprint = _session_fingerprint(proj)
    for recorded in (fingerprint, None):
        _model_file(proj, recorded)
        result = proj.runpytest("--joules", "--joules-model-tolerance", "5%")
        assert result.ret == 0
        result.stdout.fnmatch_lines(["*session MAPE*"])


def test_joules_fit_saves_the_fingerprint_of_the_results_it_fitted(proj, capsys):
    from pytest_joules.cli import main

    proj.makepyfile(test_energy="""
        import pytest

        @pytest.mark.energy(n_in=[128, 256, 512], n_out=[32, 64, 128])
        def test_grid(joules):
            joules()
        """)
    proj.runpytest("--joules", "--joules-json", "r.json").assert_outcomes(passed=9)
    saved = proj.path / "m.json"
    assert main(["fit", str(proj.path / "r.json"), "--fit", "flops", "--save", str(saved), "--json"]) == 0
    capsys.readouterr()
    document = json.loads(saved.read_text())
    assert document["fingerprint"]["engine"]["kind"] == "fake"
    assert document["fingerprint"]["device"]["gpu"] == "FakeGPU 80GB"
