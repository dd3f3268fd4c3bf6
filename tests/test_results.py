import json

import pytest

from pytest_joules.errors import DataError
from pytest_joules.measure import measure
from pytest_joules.store.results import SCHEMA, atomic_write_json, read_results, write_results
from pytest_joules.judge.verdict import judge
from pytest_joules.engines.workload import Workload

from .fakes import FakeEngine, FakeMeter


def _measurement(n_in=16, n_out=8, watts=100.0, name=""):
    engine = FakeEngine(watts=watts)
    return measure(engine, FakeMeter(engine), Workload(n_in, n_out, requests=2), rounds=3, name=name)


def test_results_round_trip(tmp_path):
    m = _measurement(name="tests/test_x.py::test_chat")
    m.baseline_rounds = [0.9, 0.9, 0.9]
    m.prediction, m.model_name = 1.1, "memflops"
    m.verdict = judge(m.round_values, m.baseline_rounds, 0.05)
    path = tmp_path / "out" / "results.json"
    write_results(path, [m, _measurement(32, 4)], models=[{"name": "memflops"}])
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA and raw["simulated"] is True
    first = raw["results"][0]
    assert first["verdict"]["status"] == "regression"
    assert first["model_error"] == pytest.approx(0.1 / 1.1)
    assert first["rounds"][0]["output_tokens"] == 16
    back = read_results(path)
    assert [r.name for r in back.rows] == ["tests/test_x.py::test_chat", "n_in=32-n_out=4"]
    assert back.rows[0].workload == Workload(16, 8, requests=2)
    assert back.rows[0].j_per_out_token == pytest.approx(1.0)
    assert back.rows[0].round_values == pytest.approx([1.0, 1.0, 1.0])
    assert back.models == [{"name": "memflops"}]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", r"not valid JSON \(line 1"),
        ('{"schema": "other"}', "not a pytest-joules results file"),
        (json.dumps({"schema": SCHEMA, "results": {}}), "'results' must be a list"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4}]}), r"results\[0\]: missing field 'n_out'"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 0, "n_out": 4}]}), r"results\[0\]: n_in must be a positive integer"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4, "n_out": 4, "j_per_out_token": -1}]}), "j_per_out_token must be a positive number"),
        # hand-edited or truncated rounds: one line, not a ValueError/AttributeError traceback
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4, "n_out": 4, "rounds": [{"joules": "12", "output_tokens": 4}]}]}),
         r"results\[0\]: rounds\[0\]: joules must be a number or null, got '12'"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4, "n_out": 4, "rounds": [{"joules": 1.0, "output_tokens": "4"}]}]}),
         r"results\[0\]: rounds\[0\]: output_tokens must be a number or null"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4, "n_out": 4, "rounds": [3.0]}]}), r"results\[0\]: rounds\[0\]: expected an object"),
        (json.dumps({"schema": SCHEMA, "results": [{"n_in": 4, "n_out": 4, "rounds": "3.0"}]}), r"results\[0\]: 'rounds' must be a list"),
        (json.dumps({"schema": SCHEMA, "device": "H100", "results": []}), "'device' must be an object, got str"),
        (json.dumps({"schema": SCHEMA, "engine": ["sim"], "results": []}), "'engine' must be an object, got list"),
    ],
)
def test_bad_results_files_name_the_file_and_problem(tmp_path, content, fragment):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        read_results(path)
    assert str(path) in str(info.value)


def test_missing_results_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_results(tmp_path / "nope.json")


def test_atomic_write_leaves_the_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "b.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # no temp file left behind


def test_atomic_write_gives_ordinary_permissions_and_keeps_existing_ones(tmp_path):
    import os
    import stat

    old_mask = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write_json(new, {})
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        atomic_write_json(kept, {"a": 1})
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old_mask)
