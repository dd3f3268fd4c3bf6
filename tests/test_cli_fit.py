"""`joules fit` and `joules sweetspot`, called through the CLI entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_joules.numbers import tokens

from pytest_joules.models.analytical import FittedModel, fit, load_models
from pytest_joules.cli import main
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import results_document
from pytest_joules.engines.workload import Workload

GRID = [64, 128, 256, 512, 1024, 2048, 4096]
THETA = (0.05, 2e-7, 1e-5, 3e-4, 2e-5, 1.5)
TRUE = FittedModel("memflops", THETA, 0.0, None, 1, (64, 4096), (64, 4096))


@pytest.fixture
def csv_file(tmp_path) -> Path:
    """A 7x7 grid in the energy_j + requests form, 2% noise."""
    rng = np.random.default_rng(1)
    lines = ["n_in,n_out,energy_j,requests"]
    for n in GRID:
        for m in GRID:
            j = TRUE.predict(n, m) * (1 + 0.02 * rng.standard_normal())
            lines.append(f"{n},{m},{j * 10 * m!r},10")
    path = tmp_path / "grid.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def results_file(tmp_path) -> Path:
    measurements = []
    for n in GRID[:4]:
        for m in GRID[:4]:
            w = Workload(n, m)
            r = Round(joules=TRUE.predict(n, m) * m, seconds=1.0, reps=1, output_tokens=m, input_tokens=n)
            measurements.append(Measurement(w, [r], engine={"kind": "sim"}, device={}, meter="sim", simulated=True))
    w = Workload(4096, 4096)
    dead = Round(joules=None, seconds=1.0, reps=1, output_tokens=4096, input_tokens=4096, valid=False, problems=["zero delta"])
    measurements.append(Measurement(w, [dead], engine={"kind": "sim"}, device={}, meter="sim", simulated=True))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_document(measurements)))
    return path


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when output is captured


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- fit -------------------------------------------------------------------------------------------
def test_fit_json_is_one_object_with_models_and_sweet_spots(capsys, csv_file):
    code, out, err = run_cli(capsys, "fit", csv_file, "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)  # exactly one JSON object: anything else on stdout would fail here
    assert set(doc) == {"models", "simulated"} and doc["simulated"] is False
    by_name = {m["name"]: m for m in doc["models"]}
    assert list(by_name) == ["flops", "memflops", "linear"]
    mem = by_name["memflops"]
    assert mem["n_points"] == 49 and mem["n_in_range"] == [64, 4096] and mem["n_out_range"] == [64, 4096]
    assert 0.005 < mem["mape"] < 0.03  # a fraction, about the 2% noise
    assert mem["loo_mape"] >= mem["mape"]
    assert mem["theta"] == pytest.approx(THETA, rel=0.3)
    assert [s["n_in"] for s in mem["sweet_spots"]] == GRID
    model = FittedModel.from_dict(mem)
    for spot in mem["sweet_spots"]:
        want = model.sweet_spot(spot["n_in"])
        assert spot["n_out_opt"] == pytest.approx(want.n_out_opt)
        assert spot["j_per_out_token_min"] == pytest.approx(want.j_per_out_token_min)
        assert spot["inside_range"] is True
        assert spot["n_out_opt"] == pytest.approx(TRUE.sweet_spot(spot["n_in"]).n_out_opt, rel=0.15)
    for spot in by_name["linear"]["sweet_spots"]:
        assert spot["n_out_opt"] is None and spot["j_per_out_token_min"] is None and spot["inside_range"] is None


def test_fit_one_model(capsys, csv_file):
    code, out, _ = run_cli(capsys, "fit", csv_file, "--fit", "flops", "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(out)["models"]] == ["flops"]


def test_fit_human_output_has_heatmap_models_and_sweet_spots(capsys, csv_file):
    code, out, err = run_cli(capsys, "fit", csv_file)
    assert code == 0 and err == ""
    assert f"Tokens per joule: {csv_file.name}" in out
    assert "★" in out
    assert "Fitted energy models (49 points)" in out
    assert "memflops" in out and "θ5" in out and "LOO MAPE" in out
    assert "Sweet spots" in out
    assert "SIMULATED" not in out


def test_fit_results_json_says_simulated_and_skips(capsys, results_file):
    code, out, err = run_cli(capsys, "fit", results_file, "--fit", "flops")
    assert code == 0
    assert "SIMULATED Tokens per joule" in out and "SIMULATED Fitted energy models (16 points)" in out
    assert "SIMULATED Sweet spots" in out
    assert "skipped 1 result(s)" in err
    code, out, _ = run_cli(capsys, "fit", results_file, "--fit", "flops", "--json")
    doc = json.loads(out)
    assert doc["simulated"] is True and doc["models"][0]["n_points"] == 16


def test_fit_save_then_sweetspot(capsys, csv_file, tmp_path):
    saved = tmp_path / "models" / "fit.json"
    code, out, _ = run_cli(capsys, "fit", csv_file, "--save", saved)
    assert code == 0 and f"saved 3 model(s) to {saved}" in out
    models = load_models(saved)
    assert [m.name for m in models] == ["flops", "memflops", "linear"]
    assert json.loads(saved.read_text())["simulated"] is False

    code, out, err = run_cli(capsys, "sweetspot", saved, "--n-in", 512, "--fit", "memflops", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    want = models[1].sweet_spot(512)
    spot = doc["sweet_spots"][0]
    assert doc["model"] == "memflops"
    assert spot["n_out_opt"] == pytest.approx(want.n_out_opt)
    assert spot["j_per_out_token_min"] == pytest.approx(want.j_per_out_token_min)
    assert spot["tokens_per_joule_max"] == pytest.approx(1 / want.j_per_out_token_min)
    assert spot["inside_range"] is True and spot["n_in_inside_range"] is True

    code, out, _ = run_cli(capsys, "sweetspot", saved, "--n-in", 512, 8192, "--fit", "flops")
    assert code == 0
    assert "Sweet spot of the flops model" in out
    assert tokens(models[0].sweet_spot(512).n_out_opt) in out  # the plugin's rounding
    assert "n_in outside the fitted 64–4096" in out


def test_fit_json_output_is_itself_a_model_file(capsys, csv_file, tmp_path):
    _, out, _ = run_cli(capsys, "fit", csv_file, "--fit", "memflops", "--json")
    path = tmp_path / "fit.json"
    path.write_text(out)
    assert FittedModel.load(path).name == "memflops"
    code, out, _ = run_cli(capsys, "sweetspot", path, "--n-in", 64)
    assert code == 0 and "inside the fitted range" in out


def test_sweetspot_linear_and_simulated(capsys, results_file, tmp_path):
    saved = tmp_path / "m.json"
    assert run_cli(capsys, "fit", results_file, "--fit", "linear", "--save", saved)[0] == 0
    code, out, _ = run_cli(capsys, "sweetspot", saved, "--n-in", 256)
    assert code == 0
    assert "SIMULATED Sweet spot of the linear model" in out
    assert "none" in out and "no interior minimum" in out


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no such file"),
        ("n_in,j_per_out_token\n64,1\n", "line 1: missing column(s) n_out"),
        ("n_in,n_out,j_per_out_token\n64,abc,1\n", "line 2: n_out is not a number: 'abc'"),
        ("n_in,n_out,j_per_out_token\n64,0,1\n", "line 2: n_out must be positive"),
        ("n_in,n_out,energy_j\n64,64,-2\n", "line 2: energy_j must be positive"),
        ("n_in,n_out,j_per_out_token\n64,64,NaN\n", "line 2: j_per_out_token must be finite"),
        ("n_in,n_out,j_per_out_token\n64,64,1\n128,64,1\n64,64,1.1\n",
         "2 distinct (n_in, n_out) points; the linear model has 3 parameters"),
        ("", "empty file"),
    ],
)
def test_fit_bad_input_exits_2_with_one_line(capsys, tmp_path, text, message):
    path = tmp_path / "bad.csv"
    if text is not None:
        path.write_text(text)
    code, out, err = run_cli(capsys, "fit", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"joules fit: error: {path}: ")
    assert message in err


def test_fit_all_fits_what_the_points_allow_and_notes_the_rest(capsys, tmp_path):
    path = tmp_path / "four.csv"
    path.write_text("n_in,n_out,j_per_out_token\n64,64,1\n128,64,1.5\n64,128,0.8\n128,128,1.1\n")
    code, out, err = run_cli(capsys, "fit", path, "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(out)["models"]] == ["linear"]
    assert "not fitted: " in err and "the flops model has 5 parameters" in err and "the memflops model has 6" in err
    # a model named explicitly is an error when the points cannot determine it
    code, out, err = run_cli(capsys, "fit", path, "--fit", "flops")
    assert code == 2 and out == "" and "the flops model has 5 parameters" in err


def test_fit_bad_model_choice_is_a_usage_error(capsys, csv_file):
    with pytest.raises(SystemExit) as info:
        main(["fit", str(csv_file), "--fit", "cubic"])
    assert info.value.code == 2
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


def test_fit_unwritable_save_exits_2(capsys, csv_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "fit", csv_file, "--save", blocker / "m.json")
    assert code == 2 and "cannot write the model file" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "no such file"),
        ('{"a": 1}', [], "not a model file"),
        ("{", [], "not valid JSON"),
        ("MODELS", ["--fit", "cubic"], "unknown model 'cubic'; known models: flops, memflops, linear (or best, all)"),
        ("ONE", ["--fit", "linear"], "has no 'linear' model; it holds: flops"),
    ],
)
def test_sweetspot_bad_input_exits_2(capsys, tmp_path, content, extra, message):
    path = tmp_path / "m.json"
    if content == "MODELS":
        path.write_text(json.dumps({"models": [
            FittedModel(n, t, 0.01, None, 9, (64, 512), (64, 512)).to_dict()
            for n, t in (("flops", THETA[:5]), ("memflops", THETA), ("linear", (1.0, 1.0, 1.0)))
        ]}))
    elif content == "ONE":
        FittedModel("flops", THETA[:5], 0.01, None, 9, (64, 512), (64, 512)).save(path)
    elif content is not None:
        path.write_text(content)
    code, out, err = run_cli(capsys, "sweetspot", path, "--n-in", 512, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("joules sweetspot: error: ")
    assert message in err


@pytest.mark.parametrize("value", ["0", "-5", "12.5", "many"])
def test_sweetspot_bad_n_in_is_a_usage_error(capsys, tmp_path, value):
    with pytest.raises(SystemExit) as info:
        main(["sweetspot", str(tmp_path / "m.json"), "--n-in", value])
    assert info.value.code == 2
    assert f"argument --n-in: expected a positive whole number of tokens, got '{value}'" in capsys.readouterr().err


# -- the installed console script --------------------------------------------------------------------
def _joules_script() -> str:
    script = shutil.which("joules", path=str(Path(sys.executable).parent)) or shutil.which("joules")
    if script is None:
        pytest.skip("the joules console script is not installed (pip install -e .)")
    return script


def test_console_script_fit(csv_file, tmp_path):
    saved = tmp_path / "m.json"
    done = subprocess.run([_joules_script(), "fit", str(csv_file), "--fit", "memflops", "--json", "--save", str(saved)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)["models"][0]
    assert printed["name"] == "memflops" and printed["n_points"] == 49
    assert FittedModel.load(saved) == FittedModel.from_dict(printed)


def test_console_script_bad_input_has_no_traceback(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("n_in,n_out,j_per_out_token\n64,64,1\n64,32.5,1\n")
    done = subprocess.run([_joules_script(), "fit", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"joules fit: error: {path}: line 3: n_out must be a whole number of tokens, got '32.5'\n"


def test_subcommand_modules_import_nothing_heavy():
    code = (
        "import sys, pytest_joules.cli.fit, pytest_joules.cli.sweetspot\n"
        "heavy = [m for m in ('numpy', 'scipy', 'matplotlib', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_fit_is_consistent_with_the_library(capsys, csv_file):
    from pytest_joules.models.points import read_points

    _, out, _ = run_cli(capsys, "fit", csv_file, "--fit", "memflops", "--json")
    direct = fit("memflops", read_points(csv_file).points)
    assert json.loads(out)["models"][0]["theta"] == pytest.approx(list(direct.theta), rel=1e-12)


# -- sweetspot on a file of several models (issue 13, fix 1) and the --fit name (fix 11) -----------
COMMITTED_MODEL = Path(__file__).parent.parent / "baselines" / "h100-sxm-simulated" / "sim-llama-3-1-8b-bf16-graphs.model.json"


def _three_models(path: Path, loo: dict[str, float]) -> Path:
    path.write_text(json.dumps({"models": [
        FittedModel(n, t, 0.01, loo[n], 9, (64, 512), (64, 512)).to_dict()
        for n, t in (("flops", THETA[:5]), ("memflops", THETA), ("linear", (1.0, 1.0, 1.0)))
    ]}))
    return path


def test_sweetspot_picks_the_lowest_loo_mape_and_says_which(capsys, tmp_path):
    path = _three_models(tmp_path / "m.json", {"flops": 0.04, "memflops": 0.02, "linear": 0.01})
    code, out, err = run_cli(capsys, "sweetspot", path, "--n-in", 512)
    assert code == 0 and err == ""
    assert "Sweet spot of the memflops model" in out  # linear has no sweet spot, however low its MAPE
    assert "chose the memflops model: the lowest leave-one-out MAPE" in out
    assert "flops 4.00%, memflops 2.00%, linear 1.00%" in out
    code, out, _ = run_cli(capsys, "sweetspot", path, "--n-in", 512, "--json")
    assert json.loads(out)["model"] == "memflops" and json.loads(out)["chosen_by"] == "lowest loo_mape"


def test_sweetspot_on_the_committed_model_file_as_the_readme_shows(capsys):
    code, out, err = run_cli(capsys, "sweetspot", COMMITTED_MODEL, "--n-in", 512)
    assert code == 0 and err == ""
    assert "SIMULATED Sweet spot of the" in out and "chose the " in out


def test_sweetspot_n_in_takes_a_comma_list_like_sweep(capsys, tmp_path):
    path = _three_models(tmp_path / "m.json", {"flops": 0.04, "memflops": 0.02, "linear": 0.01})
    code, out, _ = run_cli(capsys, "sweetspot", path, "--n-in", "128,512", 1024, "512", "--json")
    assert code == 0
    assert [s["n_in"] for s in json.loads(out)["sweet_spots"]] == [128, 512, 1024]
    with pytest.raises(SystemExit):
        main(["sweetspot", str(path), "--n-in", "128,0"])
    assert "argument --n-in: expected a positive whole number of tokens, got '0'" in capsys.readouterr().err


def test_sweetspot_fit_all_shows_each_model(capsys, tmp_path):
    path = _three_models(tmp_path / "m.json", {"flops": 0.04, "memflops": 0.02, "linear": 0.01})
    code, out, _ = run_cli(capsys, "sweetspot", path, "--n-in", 512, "--fit", "all")
    assert code == 0 and "Sweet spot of 3 models" in out
    assert all(f"│ {name} " in out for name in ("flops", "memflops", "linear"))
    code, out, _ = run_cli(capsys, "sweetspot", path, "--n-in", 512, "--fit", "all", "--json")
    assert [m["model"] for m in json.loads(out)["models"]] == ["flops", "memflops", "linear"]


@pytest.mark.parametrize("argv", [["fit", "CSV", "--json"], ["sweetspot", "MODEL", "--n-in", "512", "--json"]])
def test_model_is_a_deprecated_alias_of_fit(capsys, csv_file, tmp_path, argv):
    path = _three_models(tmp_path / "m.json", {"flops": 0.04, "memflops": 0.02, "linear": 0.01})
    argv = [str(csv_file) if a == "CSV" else str(path) if a == "MODEL" else a for a in argv]
    code, out, err = run_cli(capsys, *argv, "--model", "flops")
    assert code == 0
    doc = json.loads(out)
    assert (doc["models"][0] if "models" in doc else doc)["model" if "model" in doc else "name"] == "flops"
    assert err.startswith(f"joules {argv[0]}: warning: --model is deprecated here, use --fit")
    assert err.count("\n") == 1
