import json
import math
import random
import subprocess
import sys

import pytest

from pytest_joules.cli import main
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import write_results
from pytest_joules.judge.verdict import Verdict
from pytest_joules.engines.workload import Workload

H100 = {"gpu": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0, "driver": "550.54", "cuda": "12.4", "simulated": False}
ENGINE = {"kind": "trtllm", "model": "llama-3-8b", "dtype": "bf16", "version": "1.2.0"}


def make(name, center, *, n=5, noise=0.01, seed=0, n_in=512, n_out=128, device=None, engine=None,
         simulated=False, tolerance=None, valid=True):
    """A hand-made measurement: n rounds of J/token around `center` with seeded relative noise."""
    rng = random.Random(seed)
    rounds = [
        Round(joules=center * math.exp(rng.gauss(0, noise)) * n_out, seconds=1.0, reps=1,
              output_tokens=n_out, input_tokens=n_in, valid=valid,
              problems=[] if valid else ["zero delta"])
        for _ in range(n)
    ]
    m = Measurement(
        workload=Workload(n_in, n_out), rounds=rounds, engine=dict(engine or ENGINE),
        device=dict(device or H100), meter="nvml", simulated=simulated, name=name,
    )
    if tolerance is not None:
        m.verdict = Verdict("new", tolerance=tolerance)
    return m


@pytest.fixture
def files(tmp_path):
    def write(old, new):
        a, b = tmp_path / "old.json", tmp_path / "new.json"
        write_results(a, old)
        write_results(b, new)
        return str(a), str(b)

    return write


def compare(capsys, *args):
    code = main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- exit codes ---------------------------------------------------------------------------------
def test_the_same_energy_passes_with_fail(files, capsys):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.0, seed=2)])
    code, out, _ = compare(capsys, old, new, "--fail")
    assert code == 0
    assert "test_a" in out and "pass" in out and "1 compared: 1 pass" in out


def test_a_regression_exits_1_only_with_fail(files, capsys):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.12, seed=2)])
    code, out, _ = compare(capsys, old, new, "--fail")
    assert code == 1
    assert "regression" in out and "+12" in out and "significant" not in out  # the statistics at -v
    assert "significant" in compare(capsys, old, new, "-v")[1]
    assert compare(capsys, old, new)[0] == 0


def test_an_improvement_does_not_fail(files, capsys):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 0.85, seed=2)])
    code, out, _ = compare(capsys, old, new, "--fail")
    assert code == 0 and "improved" in out


def test_noisy_results_fail_only_when_asked(files, capsys):
    old, new = files([make("test_a", 1.0, noise=0.15, seed=1)], [make("test_a", 1.0, noise=0.15, seed=2)])
    code, out, _ = compare(capsys, old, new, "--fail")
    assert code == 0 and "noisy" in out and "too noisy" in out
    assert compare(capsys, old, new, "--fail", "--noisy-fails")[0] == 1


# -- tolerance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tol", ["15%", "0.15"])
def test_tolerance_accepts_fraction_or_percent(files, capsys, tol):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.10, seed=2)])
    assert compare(capsys, old, new, "--fail")[0] == 1
    assert compare(capsys, old, new, "--fail", "--tolerance", tol)[0] == 0


def test_a_bare_tolerance_above_one_is_a_usage_error(files, capsys):
    old, new = files([make("test_a", 1.0)], [make("test_a", 1.0)])
    with pytest.raises(SystemExit) as exc:
        main(["compare", old, new, "--tolerance", "15"])
    assert exc.value.code == 2
    assert "write 15% for 15 percent" in capsys.readouterr().err


def test_the_recorded_per_test_tolerance_is_used(files, capsys):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.10, seed=2, tolerance=0.20)])
    code, out, _ = compare(capsys, old, new, "--fail", "--json")
    assert code == 0
    (row,) = json.loads(out)["results"]
    assert row["tolerance"] == 0.20 and row["status"] == "pass"
    # an explicit --tolerance overrides the recorded one
    assert compare(capsys, old, new, "--fail", "--tolerance", "5%")[0] == 1


# -- matching -----------------------------------------------------------------------------------
def test_results_are_matched_by_name_and_workload(files, capsys):
    old, new = files(
        [make("test_a", 1.0, seed=1), make("test_b", 2.0, seed=3), make("test_c", 1.0, n_out=64)],
        [make("test_b", 2.0, seed=4), make("test_a", 1.0, seed=2), make("test_c", 1.0, n_out=256), make("test_d", 1.0)],
    )
    code, out, _ = compare(capsys, old, new, "--json")
    data = json.loads(out)
    assert code == 0
    assert sorted(r["name"] for r in data["results"]) == ["test_a", "test_b"]
    assert data["only_old"] == [{"name": "test_c", "n_in": 512, "n_out": 64, "requests": 1}]
    assert [(r["name"], r["n_out"]) for r in data["only_new"]] == [("test_c", 256), ("test_d", 128)]
    b = next(r for r in data["results"] if r["name"] == "test_b")
    assert b["old"] == pytest.approx(2.0, rel=0.03) and b["new"] == pytest.approx(2.0, rel=0.03)
    code, out, _ = compare(capsys, old, new)
    assert "only in OLD (1):" in out and "test_c (n_in=512, n_out=64, requests=1)" in out
    assert "only in NEW (2):" in out and "test_d" in out


def test_a_different_prompt_seed_is_the_same_workload(files, capsys):
    old_m, new_m = make("test_a", 1.0, seed=1), make("test_a", 1.0, seed=2)
    new_m.workload = Workload(512, 128, seed=7)
    old, new = files([old_m], [new_m])
    assert compare(capsys, old, new, "--fail")[0] == 0


def test_nothing_in_common_is_an_error_not_a_pass(files, capsys):
    old, new = files([make("test_a", 1.0)], [make("test_b", 1.0)])
    code, out, err = compare(capsys, old, new, "--fail")
    assert code == 2 and out == ""
    assert "nothing to compare: none of the 1 result(s)" in err and err.count("\n") == 1
    old, new = files([make("test_a", 1.0)], [])
    assert compare(capsys, old, new, "--fail")[0] == 2


def test_repeated_names_are_matched_in_order(files, capsys):
    old, new = files(
        [make("test_x", 1.0, seed=1), make("test_x", 3.0, seed=2)],
        [make("test_x", 1.0, seed=3), make("test_x", 3.6, seed=4)],
    )
    code, out, _ = compare(capsys, old, new, "--fail", "--json")
    statuses = [r["status"] for r in json.loads(out)["results"]]
    assert statuses == ["pass", "regression"] and code == 1


def test_invalid_new_results_are_reported_invalid(files, capsys):
    old, new = files([make("test_a", 1.0)], [make("test_a", 1.0, valid=False)])
    code, out, _ = compare(capsys, old, new, "--fail")
    assert code == 1  # a gate must not pass on a run that measured nothing valid
    assert "invalid" in out and "no valid rounds in" in out
    assert compare(capsys, old, new)[0] == 0  # without --fail it only reports


def test_test_ids_with_brackets_are_printed_verbatim(files, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # room for the name on one line (narrower breaks it at "[" and "-")
    name = "tests/test_llm.py::test_energy[chat-[/bold]]"
    old, new = files([make(name, 1.0, seed=1)], [make(name, 1.0, seed=2)])
    out = compare(capsys, old, new)[1]
    # the table names each file once, then its tests: both parts verbatim, brackets not read as markup
    assert "\n tests/test_llm.py\n" in out and "\n   test_energy[chat-[/bold]] " in out


# -- devices ------------------------------------------------------------------------------------
def test_different_devices_are_refused_with_the_way_out(files, capsys):
    a100 = dict(H100, gpu="NVIDIA A100-SXM4-80GB", power_limit_w=400.0)
    old, new = files([make("test_a", 1.0)], [make("test_a", 1.0, device=a100)])
    code, out, err = compare(capsys, old, new, "--fail")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "different devices" in err and "power_limit_w 700.0 vs 400.0" in err
    assert "--allow-different-devices" in err
    code, out, _ = compare(capsys, old, new, "--fail", "--allow-different-devices")
    assert code == 0 and "note: different devices, compared anyway" in out


def test_a_changed_power_limit_alone_is_another_device(files, capsys):
    capped = dict(H100, power_limit_w=500.0)
    old, new = files([make("test_a", 1.0)], [make("test_a", 1.0, device=capped)])
    assert compare(capsys, old, new)[0] == 2


def test_run_to_run_device_state_is_not_part_of_the_fingerprint(files, capsys):
    warm = dict(H100, temperature_c=71, uuid="GPU-other-card-same-model")
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.0, seed=2, device=warm)])
    assert compare(capsys, old, new, "--fail")[0] == 0


def test_different_engine_versions_are_compared_and_noted(files, capsys):
    newer = dict(ENGINE, version="1.2.1")
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.0, seed=2, engine=newer)])
    code, out, _ = compare(capsys, old, new)
    assert code == 0 and "engines differ: version '1.2.0' vs '1.2.1'" in out


def test_simulated_results_say_so_in_the_title(files, capsys):
    sim = {"gpu": "H100-SXM (simulated)", "simulated": True}
    old, new = files([make("test_a", 1.0, device=sim, simulated=True)], [make("test_a", 1.0, device=sim, simulated=True)])
    out = compare(capsys, old, new)[1]
    heading, title = out.splitlines()[:2]
    assert heading.startswith("joules compare (SIMULATED): ") and "SIMULATED" in title
    assert json.loads(compare(capsys, old, new, "--json")[1])["simulated"] is True


def test_simulated_against_real_is_refused(files, capsys):
    old, new = files([make("test_a", 1.0)], [make("test_a", 1.0, simulated=True)])
    code, _, err = compare(capsys, old, new)
    assert code == 2 and "simulated False vs True" in err


# -- bad input ----------------------------------------------------------------------------------
def test_missing_file_is_one_line_and_exit_2(files, capsys, tmp_path):
    old, _ = files([make("test_a", 1.0)], [])
    code, out, err = compare(capsys, old, str(tmp_path / "nope.json"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "nope.json: no such file" in err


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not valid JSON"), ('{"schema": "other"}', "not a pytest-joules results file"), ("[]", "not a pytest-joules results file")],
)
def test_corrupt_files_are_one_line_and_exit_2(files, capsys, tmp_path, content, message):
    old, _ = files([make("test_a", 1.0)], [])
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, _, err = compare(capsys, old, str(bad))
    assert code == 2 and message in err and err.count("\n") == 1


def test_the_console_script_exit_codes(files):
    old, new = files([make("test_a", 1.0, seed=1)], [make("test_a", 1.2, seed=2)])
    run = lambda *a: subprocess.run([sys.executable, "-m", "pytest_joules", "compare", *a], capture_output=True, text=True)
    assert run(old, new, "--fail").returncode == 1
    missing = run(old, old + ".missing", "--fail")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
