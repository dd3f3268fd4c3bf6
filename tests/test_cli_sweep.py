"""`joules sweep` end to end on the simulated device."""

from __future__ import annotations

import json

import pytest

from pytest_joules.cli import main
from pytest_joules.store.results import read_results

SMALL = ["--n-in", "64,256,1024", "--n-out", "64,512", "--requests", "8", "--rounds", "2"]


def sweep(*args: str) -> list[str]:
    return ["sweep", *args]


def test_sweep_writes_results_that_read_back_and_fit(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(sweep(*SMALL, "--model", "llama-3.2-1b", "--gpu", "H200", "--out", str(out))) == 0
    text = capsys.readouterr().out
    assert "SIMULATED Sweep: Llama-3.2-1B on H200" in text
    assert "SIMULATED Tokens per joule" in text and "SIMULATED Fitted energy models (6 points)" in text
    assert "SIMULATED Sweet spots" in text

    results = read_results(out)
    assert results.simulated and results.device["gpu"] == "H200" and results.device["simulated"] is True
    assert results.engine == {"kind": "sim", "model": "Llama-3.2-1B", "dtype": "bf16", "version": "sim-3", "runtime": "graphs"}
    assert sorted((r.workload.n_in, r.workload.n_out) for r in results.rows) == [
        (64, 64), (64, 512), (256, 64), (256, 512), (1024, 64), (1024, 512)
    ]
    for row in results.rows:
        assert row.valid and row.workload.requests == 8 and len(row.round_values) == 2
        assert row.j_per_out_token > 0
    assert {m["name"] for m in results.models} == {"flops", "memflops", "linear"}

    # `joules fit` reads what sweep wrote
    assert main(["fit", str(out), "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["simulated"] is True and len(fitted["models"]) == 3


def test_json_output_is_the_results_document(capsys):
    assert main(sweep("--n-in", "128", "--n-out", "64,128", "--rounds", "1", "--json")) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["schema"] == "pytest-joules/results/1" and doc["simulated"] is True
    assert [r["n_out"] for r in doc["results"]] == [64, 128]
    assert all(r["j_per_out_token"] > 0 for r in doc["results"])
    assert doc["models"] == []  # two points determine no model
    assert "not fitted: the linear model has 3 parameters, the grid has 2 point(s)" in captured.err


def test_same_seed_same_results_and_slowdown_shows_as_a_regression(capsys):
    def j(*extra: str) -> list[float]:
        assert main(sweep("--n-in", "512", "--n-out", "128", "--requests", "4", "--json", *extra)) == 0
        return [r["j_per_out_token"] for r in json.loads(capsys.readouterr().out)["results"]]

    base = j("--seed", "0")
    assert j("--seed", "0") == base
    assert j("--seed", "1") != base
    assert j() != j()  # without --seed each sweep draws a new one, like a rerun on a GPU
    slow = j("--seed", "0", "--sim-slowdown", "1.10")
    assert slow[0] / base[0] == pytest.approx(1.10, abs=0.015)


def test_points_beyond_positions_fail_before_measuring_naming_each(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(sweep("--model", "OPT-1.3B", "--n-in", "1024,2048", "--n-out", "64,1500", "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 2
    assert "3 grid point(s) exceed OPT-1.3B's 2048 positions" in err
    assert "n_in=1024+n_out=1500, n_in=2048+n_out=64, n_in=2048+n_out=1500" in err
    assert "--skip-invalid" in err
    assert not out.exists()  # nothing was measured or written


def test_skip_invalid_measures_the_rest(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(sweep("--model", "OPT-1.3B", "--n-in", "1024,2048", "--n-out", "64,1500", "--skip-invalid", "--out", str(out)))
    text = capsys.readouterr().out
    assert code == 0
    assert "skipped 3 point(s) beyond OPT-1.3B's 2048 positions" in text
    assert [(r.workload.n_in, r.workload.n_out) for r in read_results(out).rows] == [(1024, 64)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "Llama-7"], "unknown simulated model 'Llama-7'; known models: Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B"),
        (["--gpu", "V100"], "unknown simulated GPU 'V100'; known GPUs: H100-SXM, H100-PCIe, H200, A100-SXM-80GB"),
        (["--engine", "nope"], "unknown engine 'nope'"),
        (["--meter", "nope"], "unknown meter 'nope'"),
        (["--meter", "nvml"], ""),  # nvml with the sim engine: refused one way or another, never a traceback
        (["--engine", "hf", "--sim-slowdown", "1.1"], "--sim-slowdown applies to the sim engine only"),
        (["--engine", "hf", "--gpu", "H200"], "--gpu picks the simulated GPU (sim engine only)"),  # not ignored
    ],
)
def test_bad_names_exit_2_with_one_line(args, message, capsys):
    code = main(sweep("--n-in", "64", "--n-out", "64", *args))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("joules sweep: error:") and "Traceback" not in err


@pytest.mark.parametrize("args", [["--n-in", "64,abc", "--n-out", "64"], ["--n-in", "0", "--n-out", "64"],
                                  ["--n-in", "64", "--n-out", "64", "--requests", "0"],
                                  ["--n-in", "64", "--n-out", "64", "--sim-slowdown", "-1"],
                                  ["--n-in", "64", "--n-out", "64", "--min-window-s", "-0.5"]])
def test_bad_numbers_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(sweep(*args))
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_dry_run_meter_measures_nothing_and_says_so(capsys):
    assert main(sweep("--n-in", "64", "--n-out", "64", "--meter", "none", "--rounds", "1")) == 0
    text = capsys.readouterr().out
    assert "on SIMULATED H100-SXM" in text
    assert "no valid energy readings (dry run or invalid windows): nothing to fit or draw" in text


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    assert main(sweep(*SMALL, "--plot", str(png))) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote plot to {png}" in capsys.readouterr().out


def test_meter_options_reach_the_meter(capsys):
    # a 2 s minimum window makes the 64-token workload repeat inside each window
    assert main(["sweep", "--n-in", "64", "--n-out", "64", "--rounds", "1", "--meter-option", "min_window_s=2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["results"][0]
    assert row["rounds"][0]["reps"] > 1
    assert row["rounds"][0]["seconds"] >= 2.0


@pytest.mark.parametrize(
    "option, message",
    [
        ("bogus", "--meter-option takes KEY=VALUE"),
        ("window=2", "unknown sim meter option(s) 'window'; it accepts min_window_s"),
        ("min_window_s=soon", "sim meter min_window_s must be a non-negative number"),
        ("min_window_s=nan", "sim meter min_window_s must be a non-negative number"),  # never closes
        ("min_window_s=inf", "sim meter min_window_s must be a non-negative number"),
    ],
)
def test_bad_meter_options_exit_2_naming_them(option, message, capsys):
    assert main(["sweep", "--n-in", "64", "--n-out", "64", "--meter-option", option]) == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_out_path_is_one_line_before_measuring(tmp_path, capsys):
    (tmp_path / "blocked").write_text("a file, not a directory\n")
    for out, message in ((tmp_path / "blocked" / "r.json", "blocked is a file, not a directory"),
                         (tmp_path, "is a directory; give a file name")):
        code = main(sweep("--n-in", "64", "--n-out", "64", "--rounds", "1", "--out", str(out)))
        captured = capsys.readouterr()
        assert code == 2
        assert captured.err.startswith("joules sweep: error: --out ") and message in captured.err
        assert "Traceback" not in captured.err and captured.out == ""  # refused before measuring


def _j_per_token(capsys, *extra: str) -> list[float]:
    assert main(sweep("--n-in", "512", "--n-out", "128", "--requests", "4", "--json", *extra)) == 0
    return [r["j_per_out_token"] for r in json.loads(capsys.readouterr().out)["results"]]


def test_engine_options_reach_the_engine(capsys):
    base = _j_per_token(capsys, "--seed", "0")
    slow = _j_per_token(capsys, "--seed", "0", "--engine-option", "slowdown=1.10")
    assert slow[0] / base[0] == pytest.approx(1.10, abs=0.015)
    # the same setting by flag and by option is the same run; the seed option is the prompts' seed too
    assert _j_per_token(capsys, "--seed", "0", "--sim-slowdown", "1.1", "--engine-option", "slowdown=1.1") == slow
    assert _j_per_token(capsys, "--engine-option", "seed=1") == _j_per_token(capsys, "--seed", "1")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine-option", "slowdown"], "--engine-option takes KEY=VALUE (e.g. slowdown=1.1), got 'slowdown'"),
        (["--engine-option", "=2"], "--engine-option takes KEY=VALUE (e.g. slowdown=1.1), got '=2'"),
        (["--engine-option", "bogus=1"], "unknown sim engine option(s) 'bogus'"),
        (["--engine", "hf", "--model", "tiny-llama", "--engine-option", "slowdown=1.1"],
         "unknown hf engine option(s) 'slowdown'; the hf engine accepts device, dtype, seed"),
        (["--sim-slowdown", "1.1", "--engine-option", "slowdown=1.2"],
         "--sim-slowdown 1.1 and --engine-option slowdown=1.2 disagree; set the slowdown once"),
        (["--seed", "3", "--engine-option", "seed=4"], "--seed 3 and --engine-option seed=4 disagree; set the seed once"),
        (["--engine-option", "seed=-1"], "--engine-option seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_engine_options_exit_2_with_one_line(args, message, capsys):
    code = main(sweep("--n-in", "64", "--n-out", "64", "--rounds", "1", *args))
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert captured.err.startswith("joules sweep: error:") and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before measuring


# -- feedback on long work and tables that read in a plain log (issue 13, fix 9) ---------------------
def test_sweep_says_what_it_loads_while_the_engine_loads(capsys, monkeypatch):
    from pytest_joules import registry

    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal's stderr, where the spinner shows

    def slow_load(spec):
        import time

        err = ""
        for _ in range(40):  # the spinner draws within its first refresh (1/12.5 s)
            err += capsys.readouterr().err
            if "loading the sim engine with Llama-3.1-8B…" in err:
                raise KeyboardInterrupt
            time.sleep(0.05)
        raise AssertionError(f"nothing said while loading: {err!r}")

    monkeypatch.setattr(registry, "make_engine", slow_load)
    assert main(["sweep", "--model", "Llama-3.1-8B", "--n-in", "64", "--n-out", "64"]) == 130


def test_the_progress_bar_has_an_eta_and_a_label_of_one_width(capsys, monkeypatch):
    import rich.progress

    seen = {}

    class Recording(rich.progress.Progress):
        def update(self, task_id, **kwargs):
            if "description" in kwargs:
                seen.setdefault("labels", set()).add(kwargs["description"])
            super().update(task_id, **kwargs)

        def __init__(self, *columns, **kwargs):
            seen["columns"] = columns
            super().__init__(*columns, **kwargs)

    monkeypatch.setattr(rich.progress, "Progress", Recording)
    main(["sweep", "--n-in", "64,4096", "--n-out", "8,512", "--rounds", "1", "--seed", "1"])
    assert any(isinstance(c, rich.progress.TimeRemainingColumn) for c in seen["columns"])
    assert len(seen["labels"]) == 4 and len({len(label) for label in seen["labels"]}) == 1


def test_sweep_tables_read_without_colour_and_titles_do_not_wrap(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["sweep", "--n-in", "64,512", "--n-out", "64,256,1024", "--rounds", "1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # captured: no colour, so the best model needs its mark
    assert "SIMULATED Sweep: Llama-3.1-8B on H100-SXM (requests=1)" in out.splitlines()[0]
    assert "★ lowest LOO MAPE" in out and "in green" not in out
    assert "notes" not in out  # no point had a note: no empty column
    assert "tokens per joule (higher is better); ★ best\n" in out.replace(" \n", "\n").replace("  ", " ") or \
        "★ best" in next(line for line in out.splitlines() if "higher is better" in line)
