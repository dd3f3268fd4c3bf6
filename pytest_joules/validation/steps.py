"""The steps of `joules check`. Each returns a `Step`: its status, seconds, a one-line result and
its figures; files go into the check's folder. A step that runs out of budget stops with what it
has ("cut short"); one that cannot run here says why ("skipped"); an error is "failed", and the
check goes on with the next step.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import JoulesError
from .budget import Budget

DONE, CUT, SKIPPED, FAILED = "done", "cut short", "skipped", "failed"


@dataclass
class Step:
    name: str
    title: str
    status: str = DONE
    seconds: float = 0.0
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What the check runs on this machine: a GPU plan (a 1B model, nvml, an 8B point) or the
    CPU plan (the tiny test model, the `none` meter: token counts and timings, no energy)."""

    gpu: bool
    meter: str
    model: str
    requests: int
    n_in: int
    n_outs: tuple[int, int]  # two output lengths: their time difference is that many decode steps
    rounds: int
    tests: tuple[tuple[str, int, int], ...]  # the plugin's tests: name, n_in, n_out
    max_seconds: float  # --joules-max-seconds of the plugin's tests
    rerun_min_s: float  # the least the record-and-rerun step needs (two pytest sessions)
    big_model: str | None
    big_point: tuple[int, int]
    big_min_s: float
    #: the meter's shortest window (None: its own): the none meter's is 0, and one run of the
    #: tiny model lasts milliseconds, which one scheduler hiccup of a shared runner doubles
    min_window_s: float | None = None


def plan_for(gpu: bool, meter: str, model: str | None = None, big_model: str | None = None) -> Plan:
    if gpu:
        return Plan(gpu=True, meter=meter, model=model or "Llama-3.2-1B", requests=16, n_in=256,
                    n_outs=(32, 128), rounds=5,
                    tests=(("chat_turn", 512, 128), ("short_question", 128, 64), ("complete_line", 1024, 32)),
                    max_seconds=15.0, rerun_min_s=120.0, big_model=big_model or "Llama-3.1-8B",
                    big_point=(1024, 128), big_min_s=150.0)
    return Plan(gpu=False, meter=meter, model=model or "tiny-llama", requests=4, n_in=32, n_outs=(16, 128),
                rounds=3, tests=(("chat_turn", 64, 32), ("short_question", 32, 16), ("complete_line", 128, 8)),
                max_seconds=1.0, rerun_min_s=20.0, big_model=None, big_point=(0, 0), big_min_s=0.0,
                min_window_s=0.5)


def _write_json(path: Path, data: Any) -> None:
    from ..store.results import atomic_write_json

    atomic_write_json(path, data)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


# -- 1. doctor ---------------------------------------------------------------------------------


def doctor(out: Path) -> Step:
    from ..probes import collect

    step = Step("doctor", "joules doctor")
    checks = collect()
    _write_json(out / "doctor.json", {"checks": [asdict(c) for c in checks]})
    usable = {kind: [c.name for c in checks if c.kind == kind and c.usable] for kind in ("engine", "meter", "gpu")}
    gpus = [c for c in checks if c.kind == "gpu"]
    step.data = {"checks": [asdict(c) for c in checks], "usable": usable}
    gpu_text = ", ".join(c.name for c in gpus if c.usable) or f"none ({gpus[0].reason if gpus else 'no NVML'})"
    step.note = (f"engines {', '.join(usable['engine']) or 'none'}; meters {', '.join(usable['meter']) or 'none'}; "
                 f"GPUs {gpu_text}")
    return step


# -- 2. the energy counter -----------------------------------------------------------------------


def counter(plan: Plan, budget: Budget, out: Path, torch: Any) -> Step:
    from . import counter as C

    step = Step("counter", "energy counter: update period idle and busy, against power under a load step")
    if not plan.gpu or plan.meter != "nvml":
        step.status, step.note = SKIPPED, ("no GPU here" if not plan.gpu else "NVML cannot meter this GPU (see doctor)")
        return step
    if not budget.allows(C.SECONDS):
        step.status, step.note = SKIPPED, f"budget: {budget.left():.0f} s left, it needs {C.SECONDS:.0f} s"
        return step
    found = C.run(torch)
    step.data = {**asdict(found), "counter_vs_power": found.counter_vs_power}
    _write_json(out / "counter.json", step.data)
    period = "/".join("?" if p is None else f"{p:.3f}" for p in (found.idle_period_s, found.busy_period_s))
    diff = found.counter_vs_power
    step.note = (f"updates every {period} s (idle/busy); counter {found.counter_j or 0:.0f} J vs shifted power "
                 f"integral {found.power_shifted_j:.0f} J ({'?' if diff is None else f'{diff:+.1%}'}), raw "
                 f"integral {found.power_integral_j:.0f} J")
    return step


# -- 3. the hf runtimes ----------------------------------------------------------------------------


def _sd_log_of(m: Any) -> tuple[float | None, str]:
    """The rounds' scatter: of J/token where energy was read, else of the time per run."""
    from .gate import sd_log

    if m.valid:
        return sd_log(m.round_values), "J/token"
    return sd_log([r.seconds / r.reps for r in m.rounds if r.reps]), "seconds per run"


def _point(m: Any) -> dict[str, Any]:
    sd, of = _sd_log_of(m)
    return {"n_in": m.workload.n_in, "n_out": m.workload.n_out, "requests": m.workload.requests,
            "seconds_per_run": m.seconds, "seconds_per_round": statistics.median(r.seconds for r in m.rounds),
            "rounds": len(m.rounds), "j_per_out_token": m.j_per_out_token, "avg_watts": m.avg_watts,
            "gpu_util": m.gpu_util, "sd_log": sd, "sd_of": of, "problems": m.problems}


def _ms_per_step(points: list[dict[str, Any]]) -> float | None:
    if len(points) < 2:
        return None
    a, b = points[0], points[-1]
    steps = b["n_out"] - a["n_out"]
    if not steps or a["seconds_per_run"] is None or b["seconds_per_run"] is None:
        return None
    # the requests run as one batch (no max_batch_size): the runs differ by `steps` decode steps
    ms = (b["seconds_per_run"] - a["seconds_per_run"]) / steps * 1e3
    return ms if ms > 0 else None  # the longer run was not slower: the runs' noise swamped the steps


def _one_runtime(plan: Plan, runtime: str, deadline: float, model: str, n_in: int, n_outs: tuple[int, ...],
                 rounds: int) -> tuple[dict[str, Any], list[Any], bool]:
    """Measure `model` at each n_out with one runtime. Returns its figures, the measurements, and
    whether the deadline cut it short."""
    from .. import registry
    from ..engines.base import EngineSpec
    from ..measure.path import measure
    from ..meters.base import MeterSpec
    from ..engines.workload import Workload

    t0 = time.monotonic()
    engine = registry.make_engine(EngineSpec("hf", model=model, options={"runtime": runtime}))
    entry: dict[str, Any] = {"asked": runtime, "load_s": time.monotonic() - t0, "points": []}
    measurements: list[Any] = []
    cut = False
    try:
        ident = engine.identity()
        entry.update(runtime=ident.get("runtime"), runtime_note=ident.get("runtime_note", ""),
                     version=ident.get("version"), device=ident.get("device"))
        meter = registry.make_meter(MeterSpec(plan.meter, {}), engine)
        try:
            for n_out in n_outs:
                if time.monotonic() >= deadline:
                    cut = True
                    break
                w = Workload(n_in, n_out, requests=plan.requests, seed=1)
                t1 = time.monotonic()
                prepare = getattr(engine, "prepare", None)
                if prepare is not None:
                    prepare(w)  # timed here; measure() then finds it prepared
                entry.setdefault("prepare_s", 0.0)
                entry["prepare_s"] += time.monotonic() - t1
                m = measure(engine, meter, w, rounds=rounds, warmup=1, min_window_s=plan.min_window_s,
                            name=f"{runtime}[{w.label()}]")
                measurements.append(m)
                entry["points"].append(_point(m))
        finally:
            meter.close()
    finally:
        engine.close()
    entry["ms_per_step"] = _ms_per_step(entry["points"])
    return entry, measurements, cut


def runtimes(plan: Plan, budget: Budget, out: Path, cap_s: float) -> Step:
    """A short sweep of the plan's model in both hf runtimes: ms per decode step, W, J/token, CV."""
    from ..store.fingerprint import slug
    from ..store.results import write_results

    step = Step("runtimes", f"hf engine, eager against graphs ({plan.model}, {plan.requests} requests, "
                            f"n_in={plan.n_in}, n_out {plan.n_outs[0]} and {plan.n_outs[1]})")
    deadline = time.monotonic() + cap_s
    found: dict[str, Any] = {}
    for runtime in ("eager", "graphs"):
        if time.monotonic() >= deadline:
            found[runtime] = {"asked": runtime, "error": "budget: not started"}
            step.status = CUT
            continue
        try:
            entry, measurements, cut = _one_runtime(plan, runtime, deadline, plan.model, plan.n_in, plan.n_outs,
                                                    plan.rounds)
        except JoulesError as exc:
            found[runtime] = {"asked": runtime, "error": str(exc)}
            continue
        except Exception as exc:  # torch and transformers raise their own: report, go on
            found[runtime] = {"asked": runtime, "error": one_line(exc)}
            continue
        if cut:
            step.status = CUT
        found[runtime] = entry
        if measurements:
            write_results(out / f"runtimes-{slug(plan.model)}-{runtime}.json", measurements)
    step.data = {"model": plan.model, "meter": plan.meter, "runtimes": found}
    if all("error" in e for e in found.values()):
        step.status = FAILED if step.status == DONE else step.status
        step.note = "; ".join(f"{k}: {e['error']}" for k, e in found.items())
        return step
    parts = []
    for name, e in found.items():
        ms = e.get("ms_per_step")
        parts.append(f"{name} {'?' if ms is None else f'{ms:.2f}'} ms/step" if "error" not in e else f"{name}: {e['error']}")
    eager, graphs = (found.get(k, {}).get("ms_per_step") for k in ("eager", "graphs"))
    if eager and graphs:
        parts.append(f"graphs x{eager / graphs:.2f} the speed of eager")
    step.note = "; ".join(parts)
    return step


# -- 4. record and rerun through the plugin --------------------------------------------------------

TEST_FILE = '''\
"""Written by `joules check`: energy tests recorded once and rerun unchanged."""
import pytest
{tests}
'''
TEST = '''

@pytest.mark.energy(n_in={n_in}, n_out={n_out}, requests={requests})
def test_{name}(joules):
    joules()
'''
#: environment of the child sessions: nothing of an enclosing pytest or xdist run may leak in
_SCRUB = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "PYTEST_CURRENT_TEST",
          "PYTEST_ADDOPTS", "GITHUB_STEP_SUMMARY")

Runner = Callable[..., subprocess.CompletedProcess]


def _session(runner: Runner, cmd: list[str], cwd: Path, timeout: float, log: Path) -> tuple[int | None, float]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    t0 = time.monotonic()
    try:
        done = runner(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log.write_text(out + f"\n[joules check: stopped after {timeout:.0f} s, the budget of this session]\n")
        return None, time.monotonic() - t0
    log.write_text((done.stdout or "") + (done.stderr or ""))
    return done.returncode, time.monotonic() - t0


def _wall_times(xml: Path) -> dict[str, float]:
    """Seconds per test from a JUnit XML file, by test name."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return {}
    return {case.get("name", ""): float(case.get("time", "nan")) for case in root.iter("testcase")}


def _verdicts(results: Path, walls: dict[str, float]) -> list[dict[str, Any]]:
    try:
        doc = json.loads(results.read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for r in doc.get("results", []):
        verdict = r.get("verdict") or {}
        status = verdict.get("status") or ("dry-run" if all(x.get("joules") is None for x in r.get("rounds", []))
                                           else "invalid")
        rows.append({"test": r.get("test") or r.get("name"), "n_in": r.get("n_in"), "n_out": r.get("n_out"),
                     "verdict": status, "delta": verdict.get("delta"), "resolution": verdict.get("resolution"),
                     "rounds": len(r.get("rounds", [])), "j_per_out_token": r.get("j_per_out_token"),
                     "measured_s": sum(x.get("seconds") or 0.0 for x in r.get("rounds", [])),
                     "wall_s": walls.get(r.get("test") or ""), "host_bound": r.get("host_bound"),
                     "runtime": (r.get("engine") or {}).get("runtime")})
    return rows


def rerun(plan: Plan, budget: Budget, out: Path, cap_s: float, runner: Runner = subprocess.run,
          tolerance: float = 0.05) -> Step:
    """Record baselines of a few energy tests through the plugin, then rerun them unchanged: the
    verdicts of an unchanged rerun are the direct answer to "can this machine gate a change"."""
    step = Step("rerun", f"record and rerun {len(plan.tests)} energy tests unchanged through the plugin "
                         f"(hf {plan.model}, meter {plan.meter}, --joules-rounds auto)")
    if cap_s < plan.rerun_min_s:
        step.status, step.note = SKIPPED, (f"budget: {cap_s:.0f} s for it, two pytest sessions need at least "
                                           f"{plan.rerun_min_s:.0f} s")
        return step
    work = out / "plugin"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pytest.ini").write_text("[pytest]\n")  # the folder's own: no user configuration leaks in
    tests = "".join(TEST.format(name=n, n_in=i, n_out=o, requests=plan.requests) for n, i, o in plan.tests)
    (work / "test_check_energy.py").write_text(TEST_FILE.format(tests=tests))
    cmd = [sys.executable, "-m", "pytest", "test_check_energy.py", "-q", "-p", "no:cacheprovider", "--joules",
           # paths with "=": pytest would take a value after a space for a test path (plugin/anchor.py)
           "--joules-engine", "hf", f"--joules-model={plan.model}", "--joules-meter", plan.meter,
           "--joules-baselines=baselines", "--joules-max-seconds", f"{plan.max_seconds:g}",
           "--joules-tolerance", f"{tolerance:g}",
           "--joules-no-step-summary", "-o", "junit_family=xunit1"]
    start = time.monotonic()
    sessions = {}
    for name, extra, share in (("record", ["--joules-update-baselines"], 0.5), ("rerun", [], 1.0)):
        left = cap_s - (time.monotonic() - start)
        args = [*cmd, *extra, f"--joules-json={out / f'plugin-{name}.json'}", "--junitxml", f"{name}.xml"]
        rc, seconds = _session(runner, args, work, left * share, work / f"{name}.log")
        sessions[name] = {"returncode": rc, "seconds": seconds,
                          "results": _verdicts(out / f"plugin-{name}.json", _wall_times(work / f"{name}.xml"))}
        if rc is None:
            step.status = CUT
            break
        if rc not in (0, 1):  # 1: some test failed, which is a finding; anything else is an error
            step.status = FAILED
            step.note = f"the {name} session exited {rc}; see {work / (name + '.log')}"
            break
    step.data = {"sessions": sessions, "tests": [list(t) for t in plan.tests], "max_seconds": plan.max_seconds}
    if not step.note:
        rerun: dict[str, Any] = sessions.get("rerun") or {}
        verdicts = [r["verdict"] for r in rerun.get("results") or []]
        step.note = ("verdicts of the unchanged rerun: " + ", ".join(verdicts)) if verdicts else (
            "no rerun verdicts (the sessions were cut short)")
    return step


# -- 5. one 8B point ---------------------------------------------------------------------------------


def big_point(plan: Plan, budget: Budget, out: Path) -> Step:
    from ..store.fingerprint import slug
    from ..store.results import write_results

    n_in, n_out = plan.big_point
    step = Step("big", f"one {plan.big_model} point (hf graphs, {plan.requests} requests, n_in={n_in}, "
                       f"n_out={n_out})" if plan.big_model else "one 8B point")
    if plan.big_model is None:
        step.status, step.note = SKIPPED, "no GPU here: an 8B model is a GPU check"
        return step
    if not budget.allows(plan.big_min_s):
        step.status, step.note = SKIPPED, (f"budget: {budget.left():.0f} s left, the point needs about "
                                           f"{plan.big_min_s:.0f} s (load, compile, rounds)")
        return step
    try:
        entry, measurements, _ = _one_runtime(plan, "graphs", time.monotonic() + budget.left(), plan.big_model,
                                              n_in, (n_out,), 3)
    except Exception as exc:  # out of memory, most likely: a finding, not a crash of the check
        step.status, step.note = FAILED, one_line(exc)
        return step
    if measurements:
        write_results(out / f"point-{slug(plan.big_model)}.json", measurements)
    step.data = entry
    p = entry["points"][0] if entry["points"] else {}
    j = p.get("j_per_out_token")
    step.note = (f"{entry.get('runtime')}: {'dry run' if j is None else f'{j:.4g} J/token'}, "
                 f"{p.get('seconds_per_run') or 0:.2f} s per run")
    return step
