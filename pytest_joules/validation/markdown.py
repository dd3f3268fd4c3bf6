"""The answer and the Markdown report of `joules check`.

The question: can this machine gate a regression of the tolerance (5%), and at what cost in
seconds per test? The direct evidence is the unchanged rerun through the plugin (a pass needs the
rounds to resolve the tolerance; "noisy" means they could not within --joules-max-seconds; a
regression or improvement there is a false alarm). The estimate from the runtimes' rounds
(gate.py) says how many rounds each runtime would need.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .steps import CUT, DONE, Step


@dataclass
class Answer:
    verdict: str  # "yes", "no", "not within the budget", "cannot tell"
    text: str
    seconds_per_test: float | None = None


def _fmt(value: float | None, spec: str, none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _by_name(steps: list[Step]) -> dict[str, Step]:
    return {s.name: s for s in steps}


def estimates(step: Step | None, tolerance: float) -> dict[str, dict[str, Any]]:
    """Per runtime: the rounds and measured seconds a `tolerance` gate needs at the scatter seen."""
    from .gate import estimate

    out: dict[str, dict[str, Any]] = {}
    if step is None:
        return out
    for name, entry in step.data.get("runtimes", {}).items():
        points = [p for p in entry.get("points", []) if p.get("sd_log") is not None]
        if not points:
            continue
        sd = statistics.median(p["sd_log"] for p in points)
        per_round = statistics.median(p["seconds_per_round"] for p in points)
        e = estimate(sd, per_round, tolerance)
        out[name] = {"sd_log": sd, "of": points[0]["sd_of"], "rounds": e.rounds, "seconds": e.seconds,
                     "resolution_at_3": e.resolution_at_3, "seconds_per_round": per_round}
    return out


def answer(steps: list[Step], meter: str, tolerance: float) -> Answer:
    by = _by_name(steps)
    rerun = by.get("rerun")
    rows = (rerun.data.get("sessions", {}).get("rerun", {}).get("results", []) if rerun else [])
    walls = [r["wall_s"] for r in rows if r.get("wall_s") is not None]
    cost = statistics.median(walls) if walls else None
    tol = f"{tolerance:.0%}"
    if meter == "none":
        return Answer("cannot tell", f"no energy meter is usable here, so the check ran with the `none` meter "
                                     f"(token counts and times, no joules); run `joules check` on a GPU runner to "
                                     f"know whether it can gate a {tol} regression", cost)
    if not rows:
        return Answer("cannot tell", "the unchanged rerun did not finish within the budget; give `--budget` more "
                                     "seconds", None)
    statuses = [r["verdict"] for r in rows]
    alarms = [r for r in rows if r["verdict"] in ("regression", "improved")]
    if alarms:
        named = ", ".join(f"{r['test']} {r['verdict']} ({_fmt(r['delta'], '+.1%')})" for r in alarms)
        return Answer("no", f"the unchanged rerun raised false alarms: {named}", cost)
    noisy = [r for r in rows if r["verdict"] == "noisy"]
    if noisy:
        worst = max((r["resolution"] or 0.0) for r in noisy)
        return Answer("not within the budget", (
            f"{len(noisy)} of {len(rows)} tests were noisy in the unchanged rerun: their rounds resolved only "
            f"+/-{worst:.1%} within --joules-max-seconds; a {tol} gate needs more seconds per test or a quieter "
            "engine (see the estimate below)"), cost)
    if all(s == "pass" for s in statuses):
        worst = max((r["resolution"] or 0.0) for r in rows)
        return Answer("yes", f"the unchanged rerun passed every test, each resolving a {tol} change "
                             f"(worst resolution +/-{worst:.1%})", cost)
    return Answer("cannot tell", f"the unchanged rerun's verdicts were {', '.join(statuses)}", cost)


def _machine(steps: list[Step], meta: dict[str, Any]) -> str:
    by = _by_name(steps)
    runtimes = by.get("runtimes")
    version = next((e.get("version") for e in (runtimes.data.get("runtimes", {}).values() if runtimes else [])
                    if e.get("version")), None)
    gpus = [c for c in by["doctor"].data.get("checks", []) if c["kind"] == "gpu"] if "doctor" in by else []
    gpu = ", ".join(f"{c['name']} ({c['reason']})" for c in gpus if c["usable"]) or "no usable GPU"
    parts = [f"GPU: {gpu}", f"CPU: {meta.get('cpu') or 'unknown'}", f"Python {meta.get('python')}"]
    if version:
        parts.append(version)
    return "; ".join(parts)


def _ran(asked: str, ran: str | None) -> str:
    return asked if ran in (None, asked) else f"{asked}, ran {ran}"


def _runtimes_table(step: Step, est: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| runtime | load s | prepare s | ms/decode step | n_out | J/token | avg W | GPU util | "
             "rounds scatter (sd of log) | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in step.data.get("runtimes", {}).items():
        if "error" in e:
            lines.append(f"| {name} | | | | | | | | | {e['error']} |")
            continue
        for i, p in enumerate(e.get("points", [])):
            first = i == 0
            lines.append(
                f"| {_ran(name, e.get('runtime')) if first else ''} | "
                f"{_fmt(e.get('load_s'), '.1f') if first else ''} | {_fmt(e.get('prepare_s'), '.1f') if first else ''} | "
                f"{_fmt(e.get('ms_per_step'), '.2f') if first else ''} | {p['n_out']} | "
                f"{_fmt(p['j_per_out_token'], '.4g')} | {_fmt(p['avg_watts'], '.0f')} | "
                f"{_fmt(p['gpu_util'], '.0%')} | {_fmt(p['sd_log'], '.2%')} of {p['sd_of']} | "
                f"{(e.get('runtime_note') or '') if first else ''} |")
    lines += ["", "load s: building the model (graphs: with its compile probe); prepare s: compiling and capturing "
              "the measured shapes, before any window; ms/decode step: the time difference of the two n_out over "
              "their difference in decode steps.", ""]
    if est:
        lines.append("Estimate from these rounds (gate.py; rounds taken minutes apart scatter more):")
        lines.append("")
        for name, e in est.items():
            rounds = "more than 100" if e["rounds"] is None else str(e["rounds"])
            secs = "" if e["seconds"] is None else f", about {e['seconds']:.3g} measured s per test"
            lines.append(f"- {name}: scatter {e['sd_log']:.2%} of {e['of']}; 3 vs 3 rounds resolve "
                         f"+/-{e['resolution_at_3']:.1%}; a 5% gate needs {rounds} rounds{secs}")
        lines.append("")
    return lines


def _rerun_table(step: Step) -> list[str]:
    sessions = step.data.get("sessions", {})
    lines = []
    for name in ("record", "rerun"):
        s = sessions.get(name)
        if s is None:
            continue
        rc = "stopped by the budget" if s["returncode"] is None else f"exit {s['returncode']}"
        lines.append(f"{name}: {s['seconds']:.0f} s, {rc}")
    lines += ["", "| test | n_in | n_out | verdict | delta | resolution | rounds | measured s | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sessions.get("rerun", {}).get("results", []):
        lines.append(f"| {r['test']} | {r['n_in']} | {r['n_out']} | {r['verdict']} | {_fmt(r['delta'], '+.1%')} | "
                     f"{_fmt(r['resolution'], '.1%')} | {r['rounds']} | {r['measured_s']:.1f} | "
                     f"{_fmt(r['wall_s'], '.1f')} |")
    return lines + [""]


def markdown(steps: list[Step], meta: dict[str, Any], ans: Answer, est: dict[str, dict[str, Any]]) -> str:
    by = _by_name(steps)
    cost = "" if ans.seconds_per_test is None or ans.verdict == "cannot tell" else (
        f" Cost: {ans.seconds_per_test:.0f} s per test (wall, median of the rerun).")
    lines = [
        f"# joules check ({meta['created']})",
        "",
        f"**Can this machine gate a {meta['tolerance']:.0%} regression? {ans.verdict.capitalize()}:** {ans.text}.{cost}",
        "",
        f"Machine: {_machine(steps, meta)}. Plan: {meta['plan']}. Budget {meta['budget_s']:.0f} s, "
        f"took {meta['elapsed_s']:.0f} s.",
        "",
        "| step | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for s in steps:
        lines.append(f"| {s.title} | {s.status} | {s.seconds:.1f} | {s.note} |")
    lines.append("")
    if "runtimes" in by and by["runtimes"].status in (DONE, CUT):
        lines += ["## hf: eager against graphs", ""] + _runtimes_table(by["runtimes"], est)
    if "rerun" in by and by["rerun"].data.get("sessions"):
        lines += ["## Unchanged rerun through the plugin", ""] + _rerun_table(by["rerun"])
    skipped = [s for s in steps if s.status not in (DONE,)]
    if skipped:
        lines += ["## Not done", ""] + [f"- {s.title}: {s.status}: {s.note}" for s in skipped] + [""]
    lines.append(f"Files: {', '.join(meta['files'])}")
    return "\n".join(lines) + "\n"
