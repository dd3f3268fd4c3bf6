"""`joules check`: the budget, the gate estimate, the counter check against a fake NVML, the
plugin rerun's verdicts and the answer, and the whole command on this CPU with a small budget."""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pytest_joules.judge import stats
from pytest_joules.validation import gate
from pytest_joules.validation import steps as S
from pytest_joules.validation.budget import Budget
from pytest_joules.validation.markdown import answer, estimates
from pytest_joules.cli import main
from pytest_joules.meters.base import MeterReading

# -- budget and estimate --------------------------------------------------------------------------


def test_budget_counts_down_and_caps_shares():
    now = [100.0]
    b = Budget(60.0, clock=lambda: now[0])
    assert b.left() == 60 and b.allows(60) and not b.allows(61)
    now[0] += 50
    assert b.elapsed() == 50 and b.left() == 10 and b.share(0.4) == 10  # 40% of 60, but only 10 left
    now[0] += 20
    assert b.left() == 0


@pytest.mark.parametrize("sd, n", [(0.05, 3), (0.05, 14), (0.2, 6), (0.004, 3)])
def test_the_estimates_resolution_is_the_verdicts(sd, n):
    """gate.resolution must be what stats.compare_rounds reports for n vs n rounds of that scatter."""
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = sd / math.sqrt(sum(v * v for v in z) / (n - 1))  # sample sd of the logs is exactly `sd`
    values = [math.exp(scale * v) for v in z]
    c = stats.compare_rounds(values, values, confidence=0.995)
    assert gate.resolution(sd, n, 0.995) == pytest.approx(c.resolution, rel=1e-9)


def test_the_gate_needs_more_rounds_for_more_noise():
    quiet = gate.estimate(0.004, 2.0)  # an optimised engine: well under 1%
    loud = gate.estimate(0.05, 2.0)  # eager transformers on the H200: 5% (data/h200-hf-llama)
    hopeless = gate.estimate(0.5, 2.0)
    assert quiet.rounds == 3 and quiet.seconds == 6.0
    assert loud.rounds is not None and loud.rounds > 14 and loud.resolution_at_3 > 0.2
    assert hopeless.rounds is None and hopeless.seconds is None


# -- the counter check against a fake NVML (real time, 50 ms ticks) -------------------------------------


class TickingGpu:
    """Energy accrues at 100 W, 400 W while loaded; the counter shows it in 50 ms steps."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def _watts(self, t: float) -> float:
        with self.lock:
            return 400.0 if any(a <= t < b for a, b in self.busy) else 100.0

    def energy_j(self, t: float) -> float:
        with self.lock:
            spans = [(a, min(b, t)) for a, b in self.busy if a < t]
        busy = sum(b - a for a, b in spans)
        return 100.0 * (t - self.t0) + 300.0 * busy

    def energy_mj(self, handle) -> int:
        t = time.perf_counter()
        tick = self.t0 + math.floor((t - self.t0) / 0.05) * 0.05
        return int(self.energy_j(tick) * 1000)

    def power_mw(self, handle) -> int:
        return int(self._watts(time.perf_counter()) * 1000)

    def load(self, seconds: float) -> None:
        with self.lock:
            self.busy.append((time.perf_counter(), math.inf))
        time.sleep(seconds)
        with self.lock:
            self.busy[-1] = (self.busy[-1][0], time.perf_counter())


class CounterMeter:
    def __init__(self, gpu: TickingGpu) -> None:
        self.gpu = gpu

    def begin(self) -> None:
        self.start = self.gpu.energy_mj(None)

    def end(self) -> MeterReading:
        time.sleep(0.06)  # the closing tick
        return MeterReading(joules={"gpu": (self.gpu.energy_mj(None) - self.start) / 1000}, seconds=0.0)


def test_counter_check_reads_periods_and_compares_the_counter_with_power():
    from pytest_joules.validation import counter as C

    gpu = TickingGpu()
    found = C.check_counter(gpu, None, CounterMeter(gpu), gpu.load, lambda: None, "fake", period_s=0.4,
                            idle_s=0.1, load_s=0.8, tail_s=0.1, sample_s=0.005, power_average_s=0.0)
    assert found.idle_period_s == pytest.approx(0.05, abs=0.01)
    assert found.busy_period_s == pytest.approx(0.05, abs=0.01)
    assert found.power_integral_j == pytest.approx(400 * found.load_s, rel=0.05)
    # the counter's window includes up to a tick of idle after the load: within about 10%
    assert found.counter_vs_power == pytest.approx(0.0, abs=0.12)
    assert found.max_sample_w == 400.0 and found.samples > 50


# -- the plugin rerun and the answer ------------------------------------------------------------------


def _plugin_result(name: str, status: str | None, resolution: float | None, delta: float = 0.0) -> dict:
    verdict = None if status is None else {"status": status, "delta": delta, "resolution": resolution}
    joules = None if status is None else 1.0
    return {"test": name, "name": name, "n_in": 64, "n_out": 32, "verdict": verdict, "j_per_out_token": 0.1,
            "rounds": [{"joules": joules, "seconds": 1.5}] * 3, "engine": {"runtime": "graphs"}}


def fake_runner(verdicts: list[tuple[str, str | None, float | None]], returncode: int = 0, hang: str = ""):
    """A stand-in for subprocess.run that writes what the plugin would: results JSON and JUnit XML."""
    calls = []

    def run(cmd, cwd, env, capture_output, text, timeout):
        calls.append((cmd, timeout, env))
        session = "record" if "--joules-update-baselines" in cmd else "rerun"
        if session == hang:
            raise subprocess.TimeoutExpired(cmd, timeout, output=b"partial")
        out = Path(next(a for a in cmd if a.startswith("--joules-json=")).split("=", 1)[1])
        out.write_text(json.dumps({"results": [_plugin_result(*v) for v in verdicts]}))
        cases = "".join(f'<testcase name="{v[0]}" time="12.5"/>' for v in verdicts)
        (Path(cwd) / cmd[cmd.index("--junitxml") + 1]).write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
        return subprocess.CompletedProcess(cmd, returncode, "3 passed", "")

    run.calls = calls
    return run


def _rerun(tmp_path, runner, cap=300.0):
    plan = S.plan_for(True, "nvml")
    return S.rerun(plan, Budget(600), tmp_path, cap, runner=runner)


def test_rerun_records_then_reruns_unchanged_in_clean_sessions(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")  # the check may itself run under xdist
    runner = fake_runner([("test_chat_turn", "pass", 0.03), ("test_short_question", "pass", 0.04)])
    step = _rerun(tmp_path, runner)
    assert step.status == S.DONE and step.note == "verdicts of the unchanged rerun: pass, pass"
    (record, t1, env), (again, t2, _) = runner.calls
    assert "--joules-update-baselines" in record and "--joules-update-baselines" not in again
    assert "PYTEST_XDIST_WORKER" not in env
    assert t1 == pytest.approx(150, abs=1)  # half the cap, the rerun the rest
    assert "--joules-model=Llama-3.2-1B" in record
    rows = step.data["sessions"]["rerun"]["results"]
    assert rows[0]["wall_s"] == 12.5 and rows[0]["measured_s"] == 4.5 and rows[0]["rounds"] == 3
    written = (tmp_path / "plugin" / "test_check_energy.py").read_text()
    assert "@pytest.mark.energy(n_in=512, n_out=128, requests=16)" in written
    ans = answer([step], "nvml", 0.05)
    assert ans.verdict == "yes" and ans.seconds_per_test == 12.5 and "worst resolution +/-4.0%" in ans.text


@pytest.mark.parametrize("verdicts, word, words", [
    ([("a", "pass", 0.03), ("b", "regression", 0.04)], "no", "false alarms: b regression"),
    ([("a", "pass", 0.03), ("b", "noisy", 0.21)], "not within the budget", "1 of 2 tests were noisy"),
])
def test_the_answer_follows_the_unchanged_reruns_verdicts(tmp_path, verdicts, word, words):
    step = _rerun(tmp_path, fake_runner(verdicts, returncode=1))
    ans = answer([step], "nvml", 0.05)
    assert ans.verdict == word and words in ans.text


def test_a_dry_run_cannot_answer_and_says_why(tmp_path):
    step = _rerun(tmp_path, fake_runner([("a", None, None)]))
    assert step.data["sessions"]["rerun"]["results"][0]["verdict"] == "dry-run"
    ans = answer([step], "none", 0.05)
    assert ans.verdict == "cannot tell" and "`none` meter" in ans.text


def test_a_session_past_its_budget_stops_the_step(tmp_path):
    step = _rerun(tmp_path, fake_runner([("a", "pass", 0.01)], hang="record"))
    assert step.status == S.CUT and "rerun" not in step.data["sessions"]
    assert "stopped after" in (tmp_path / "plugin" / "record.log").read_text()
    assert answer([step], "nvml", 0.05).verdict == "cannot tell"


def test_a_broken_session_fails_the_step(tmp_path):
    step = _rerun(tmp_path, fake_runner([("a", "pass", 0.01)], returncode=4))
    assert step.status == S.FAILED and "record session exited 4" in step.note


def test_too_little_budget_skips_the_rerun(tmp_path):
    step = _rerun(tmp_path, fake_runner([]), cap=30.0)
    assert step.status == S.SKIPPED and "two pytest sessions need at least 120 s" in step.note


def test_ms_per_decode_step_is_the_slope_over_n_out():
    point = {"requests": 4, "n_in": 32}
    a, b = {**point, "n_out": 16, "seconds_per_run": 0.030}, {**point, "n_out": 128, "seconds_per_run": 0.142}
    assert S._ms_per_step([a, b]) == pytest.approx(1.0)
    assert S._ms_per_step([a]) is None
    assert S._ms_per_step([a, {**b, "seconds_per_run": 0.029}]) is None  # noise, not a step time


def test_estimates_take_the_median_scatter_of_each_runtime():
    step = S.Step("runtimes", "t", data={"runtimes": {
        "eager": {"points": [{"sd_log": 0.05, "sd_of": "J/token", "seconds_per_round": 2.0},
                             {"sd_log": 0.07, "sd_of": "J/token", "seconds_per_round": 4.0}]},
        "graphs": {"error": "budget: not started"}}})
    est = estimates(step, 0.05)
    assert set(est) == {"eager"} and est["eager"]["sd_log"] == pytest.approx(0.06)
    assert est["eager"]["seconds"] == est["eager"]["rounds"] * 3.0


# -- the command -----------------------------------------------------------------------------------------


def test_an_existing_folder_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "old.json").write_text("{}")
    assert main(["check", "--out", str(tmp_path), "--budget", "5"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"joules check: error: --out {tmp_path}: exists and is not an empty folder; give a new folder"


@pytest.mark.parametrize("args, words", [
    (["--model", "nope"], "model 'nope' is neither a checkpoint folder nor a known architecture; known: "),
    (["--big-model", "Llama-9B"], "model 'Llama-9B' is neither"),
    (["--tolerance", "abc"], "--tolerance takes a fraction or a percentage such as 0.05 or 5%, got 'abc'"),
])
def test_bad_arguments_are_one_line_before_anything_runs(tmp_path, capsys, args, words):
    out = tmp_path / "never"
    assert main(["check", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not out.exists()


def test_the_rerun_gates_at_the_checks_tolerance(tmp_path):
    runner = fake_runner([("a", "pass", 0.01)])
    S.rerun(S.plan_for(False, "none"), Budget(600), tmp_path, 300, runner=runner, tolerance=0.1)
    cmd = runner.calls[0][0]
    assert cmd[cmd.index("--joules-tolerance") + 1] == "0.1"
    assert cmd[cmd.index("--joules-meter") + 1] == "none" and "--joules-model=tiny-llama" in cmd


def test_joules_check_on_the_cpu_with_a_small_budget(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "check"
    t0 = time.monotonic()
    rc = main(["check", "--out", str(out), "--budget", "12"])
    took = time.monotonic() - t0
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "report.md").read_text() == printed
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["doctor", "counter", "runtimes", "rerun", "big"]
    assert steps["counter"]["status"] == "skipped" and steps["counter"]["note"] == "no GPU here"
    assert steps["big"]["status"] == "skipped" and "no GPU here" in steps["big"]["note"]
    assert steps["rerun"]["status"] in ("skipped", "done", "cut short")
    runtimes = steps["runtimes"]
    assert runtimes["status"] in ("done", "cut short")  # a busy runner may not finish both in the budget
    found = runtimes["data"]["runtimes"]
    assert found["eager"]["runtime"] == "eager" and (out / "doctor.json").exists()
    if runtimes["status"] == "done":
        assert [p["n_out"] for p in found["eager"]["points"]] == [16, 128] == [p["n_out"] for p in found["graphs"]["points"]]
        assert found["graphs"]["runtime"] == "graphs" and found["eager"]["ms_per_step"] is not None
        assert (out / "runtimes-tiny-llama-eager.json").exists() and (out / "runtimes-tiny-llama-graphs.json").exists()
    assert summary["answer"]["verdict"] == "cannot tell" and "`none` meter" in summary["answer"]["text"]
    assert "**Can this machine gate a 5% regression? Cannot tell:**" in printed
    assert "Plan: CPU: tiny-llama, meter none" in printed and "## Not done" in printed
    # the budget holds, give or take one unit of work (a model load on a busy runner); without it the
    # check runs the rerun's two pytest sessions too, a minute or more here
    assert summary["elapsed_s"] <= took < 40
