"""Where no fitted model lies beside the baselines, the summary suggests the `joules calibrate`
command that makes one for this device, with its estimated time; following it gives the plugin a
model with intervals."""

from __future__ import annotations

import json
import re
import shlex
from types import SimpleNamespace

import pytest

from pytest_joules.cli import main
from pytest_joules.report import suggest
from pytest_joules.store.record import ResultRecord

from . import plugin_fake  # noqa: F401  (preloads what inner runs import lazily)

TESTS = """
import pytest

@pytest.mark.energy(n_in=[64, 256, 1024], n_out=[16, 128], requests=4)
def test_grid(joules):
    joules()
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:anyio -p no:cacheprovider "
                     "-W ignore::pytest.PytestAssertRewriteWarning\njoules_model = tiny-gqa\n"
                     "joules_engine_options = noise=0\njoules_seed = 0\n")
    pytester.makepyfile(test_energy=TESTS)
    monkeypatch.chdir(pytester.path)
    monkeypatch.setenv("COLUMNS", "300")
    return pytester


def test_the_summary_suggests_the_calibrate_command_and_following_it_gives_a_model(proj):
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    head = re.search(r"no fitted model beside the baselines; make one for this device \(about (\d+) s on the "
                     r"simulated clock for 8 points, estimated from this session's 6 measurements\):", out)
    assert head, out
    line = next(x.strip() for x in result.stdout.lines if x.strip().startswith("joules calibrate "))
    argv = shlex.split(line)
    assert argv[:8] == ["joules", "calibrate", "--engine", "sim", "--model", "tiny-gqa", "--gpu", "H100-SXM"]
    assert "--engine-option" in argv and argv[argv.index("--engine-option") + 1] == "noise=0"
    assert argv[argv.index("--requests") + 1] == "4"
    # the standard 64..4096, widened where the tests reach further (n_out 16)
    assert argv[argv.index("--n-in-range") + 1] == "64:4096" and argv[argv.index("--n-out-range") + 1] == "16:4096"
    save = argv[argv.index("--save") + 1]
    assert save == "baselines/h100-sxm-simulated/sim-tiny-gqa-bf16-graphs.model.json"

    # following the suggestion writes the model where the plugin looks, in about the time it said
    assert main(argv[1:] + ["--seed", "0", "--json"]) == 0
    took = json.loads((proj.path / save).read_text())["calibration"]["cost_s"]
    # within a factor of 2: the estimate extrapolates the session's short runs to the 64..4096 grid
    assert 0.5 < int(head.group(1)) / took < 2.0
    result = proj.runpytest("--joules")
    out = result.stdout.str()
    assert "model memflops (baselines/h100-sxm-simulated/sim-tiny-gqa-bf16-graphs.model.json): session MAPE" in out
    assert "95% range" in out and "no fitted model" not in out


def options(**kw) -> SimpleNamespace:
    base = dict(engine="trtllm", model="/engines/llama 8b", gpu=None, engine_options={"seed": 7, "tensor_parallel_size": 2},
                sim_slowdown=None, meter="nvml", meter_options={"min_window_s": 2.0}, warmup=1)
    return SimpleNamespace(**{**base, **kw})


def record(n_in: int, n_out: int, requests: int = 16, max_batch_size=None, seconds: float = 2.0) -> ResultRecord:
    return ResultRecord.from_dict({"name": f"{n_in}x{n_out}", "n_in": n_in, "n_out": n_out, "requests": requests, "max_batch_size": max_batch_size,
            "j_per_out_token": 0.1 + n_in / 1e4 + 10 / n_out, "seconds": seconds * n_out / 128,
            "rounds": [{"seconds": 2.5, "reps": 1}] * 3, "engine": {"kind": "trtllm", "model": "llama"},
            "device": {"gpu": "NVIDIA H100"}, "simulated": False})


def test_the_command_carries_the_engine_its_options_and_the_meter_but_not_the_seed(tmp_path):
    records = [record(n, m) for n in (128, 1024) for m in (64, 512)]
    s = suggest.suggest(options(), records, tmp_path / "m.json")
    argv = shlex.split(s.command)
    assert argv[:6] == ["joules", "calibrate", "--engine", "trtllm", "--model", "/engines/llama 8b"]
    assert "--gpu" not in argv and "seed=7" not in s.command  # a real GPU is the one it runs on; a new seed each run
    assert ["--engine-option", "tensor_parallel_size=2", "--meter", "nvml", "--meter-option", "min_window_s=2.0"] == \
        argv[6:12]
    assert argv[argv.index("--n-in-range") + 1] == "64:4096" and argv[argv.index("--n-out-range") + 1] == "64:4096"
    assert s.seconds is not None and s.seconds > 0 and s.basis == 4 and not s.simulated and s.batching_note == ""


def test_one_length_is_widened_and_the_most_common_batching_is_chosen_and_named(tmp_path):
    records = [record(512, 128, max_batch_size=8)] + [record(n, 128) for n in (32, 8192)]
    s = suggest.suggest(options(), records, tmp_path / "m.json")
    argv = shlex.split(s.command)
    assert argv[argv.index("--n-out-range") + 1] == "64:4096"  # the standard range
    assert argv[argv.index("--n-in-range") + 1] == "32:8192"  # the tests reach further: their range
    assert "--max-batch-size" not in argv and argv[argv.index("--requests") + 1] == "16"
    assert "for requests=16, the most common batching here" in s.batching_note


def test_a_slowdown_demo_is_not_carried_into_the_model(tmp_path):
    records = [record(n, m) for n in (64, 512) for m in (64, 512)]
    opts = options(engine="sim", sim_slowdown=1.08, engine_options={"slowdown": 1.08, "noise": 0})
    command = suggest.suggest(opts, records, tmp_path / "m.json").command
    assert "--sim-slowdown" not in command and "slowdown=" not in command and "noise=0" in command


def test_no_hints_leaves_out_the_suggestion_and_the_sweet_spots(proj):
    out = proj.runpytest("--joules", "--joules-no-hints").stdout.str()
    assert "joules calibrate" not in out and "no fitted model" not in out
    proj.makeini(proj.path.joinpath("tox.ini").read_text().replace("[pytest]", "[pytest]\njoules_no_hints = true"))
    out = proj.runpytest("--joules").stdout.str()
    assert "joules calibrate" not in out and "J/tok" in out


def test_only_the_sim_is_told_its_gpu(tmp_path):
    records = [record(n, m) for n in (64, 512) for m in (64, 512)]
    for r in records:
        r.simulated, r.device = True, {"gpu": "FakeGPU 80GB"}
    assert "--gpu" not in suggest.suggest(options(engine="fake"), records, tmp_path / "m.json").command
    assert "--gpu H200" in suggest.suggest(options(engine="sim", gpu="H200"), records, tmp_path / "m.json").command


@pytest.mark.parametrize("records", [[], [ResultRecord(name="t", n_in=64, n_out=64, j_per_out_token=None)]])
def test_no_valid_measurement_no_suggestion(tmp_path, records):
    assert suggest.suggest(options(), records, tmp_path / "m.json") is None


def test_a_dry_run_suggests_no_calibration(proj):
    """A dry run read no energy: a model cannot be fitted from its meter, so no command is offered."""
    result = proj.runpytest("--joules", "--joules-meter", "none")
    result.assert_outcomes(skipped=6)
    out = result.stdout.str()
    assert "dry run: no energy read" in out
    assert "joules calibrate" not in out and "no fitted model" not in out
