"""Saved runs on the command line: run ids, `joules list`, `joules history`, `joules export --format csv`,
and carbon/cost in the exports."""

import csv
import io
import json
import math
import random
import sys
import threading

import pytest

from pytest_joules.report import exporters
from pytest_joules.store import runs
from pytest_joules.cli import main
from pytest_joules.errors import DataError
from pytest_joules.report.footprint import Footprint
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import read_results, results_document
from pytest_joules.engines.workload import Workload


def make(name, center, *, n=5, noise=0.005, seed=0, n_in=512, n_out=128):
    rng = random.Random(seed)
    rounds = [Round(joules=center * math.exp(rng.gauss(0, noise)) * n_out, seconds=1.0, reps=1,
                    output_tokens=n_out, input_tokens=n_in) for _ in range(n)]
    return Measurement(workload=Workload(n_in, n_out), rounds=rounds, engine={"kind": "sim", "model": "m"},
                       device={"gpu": "H100-SXM", "simulated": True}, meter="sim", simulated=True, name=name)


@pytest.fixture
def storage(tmp_path):
    """Three saved runs: test_chat drifts up 0.50 -> 0.51 -> 0.60; test_grid stays."""
    store = tmp_path / ".joules"
    for i, chat in enumerate((0.50, 0.51, 0.60)):
        doc = results_document([make("t.py::test_chat", chat, seed=i),
                                make("t.py::test_grid[n_in=64-n_out=8]", 2.0, seed=10 + i, n_in=64, n_out=8)])
        runs.save_run(store, doc)
    return store


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the store -----------------------------------------------------------------------------------
def test_runs_are_numbered_with_time_and_commit(storage):
    saved = runs.list_runs(storage)
    assert [r.id for r in saved] == ["0001", "0002", "0003"]
    for r in saved:
        doc = json.loads(r.path.read_text())
        git = doc["machine"]["git"]
        commit = (git["commit"][:7] + ("-dirty" if git["dirty"] else "")) if git else "nogit"
        assert r.path.name.startswith(r.id + "_") and r.path.name.endswith(f"_{commit}.json")


def test_concurrent_saves_get_distinct_numbers(tmp_path):
    store = tmp_path / ".joules"
    doc = results_document([make("t", 1.0)])
    threads = [threading.Thread(target=runs.save_run, args=(store, doc)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.number for r in runs.list_runs(store)] == list(range(1, 9))


def test_run_ids_resolve(storage):
    saved = runs.list_runs(storage)
    assert runs.resolve("last", storage) == saved[2].path
    assert runs.resolve("last~2", storage) == saved[0].path
    assert runs.resolve("0002", storage) == runs.resolve("2", storage) == saved[1].path
    with pytest.raises(DataError, match=r"run 0007: not in .* \(runs 0001 to 0003; `joules list` shows them\)"):
        runs.resolve("0007", storage)
    with pytest.raises(DataError, match="holds only 3 run"):
        runs.resolve("last~3", storage)
    with pytest.raises(DataError, match="no .joules/ folder .* --joules-autosave"):
        runs.resolve("last", None)


def test_the_store_is_found_up_to_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".joules").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert runs.find_storage(deep) == tmp_path / ".joules"
    (tmp_path / "a" / ".git").mkdir()  # a nested repository stops the search
    assert runs.find_storage(deep) is None


# -- compare with run ids ------------------------------------------------------------------------
def test_compare_takes_run_ids(storage, capsys):
    code, out, _ = run_cli(capsys, "compare", "0001", "last", "--storage", str(storage), "--fail")
    assert code == 1 and "t.py" in out and "test_chat" in out and "regression" in out
    code, out, _ = run_cli(capsys, "compare", "1", "last~1", "--storage", str(storage), "--json")
    data = json.loads(out)
    assert code == 0 and data["old"].endswith(runs.list_runs(storage)[0].path.name)


def test_compare_with_an_unknown_run_is_one_line(storage, capsys):
    code, _, err = run_cli(capsys, "compare", "0009", "last", "--storage", str(storage))
    assert code == 2 and err.count("\n") == 1 and "run 0009: not in" in err


def test_a_file_named_like_a_run_id_is_read_as_the_file(storage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last").write_text(runs.list_runs(storage)[0].path.read_text())
    code, out, _ = run_cli(capsys, "compare", "last", "0001", "--storage", str(storage), "--json")
    assert code == 0 and json.loads(out)["old"] == "last"


# -- list ----------------------------------------------------------------------------------------
def test_list_shows_each_run(storage, capsys):
    code, out, _ = run_cli(capsys, "list", "--storage", str(storage))
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"saved runs in {storage}:"
    # a device shared by every run is said once, above the rows (80 columns)
    assert lines[1].startswith("all on ") and "device H100-SXM SIMULATED" in lines[1]
    assert [line.split()[0] for line in lines[3:]] == ["0001", "0002", "0003"]
    assert all(line.rstrip().endswith("-") and len(line) <= 80 for line in lines[3:])


def test_list_without_a_store_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "list")
    assert code == 2 and "--joules-autosave" in err and err.count("\n") == 1


def test_a_corrupt_run_is_left_out_with_a_note(storage, capsys):
    runs.list_runs(storage)[1].path.write_text("{not json")
    code, out, err = run_cli(capsys, "list", "--storage", str(storage))
    assert code == 0 and [line.split()[0] for line in out.splitlines()[3:]] == ["0001", "0003"]
    assert "run 0002 left out" in err


# -- history -------------------------------------------------------------------------------------
def test_history_prints_the_trend_of_one_test(storage, capsys):
    code, out, _ = run_cli(capsys, "history", "test_chat", "--storage", str(storage))
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == ["t.py::test_chat:", "  n_in=512 n_out=128 requests=1 (SIMULATED)"]
    rows = [line.split() for line in lines[4:]]  # run, date, time, commit, J/out-token, vs prev, vs first
    assert [r[0] for r in rows] == ["0001", "0002", "0003"]
    js = [float(r[4]) for r in rows]
    assert js[0] == pytest.approx(0.50, rel=0.01) and js[2] == pytest.approx(0.60, rel=0.01)
    assert rows[0][5] == "-" and float(rows[2][6].rstrip("%")) / 100 == pytest.approx(js[2] / js[0] - 1, abs=0.01)
    assert lines[2].split()[1][0] == "▁" and lines[2].split()[1][-1] == "█"


def test_history_of_an_unknown_test_lists_what_there_is(storage, capsys):
    code, _, err = run_cli(capsys, "history", "test_nothing", "--storage", str(storage))
    assert code == 2 and "no saved run has a test named or containing 'test_nothing'" in err
    assert "t.py::test_chat" in err and err.count("\n") == 1


def test_history_plot_draws_a_png(storage, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "trend.png"
    code, out, _ = run_cli(capsys, "history", "test_", "--storage", str(storage), "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "t.py::test_grid[n_in=64-n_out=8]:\n  n_in=64" in out and f"trend drawn to {png}" in out


def test_history_plot_without_matplotlib_says_how_to_get_it(storage, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    code, out, err = run_cli(capsys, "history", "test_chat", "--storage", str(storage), "--plot", str(tmp_path / "t.png"))
    assert code == 2 and out == ""
    assert "--plot needs matplotlib, which is not installed: pip install 'pytest-joules[plot]'" in err


# -- CSV -----------------------------------------------------------------------------------------
def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_one_row_per_test_per_run(storage, capsys):
    code, out, _ = run_cli(capsys, "export", "all", "--format", "csv", "--storage", str(storage))
    rows = _csv(out)
    assert code == 0 and len(rows) == 6
    assert [(r["run"], r["test"]) for r in rows[:2]] == [("0001", "t.py::test_chat"),
                                                         ("0001", "t.py::test_grid[n_in=64-n_out=8]")]
    first = read_results(runs.list_runs(storage)[0].path)
    assert float(rows[0]["j_per_out_token"]) == first.rows[0].j_per_out_token  # every digit kept
    assert rows[0]["created"] == first.created and rows[0]["simulated"] == "true"
    assert rows[0]["n_in"] == "512" and rows[0]["rounds"] == "5" and rows[0]["gco2e_per_1k_tokens"] == ""
    assert float(rows[0]["ci_low"]) <= float(rows[0]["j_per_out_token"]) <= float(rows[0]["ci_high"])


def test_csv_of_files_and_ids_with_carbon_and_cost(storage, tmp_path, capsys):
    out_file = tmp_path / "runs.csv"
    path = str(runs.list_runs(storage)[0].path)
    code, _, _ = run_cli(capsys, "export", path, "last", "--format", "csv", "--storage", str(storage),
                         "--grid-intensity", "350", "--price", "0.3", "--out", str(out_file))
    rows = _csv(out_file.read_text())
    assert code == 0 and [r["run"] for r in rows] == [path, path, "0003", "0003"]
    for r in rows:
        kwh = float(r["j_per_out_token"]) * 1000 / 3.6e6
        assert float(r["gco2e_per_1k_tokens"]) == pytest.approx(kwh * 350)
        assert float(r["cost_per_1k_tokens"]) == pytest.approx(kwh * 0.3)
        assert r["grid_intensity_gco2e_per_kwh"] == "350.0" and r["price_per_kwh"] == "0.3"


def test_other_formats_take_one_file(storage, capsys):
    code, _, err = run_cli(capsys, "export", "0001", "0002", "--format", "gab", "--storage", str(storage))
    assert code == 2 and "--format gab takes one results file, got 2" in err


def test_a_bad_price_is_a_usage_error(storage, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "last", "--format", "csv", "--price", "-1", "--storage", str(storage)])
    assert exc.value.code == 2
    assert "--price: invalid value '-1'" in capsys.readouterr().err


# -- carbon and cost in the other exports --------------------------------------------------------
def test_footprint_reaches_gab_bmf_and_markdown():
    ms = [make("t", 0.36, noise=0)]
    fp = Footprint(grid_intensity=500, price=0.2)
    # 0.36 J/token x 1000 = 360 J = 1e-4 kWh -> 0.05 gCO2e and 0.00002 per 1000 tokens
    bmf = exporters.bmf_json(ms, fp)["t"]
    assert bmf["gco2e-per-1k-tokens"]["value"] == pytest.approx(ms[0].j_per_out_token * 1000 / 3.6e6 * 500)
    assert bmf["cost-per-1k-tokens"]["value"] == pytest.approx(ms[0].j_per_out_token * 1000 / 3.6e6 * 0.2)
    assert "per 1k output tokens: 0.0500 gCO2e, cost 2.00e-05" in exporters.gab_json(ms, fp)[0]["extra"]
    assert "(grid 500 gCO2e/kWh, price 0.2/kWh)" in exporters.gab_json(ms, fp)[0]["extra"]
    md = exporters.markdown_summary(ms, footprint=fp)
    assert "| gCO2e/1k tok | cost/1k tok |" in md
    assert "Carbon and cost per 1,000 output tokens at grid 500 gCO2e/kWh, price 0.2/kWh (stated values)." in md
    assert "gCO2e" not in exporters.markdown_summary(ms) and "gco2e-per-1k-tokens" not in exporters.bmf_json(ms)["t"]


def test_a_file_written_with_inputs_exports_them(tmp_path, capsys):
    doc = results_document([make("t", 0.36)])
    doc["footprint"] = Footprint(grid_intensity=500).to_dict()
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    code, out, _ = run_cli(capsys, "export", str(path), "--format", "bmf")
    assert code == 0 and "gco2e-per-1k-tokens" in json.loads(out)["t"]
