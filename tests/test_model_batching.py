"""A fitted model records the batching of its points (`joules fit --save`), and keeps it on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_joules.models.analytical import FittedModel, load_models
from pytest_joules.cli import main
from pytest_joules.errors import DataError
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import results_document
from pytest_joules.engines.workload import Workload

THETA = (0.05, 2e-7, 1e-5, 3e-4, 2e-5, 1.5)
TRUE = FittedModel("memflops", THETA, 0.0, None, 1, (64, 512), (64, 512))
GRID = [64, 128, 256, 512]


def _results(tmp_path: Path, batch: list[tuple[int, int | None]]) -> Path:
    """A results JSON of a 4x4 grid; the i-th point runs at batch[i % len(batch)]."""
    measurements = []
    for i, (n, m) in enumerate((n, m) for n in GRID for m in GRID):
        requests, cap = batch[i % len(batch)]
        w = Workload(n, m, requests=requests, max_batch_size=cap)
        r = Round(joules=TRUE.predict(n, m) * m * requests, seconds=1.0, reps=1, output_tokens=m * requests, input_tokens=n * requests)
        measurements.append(Measurement(w, [r], engine={"kind": "sim"}, device={}, meter="sim", simulated=True))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_document(measurements)))
    return path


def _csv(tmp_path: Path, header: str, extra) -> Path:
    lines = [header]
    for i, (n, m) in enumerate((n, m) for n in GRID for m in GRID):
        lines.append(f"{n},{m},{TRUE.predict(n, m)!r}{extra(i)}")
    path = tmp_path / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def fit_save(capsys, data: Path, tmp_path: Path) -> tuple[list[FittedModel], dict, str]:
    saved = tmp_path / "model.json"
    assert main(["fit", str(data), "--save", str(saved)]) == 0
    err = capsys.readouterr().err
    return load_models(saved), json.loads(saved.read_text()), err


def test_fit_save_records_the_batching_of_a_results_file(capsys, tmp_path):
    models, doc, err = fit_save(capsys, _results(tmp_path, [(16, None)]), tmp_path)
    assert [m.batching for m in models] == [{"requests": 16, "max_batch_size": None}] * 3
    assert doc["models"][0]["batching"] == {"requests": 16, "max_batch_size": None}
    assert "model fitted at requests=16 max_batch_size=None" in err
    assert models[0].batching_mismatch(16, None) is None
    assert models[0].batching_mismatch(1, None) == "requests=16"
    assert models[0].batching_mismatch(16, 8) == "requests=16"


def test_mixed_batching_is_recorded_as_mixed_and_said(capsys, tmp_path):
    models, _, err = fit_save(capsys, _results(tmp_path, [(16, None), (16, 4)]), tmp_path)
    assert models[0].batching == {"requests": 16, "max_batch_size": "mixed"}
    assert "results mix batch settings" in err
    assert "the model records max_batch_size=mixed and the plugin compares it with no test" in err
    assert models[0].batching_mismatch(16, None) == "requests=16 max_batch_size=mixed"
    assert models[0].batching_mismatch(16, 4) is not None


def test_a_csv_without_batching_columns_leaves_it_unknown(capsys, tmp_path):
    models, doc, err = fit_save(capsys, _csv(tmp_path, "n_in,n_out,j_per_out_token", lambda i: ""), tmp_path)
    assert models[0].batching == {} and "batching" not in doc["models"][0]
    assert "carry no requests/max_batch_size" in err
    assert models[0].batching_mismatch(1, None) is None and models[0].batching_mismatch(64, 8) is None


def test_a_csv_with_batching_columns_records_them(capsys, tmp_path):
    path = _csv(tmp_path, "n_in,n_out,j_per_out_token,requests,max_batch_size", lambda i: ",8,")
    models, _, err = fit_save(capsys, path, tmp_path)
    assert models[0].batching == {"requests": 8, "max_batch_size": None}
    path = _csv(tmp_path, "n_in,n_out,j_per_out_token,requests", lambda i: f",{1 + i % 2}")
    models, _, err = fit_save(capsys, path, tmp_path)
    assert models[0].batching == {"requests": "mixed"}
    assert "rows mix requests values" in err


def test_a_bad_batching_cell_names_the_line(capsys, tmp_path):
    path = _csv(tmp_path, "n_in,n_out,j_per_out_token,max_batch_size", lambda i: ",0" if i == 3 else ",")
    assert main(["fit", str(path)]) == 2
    assert "points.csv: line 5: max_batch_size must be positive, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("batching, problem", [
    ([16], "'batching' must be an object"),
    ({"requests": 0}, "'batching' requests=0: must be a positive integer or 'mixed'"),
    ({"requests": None}, "'batching' requests=None: must be a positive integer or 'mixed'"),
    ({"max_batch_size": "8"}, "'batching' max_batch_size='8': must be a positive integer, null or 'mixed'"),
    ({"batch": 4}, "'batching' has unknown key(s) batch; known: requests, max_batch_size"),
])
def test_a_bad_batching_in_a_model_file_is_a_data_error(tmp_path, batching, problem):
    data = {**TRUE.to_dict(), "batching": batching}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"models": [data]}))
    with pytest.raises(DataError) as exc:
        load_models(path)
    assert problem in str(exc.value) and "m.json: models[0]: model 'memflops'" in str(exc.value)


def test_a_model_file_from_before_the_field_loads_with_unknown_batching(tmp_path):
    path = tmp_path / "old.json"
    data = TRUE.to_dict()
    assert "batching" not in data
    path.write_text(json.dumps({"models": [data]}))
    (model,) = load_models(path)
    assert model.batching == {} and model == TRUE
