"""`joules check`: the prepared check of a machine, in at most `--budget` seconds (10 minutes).

It runs `doctor`; checks the GPU's energy counter (update period idle and busy, against
integrated power samples under a load step); sweeps a 1B model briefly in both hf runtimes
(eager and graphs: ms per decode step, watts, J/token, the rounds' scatter); records a few
energy tests through the plugin and reruns them unchanged; and measures one 8B point if time
is left. It writes one folder (results JSON files, summary.json, report.md) and prints the
report, which answers: can this machine gate a 5% regression, and at what cost per test?

On a machine without a GPU it runs the tiny test model with the `none` meter (token counts and
times, no energy) and says what it skipped. The steps are in pytest_joules/check/.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .argtypes import positive_float

DEFAULT_BUDGET_S = 600.0
#: kept back from the budget for writing the report
RESERVE_S = 2.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="check this machine in at most 10 minutes: can it gate a 5%% regression, and at what cost?",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--budget", type=positive_float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help=f"stop with what is done after this many seconds (default {DEFAULT_BUDGET_S:.0f})")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="the folder to write (default joules-check-<UTC time>); must not exist or be empty")
    p.add_argument("--model", default=None,
                   help="the hf model of the runtime sweep and the plugin tests (default Llama-3.2-1B on a "
                        "GPU, tiny-llama without one)")
    p.add_argument("--big-model", default=None, help="the model of the large point (default Llama-3.1-8B; GPU only)")
    p.add_argument("--tolerance", default="5%", help="the regression the gate must catch (default 5%%)")
    return p


def _out_dir(text: str | None) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(text or f"joules-check-{stamp}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path}: exists and is not an empty folder; give a new folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot create the folder: {exc.strerror or exc}") from None
    return path


def _check_model(name: str | None) -> None:
    """A model must be a checkpoint folder or an architecture name: say so before ten minutes go."""
    from ..engines.hf import known_architectures, lookup_architecture

    if name is None or Path(name).expanduser().is_dir() or lookup_architecture(name) is not None:
        return
    raise ConfigError(f"model {name!r} is neither a checkpoint folder nor a known architecture; known: "
                      f"{', '.join(known_architectures())}")


def _torch() -> tuple[Any, str]:
    """torch (None when missing) and why the hf steps cannot run, if so."""
    from ..engines import hf

    usable, reason = hf.probe()
    if not usable:
        return None, reason
    import torch

    return torch, ""


def _meta(budget: Any, plan: Any, tolerance: float) -> dict[str, Any]:
    from ..meters.rapl import cpu_model

    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget.total_s, "tolerance": tolerance, "python": platform.python_version(),
            "cpu": cpu_model(), "plan": (f"{'GPU' if plan.gpu else 'CPU'}: {plan.model}, meter {plan.meter}"
                                         + (f", then {plan.big_model}" if plan.big_model else ""))}


def _timed(step_fn: Any, *args: Any) -> Any:
    from ..validation.steps import FAILED, Step, one_line

    t0 = time.monotonic()
    try:
        step = step_fn(*args)
    except Exception as exc:  # a step's own failure is a finding; the check goes on
        name = getattr(step_fn, "__name__", "step")
        step = Step(name, name, FAILED, note=one_line(exc))
    step.seconds = time.monotonic() - t0
    return step


def run(args: argparse.Namespace) -> int:
    from ..validation import markdown as R
    from ..validation import steps as S
    from ..validation.budget import Budget
    from ..judge.verdict import parse_tolerance

    try:
        tolerance = parse_tolerance(args.tolerance)
    except (ValueError, ConfigError):
        raise ConfigError(f"--tolerance takes a fraction or a percentage such as 0.05 or 5%, got {args.tolerance!r}") from None
    for model in (args.model, args.big_model):
        _check_model(model)
    out = _out_dir(args.out)
    budget = Budget(args.budget)
    steps = [_timed(S.doctor, out)]
    usable = steps[0].data.get("usable", {})
    torch, no_hf = _torch()
    gpu = bool(torch is not None and torch.cuda.is_available())
    meter = "nvml" if gpu and "nvml" in usable.get("meter", []) else "none"
    plan = S.plan_for(gpu, meter, args.model, args.big_model)

    steps.append(_timed(S.counter, plan, budget, out, torch))
    if torch is None:
        for name, title in (("runtimes", "hf engine, eager against graphs"), ("rerun", "record and rerun through the plugin"),
                            ("big", "one 8B point")):
            steps.append(S.Step(name, title, S.SKIPPED, note=f"the hf engine cannot run here: {no_hf}"))
    else:
        steps.append(_timed(S.runtimes, plan, budget, out, budget.share(0.40)))
        # the rerun may take what is left: the 8B point comes last, only if time allows
        steps.append(_timed(S.rerun, plan, budget, out, max(0.0, budget.left() - RESERVE_S), subprocess.run,
                            tolerance))
        steps.append(_timed(S.big_point, plan, budget, out))

    est = R.estimates(next((s for s in steps if s.name == "runtimes"), None), tolerance)
    ans = R.answer(steps, plan.meter, tolerance)
    meta = _meta(budget, plan, tolerance)
    meta["elapsed_s"] = budget.elapsed()
    files = sorted(p.name for p in out.iterdir()) + ["summary.json", "report.md"]
    meta["files"] = sorted(set(files))
    text = R.markdown(steps, meta, ans, est)
    summary = {"schema": "pytest-joules/check/1", **meta, "answer": vars(ans), "estimates": est,
               "steps": [vars(s) for s in steps]}
    from ..store.results import atomic_write_json

    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=str)))
    (out / "report.md").write_text(text)
    sys.stdout.write(text)
    print(f"\nwrote {out}/", file=sys.stderr)
    return 1 if any(s.status == S.FAILED for s in steps) else 0
