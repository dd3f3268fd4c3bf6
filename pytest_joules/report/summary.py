"""The end-of-session summary of `pytest --joules`: a rich table of every measurement, the sweet
spots of the fitted model, the session MAPE and what changed against the baselines.

Rendered to text with rich and written through pytest's terminal reporter, so it respects
capture, colour settings and the terminal width. `-q` keeps the table and the failures; `-qq`
leaves one line.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Iterable

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import verdict as V
from ..fingerprint import describe, fingerprint

if TYPE_CHECKING:
    from ..session import JoulesSession

STYLES = {
    V.PASS: "green",
    V.IMPROVED: "bold green",
    V.REGRESSION: "bold red",
    V.NEW: "cyan",
    V.NOISY: "yellow",
    V.INVALID: "bold red",
    V.DRY_RUN: "dim",
    "refused": "bold red",
    "error": "bold red",
}

#: (header, justify, minimum terminal width to show it): narrow terminals lose the derived columns
COLUMNS = [
    ("test", "left", 0),
    ("n_in", "right", 0),
    ("n_out", "right", 0),
    ("J/tok", "right", 0),
    ("tok/J", "right", 110),
    ("avg W", "right", 92),
    ("rounds", "right", 80),
    ("spread", "right", 86),
    ("vs base", "right", 0),
    ("vs model", "right", 72),
    ("verdict", "left", 0),
]


#: marks the J/tok of a reading whose GPU mostly waited for the host (explained below the table)
HOST_BOUND_MARK = "‡"


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _verdict(r: dict[str, Any]) -> dict[str, Any]:
    return r.get("verdict") or {}


def _status(r: dict[str, Any]) -> str:
    return _verdict(r).get("status") or "—"


def _label(r: dict[str, Any]) -> str:
    """The test's name without the grid id: n_in and n_out have their own columns."""
    name = str(r.get("test") or r.get("name") or "?")
    grid = f"n_in={r.get('n_in')}-n_out={r.get('n_out')}"
    name = name.replace(f"[{grid}]", "").replace(f"[{grid}-", "[").replace(f"-{grid}]", "]").replace(f"-{grid}-", "-")
    key, nodeid = r.get("key") or "", r.get("nodeid") or ""
    if nodeid and key.startswith(nodeid + "::"):
        name += " " + key[len(nodeid) + 2:]
    return name


def _delta(r: dict[str, Any]) -> Text:
    v = _verdict(r)
    delta = v.get("delta")
    if delta is None:
        return Text("—", style="dim")
    text = "±0.0%" if abs(delta) < 0.0005 else f"{delta:+.1%}"
    return Text(text, style=STYLES.get(v.get("status", ""), ""))


def _model_error(r: dict[str, Any]) -> str:
    err = r.get("model_error")
    if err is None:
        return "—"
    return f"{err:.1%}" + ("*" if r.get("extrapolated") else "")


def _verdict_cell(r: dict[str, Any]) -> Text:
    status = _status(r)
    text = Text(status, style=STYLES.get(status, ""))
    if r.get("baseline_updated"):
        text.append(" ✓saved", style="cyan")
    return text


def measurements_table(records: list[dict[str, Any]], width: int) -> Table:
    first = records[0]
    simulated = any(r.get("simulated") for r in records)
    title = "pytest-joules: energy per output token" + (" — SIMULATED device" if simulated else "")
    fp = fingerprint(first.get("engine") or {}, first.get("device") or {}, bool(first.get("simulated")))
    shown = [c for c in COLUMNS if width >= c[2]]
    table = Table(title=title, title_justify="left", caption=describe(fp) + f" · meter {first.get('meter')}",
                  caption_justify="left", title_style="bold red" if simulated else "bold", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False, header_style="bold")
    for header, justify, _ in shown:
        # the figures keep their width; the test name folds into what they leave
        table.add_column(header, justify=justify, overflow="fold", no_wrap=header not in ("test", "verdict"))
    for r in records:
        cells: dict[str, Any] = {
            "test": _label(r),
            "n_in": str(r.get("n_in")),
            "n_out": str(r.get("n_out")),
            "J/tok": _num(r.get("j_per_out_token"), ".4g") + (HOST_BOUND_MARK if r.get("host_bound") else ""),
            "tok/J": _num(r.get("tokens_per_joule"), ".4g"),
            "avg W": _num(r.get("avg_watts"), ".0f"),
            "rounds": str(len(r.get("rounds") or [])),
            "spread": _num(r.get("spread"), ".1%"),
            "vs base": _delta(r),
            "vs model": _model_error(r),
            "verdict": _verdict_cell(r),
        }
        table.add_row(*(cells[h] for h, _, _ in shown))
    return table


def _shown_path(path: Any) -> str:
    """A path relative to the working directory when it is below it (shorter, copy-pasteable)."""
    import os

    try:
        rel = os.path.relpath(str(path))
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _lines(title: str, records: Iterable[dict[str, Any]], style: str, render: Any) -> list[Text]:
    items = list(records)
    if not items:
        return []
    out = [Text(f"{title} ({len(items)}):", style=style)]
    out += [Text(f"  {render(r)}") for r in items]
    return out


def _change(r: dict[str, Any]) -> str:
    v = _verdict(r)
    return (f"{r.get('key')}: baseline {v.get('baseline'):.6g}, now {v.get('current'):.6g} J/out-token, "
            f"delta {v.get('delta'):+.2%}, tolerance {v.get('tolerance'):.2%}")


def session_lines(state: JoulesSession, records: list[dict[str, Any]], verbosity: int) -> list[Text]:
    lines: list[Text] = []
    model = state.report_model()
    if model is not None:
        mape, count = state.mape()
        text = Text(f"model {model.name} ({_shown_path(state.model_path)}): ")
        text.append("session MAPE " + (f"{mape:.2%} over {count} measurements" if mape is not None else "— (no prediction in range)"))
        if state.options.model_tolerance is not None:
            ok = state.model_check() is None
            text.append(f", tolerance {state.options.model_tolerance:.2%}: ")
            text.append("ok" if ok else "FAILED", style="bold green" if ok else "bold red")
        if any(r.get("extrapolated") for r in records):
            text.append("  (* outside the fitted range, not in the MAPE)", style="dim")
        lines.append(text)
    else:
        lines.append(Text(f"no fitted model beside the baselines; `joules sweep` + `joules fit --save` make one", style="dim"))
    from ..session import other_batching

    fitted_at, skipped = other_batching(records)
    if skipped:
        tests = "test uses other batching and was" if skipped == 1 else "tests use other batching and were"
        lines.append(Text(f"model fitted at {fitted_at}; {skipped} {tests} not compared "
                          "(— in the model column)", style="yellow"))
    failing = state.model_check()
    if failing:
        lines.append(Text(failing, style="bold red"))
    if state.json_error:
        lines.append(Text(state.json_error, style="bold red"))
    elif state.options.json is not None:
        lines.append(Text(f"results written to {_shown_path(state.options.json)}", style="dim"))
    for error in state.export_errors:
        lines.append(Text(error, style="bold red"))
    for flag, path in (("github-action-benchmark JSON", state.options.export_gab), ("Bencher BMF JSON", state.options.export_bmf)):
        if path is not None and not any(str(path) in e for e in state.export_errors):
            lines.append(Text(f"{flag} written to {_shown_path(path)}", style="dim"))
    if state.step_summary:
        lines.append(Text(f"Markdown summary appended to $GITHUB_STEP_SUMMARY ({_shown_path(state.step_summary)})", style="dim"))
    by = lambda *s: [r for r in records if _status(r) in s]  # noqa: E731
    lines += _lines("regressions", (r for r in by(V.REGRESSION) if not r.get("baseline_updated")), "bold red", _change)
    lines += _lines("invalid or refused", by(V.INVALID, "refused", "error"), "bold red",
                    lambda r: f"{r.get('key')}: {_verdict(r).get('detail', '')}")
    lines += _lines("too noisy to judge (not failed)", by(V.NOISY), "yellow",
                    lambda r: f"{r.get('key')}: {_verdict(r).get('detail', '')}"
                    + (f" (stopped: {r['rounds_stopped']})" if r.get("rounds_stopped") else ""))
    host_bound = [r for r in records if r.get("host_bound")]
    if host_bound:
        from ..measurement import HOST_BOUND_FIX

        lines += _lines(f"{HOST_BOUND_MARK} host-bound: {HOST_BOUND_FIX}", host_bound, "yellow",
                        lambda r: f"{r.get('key')}: GPU busy {r['gpu_util']:.0%} of the window")
    if verbosity >= 0:
        lines += _lines("improvements", by(V.IMPROVED), "bold green", _change)
        lines += _lines("new (no baseline yet; record with --joules-update-baselines)",
                        (r for r in by(V.NEW) if not r.get("baseline_updated")), "cyan",
                        lambda r: f"{r.get('key')}" + (f": {r['baseline_note']}" if r.get("baseline_note") else ""))
        lines += _lines(f"baselines saved to {_shown_path(state.options.baselines)}", (r for r in records if r.get("baseline_updated")),
                        "cyan", lambda r: f"{r.get('key')}")
    return lines


def one_line(state: JoulesSession, records: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[_status(r)] = counts.get(_status(r), 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    mape, _ = state.mape()
    if mape is not None:
        parts.append(f"model MAPE {mape:.2%}")
    return f"joules: {len(records)} measured: " + ", ".join(parts)


def render(state: JoulesSession, width: int, markup: bool, verbosity: int) -> str:
    """The summary as text (ANSI-coloured when `markup`)."""
    records = list(state.records)
    out = io.StringIO()
    console = Console(file=out, width=max(width, 40), force_terminal=markup, no_color=not markup,
                      color_system="standard" if markup else None, highlight=False, soft_wrap=False)
    if not records:
        return ""
    if verbosity <= -2:
        console.print(one_line(state, records))
        return out.getvalue()
    console.print(measurements_table(records, width))
    model = state.report_model()
    if model is not None and verbosity >= 0:
        from .models import sweet_spot_table

        n_ins = sorted({int(r["n_in"]) for r in records if r.get("n_in")})
        console.print()
        console.print(sweet_spot_table([model], n_ins, title=f"Sweet spots ({model.name} model): n_out* minimizes J/out-token"))
    console.print()
    for line in session_lines(state, records, verbosity):
        console.print(line, soft_wrap=True)
    return out.getvalue()


def write_summary(terminalreporter: Any, state: JoulesSession) -> None:
    tw = getattr(terminalreporter, "_tw", None)
    width = getattr(tw, "fullwidth", 100)
    markup = bool(getattr(tw, "hasmarkup", False))
    verbosity = terminalreporter.config.get_verbosity() if hasattr(terminalreporter.config, "get_verbosity") else terminalreporter.config.option.verbose
    text = render(state, width, markup, verbosity)
    if text:
        terminalreporter.write_sep("=", "joules" + (" (SIMULATED)" if any(r.get("simulated") for r in state.records) else ""))
        terminalreporter.write(text)
