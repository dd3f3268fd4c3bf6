"""`joules calibrate` end to end: on the simulated device, replaying a results file, and its errors;
and the intervals `joules fit` and `joules sweep` now show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_joules.models import analytical, uncertainty
from pytest_joules.cli import main
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import read_results, results_document
from pytest_joules.engines.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "data" / "h200-hf-llama" / "sweep-llama-3.2-1b.json"
#: a small exact device: 4 lengths per axis, 16 candidates
TINY = ["--model", "tiny-gqa", "--requests", "4", "--n-in-range", "16:512", "--n-out-range", "16:512", "--levels", "4",
        "--engine-option", "noise=0", "--seed", "3"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def calibrate_json(capsys, *argv) -> dict:
    code, out, _ = run_cli(capsys, "calibrate", *argv, "--json")
    assert code == 0
    return json.loads(out)


def test_calibrate_measures_the_design_fits_and_saves_what_the_plugin_reads(capsys, tmp_path):
    save, out = tmp_path / "baselines" / "m.model.json", tmp_path / "r.json"
    doc = calibrate_json(capsys, *TINY, "--points", "7", "--save", save, "--out", out)
    steps = doc["steps"]
    assert [s["reason"] for s in steps] == ["pilot"] * 6 + ["design"]
    assert len({(s["n_in"], s["n_out"]) for s in steps}) == 7 and doc["simulated"] is True
    assert doc["calibration"]["cost_s"] == pytest.approx(sum(s["cost_s"] for s in steps))
    assert doc["calibration"]["cost_s"] < doc["calibration"]["grid_cost_s"]  # less than all 16 candidates
    assert doc["calibration"]["clock"] == "simulated clock"
    # the file the plugin reads: the model, its batching, and the replicates for the intervals
    (model,) = analytical.load_models(save)
    assert model.name == "memflops" and model.n_points == 7 and model.batching == {"requests": 4, "max_batch_size": None}
    u = uncertainty.load(save)["memflops"]
    assert u.samples.shape == (200, 6) and u.df >= 1
    saved = json.loads(save.read_text())
    assert saved["simulated"] is True and saved["calibration"]["points"] == [[s["n_in"], s["n_out"]] for s in steps]
    for spot in doc["sweet_spots"]:
        assert spot["n_out_low"] <= spot["n_out_opt"] <= (spot["n_out_high"] or float("inf"))
    # the measured points, as `joules sweep --out` writes them
    rows = read_results(out).rows
    assert [(r.workload.n_in, r.workload.n_out) for r in rows] == [(s["n_in"], s["n_out"]) for s in steps]
    assert all(r.workload.requests == 4 for r in rows)


def test_the_same_seed_gives_the_same_calibration(capsys, tmp_path):
    first = calibrate_json(capsys, *TINY, "--points", "8", "--save", tmp_path / "a.json")
    second = calibrate_json(capsys, *TINY, "--points", "8", "--save", tmp_path / "b.json")
    assert first["steps"] == second["steps"] and first["model"] == second["model"]


def test_a_budget_counts_each_points_predicted_cost_and_stops_inside_it(capsys, tmp_path):
    doc = calibrate_json(capsys, *TINY, "--budget-minutes", "1", "--save", tmp_path / "m.json")
    c = doc["calibration"]
    assert c["cost_s"] <= 60 and c["stopped"].startswith("no candidate fits") and "per predicted second" in c["design"]
    spent = 0.0
    for s in doc["steps"]:
        if s["reason"] == "design":
            assert s["predicted_cost_s"] <= 60 - spent
        spent += s["cost_s"]


def test_the_tables_say_simulated_and_show_the_intervals(capsys, tmp_path):
    code, out, err = run_cli(capsys, "calibrate", *TINY, "--save", tmp_path / "m.json")
    assert code == 0
    assert "SIMULATED Calibration: tiny-gqa on H100-SXM (requests=4)" in out
    assert "SIMULATED Sweet spots" in out and "95% range" in out
    assert "measured 8 of 16 candidate points in" in out and "(simulated clock)" in out
    assert "95% band of the predicted J/out-token (the model's curve" in out
    assert err.count("joules calibrate: pilot ") == 6  # progress on stderr


def test_replay_takes_the_points_of_a_real_results_file(capsys, tmp_path):
    doc = calibrate_json(capsys, "--replay", H200, "--save", tmp_path / "m.json")
    assert doc["simulated"] is False and "replayed from sweep-llama-3.2-1b.json" in doc["where"]
    file_points = {(r.workload.n_in, r.workload.n_out) for r in read_results(H200).rows}
    assert len(doc["steps"]) == 8 and {(s["n_in"], s["n_out"]) for s in doc["steps"]} <= file_points
    r = doc["replay"]
    assert r["file_points"] == 12 and r["mape_over_file"] < 0.15  # real, noisy: eager transformers
    assert doc["calibration"]["clock"] == "recorded windows"
    assert analytical.load_models(tmp_path / "m.json")[0].batching == {"requests": 16, "max_batch_size": None}
    code, out, _ = run_cli(capsys, "calibrate", "--replay", H200, "--save", tmp_path / "m.json")
    assert code == 0 and "on all 12 points of the file this model's MAPE is" in out and "SIMULATED" not in out


def test_replay_refuses_a_file_that_mixes_batchings(capsys, tmp_path):
    ms = [Measurement(Workload(n, 64, requests=r), [Round(joules=1.0 * n, seconds=1.0, reps=1, output_tokens=64 * r,
                                                          input_tokens=n)], {"kind": "sim"}, {}, "sim", True)
          for n, r in [(64, 1), (128, 2)]]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(results_document(ms)))
    code, _, err = run_cli(capsys, "calibrate", "--replay", path, "--save", tmp_path / "m.json")
    assert code == 2 and "mix requests/max_batch_size values" in err and len(err.strip().splitlines()) == 1


SMALL = TINY[:10]  # tiny-gqa, 4 requests, 4x4 candidates


@pytest.mark.parametrize("argv, message", [
    ([*SMALL, "--points", "3"], "--points 3: the memflops model has 6 parameters; it needs at least 7"),
    ([*SMALL, "--fit", "flops", "--points", "5"], "--points 5: the flops model has 5 parameters; it needs at least 6"),
    ([*SMALL, "--budget-minutes", "0.01"], "needs at least 7: give a larger --budget-minutes"),
    ([*SMALL, "--n-in-range", "16:32", "--n-out-range", "16:32", "--levels", "2"], "the range holds 4 candidate point(s)"),
    (["--replay", H200, "--engine", "sim"], "--replay takes its points, engine and settings from"),
    (["--replay", H200, "--requests", "4", "--seed", "1"], "--seed, --requests do not apply"),
    (["--replay", "no-such.json"], "no-such.json: no such file"),
    (["--replay", H200.parent / "sweep-llama-3.1-8b.json"], "holds 2 measured point(s) in the range; the memflops model needs at least 7"),
    (["--engine", "hf", "--gpu", "H200"], "--gpu picks the simulated GPU"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_bad_input_is_one_line_naming_the_thing(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "calibrate", *argv, "--save", tmp_path / "m.json")
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("joules calibrate: error: ") and message in line and "Traceback" not in err


def test_an_unwritable_save_path_fails_before_measuring(capsys, tmp_path):
    code, _, err = run_cli(capsys, "calibrate", *TINY, "--save", tmp_path)
    assert code == 2 and "--save" in err and "is a directory" in err and "pilot" not in err
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "calibrate", *TINY, "--save", tmp_path / "file" / "m.json")
    assert code == 2 and "is a file, not a directory" in err and "pilot" not in err


@pytest.mark.parametrize("argv, message", [
    (["--n-in-range", "512:64"], "expected LOW:HIGH with 0 < LOW <= HIGH"),
    (["--points", "8", "--budget-minutes", "5"], "not allowed with argument"),
    (["--rounds", "many"], "expected a positive number of rounds"),
])
def test_bad_arguments_are_usage_errors(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", *argv, "--save", str(tmp_path / "m.json")])
    assert exc.value.code == 2 and message in capsys.readouterr().err


# -- the intervals in `joules fit` and `joules sweep` ----------------------------------------------
def test_fit_reports_and_saves_the_intervals(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "fit", H200, "--json", "--save", tmp_path / "m.json")
    assert code == 0
    mem = next(m for m in json.loads(out)["models"] if m["name"] == "memflops")
    for spot in mem["sweet_spots"]:
        assert spot["n_out_low"] is not None and spot["n_out_low"] <= spot["n_out_opt"]
        assert spot["interval_leaves_range"] in (True, False)
    assert set(uncertainty.load(tmp_path / "m.json")) == {"flops", "memflops"}  # the linear model has no sweet spot
    code, out, _ = run_cli(capsys, "fit", H200)
    assert "95% range" in out and "*" in out  # 12 noisy points: the sweet spot is not pinned down


def test_sweep_shows_the_intervals_and_writes_the_replicates(capsys, tmp_path):
    out_file = tmp_path / "s.json"
    code, out, _ = run_cli(capsys, "sweep", "--model", "tiny-gqa", "--n-in", "16,64,256", "--n-out", "16,64,256",
                           "--requests", "2", "--rounds", "2", "--engine-option", "noise=0", "--out", out_file)
    assert code == 0 and "95% range" in out
    models = json.loads(out_file.read_text())["models"]
    assert {m["name"] for m in models if "uncertainty" in m} == {"flops", "memflops"}
