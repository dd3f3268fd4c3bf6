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

from ..judge import verdict as V
from ..store.fingerprint import describe, fingerprint
from .facts import Summary
from .names import break_name

if TYPE_CHECKING:
    from ..store.record import ResultRecord


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
    # requests: part of the workload (J/tok of 1 request is ~13x that of 16); not at 80 columns,
    # where it would fold the test names
    ("reqs", "right", 86),
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


def _status(r: ResultRecord) -> str:
    return r.status or "—"


def _label(r: ResultRecord) -> str:
    """The test's name without the grid id: n_in and n_out have their own columns."""
    name = str(r.test or r.name or "?")
    grid = f"n_in={r.n_in}-n_out={r.n_out}"
    name = name.replace(f"[{grid}]", "").replace(f"[{grid}-", "[").replace(f"-{grid}]", "]").replace(f"-{grid}-", "-")
    key, nodeid = r.key or "", r.nodeid or ""
    if r.label:  # a second measurement of the test, named as its key names it
        name += "::" + r.label
    elif r.label is None and nodeid and key.startswith(nodeid + "::"):
        name += "::" + key[len(nodeid) + 2:]
    return name


def _delta(r: ResultRecord) -> Text:
    delta = r.verdict.delta if r.verdict else None
    if delta is None:
        return Text("—", style="dim")
    text = "±0.0%" if abs(delta) < 0.0005 else f"{delta:+.1%}"
    return Text(text, style=STYLES.get(r.status or "", ""))


def _model_error(r: ResultRecord) -> str:
    err = r.model_error
    if err is None:
        return "—"
    return f"{err:.1%}" + ("*" if r.extrapolated else "")


def _verdict_cell(r: ResultRecord) -> Text:
    status = _status(r)
    text = Text(status, style=STYLES.get(status, ""))
    if r.baseline_updated:
        text.append(" ✓saved", style="cyan")
    return text


#: optional columns, the first given up first when the test names need the room
DROP_ORDER = ("tok/J", "avg W", "spread", "reqs", "rounds", "vs model")


def _columns(records: list[ResultRecord], width: int) -> tuple[list[tuple[str, str, int]], int]:
    """The columns that fit `width` beside the longest test name, and the room left for names."""
    shown = [c for c in COLUMNS if width >= c[2]]
    # room for each test's own name; a "::label" of a second measurement may go on a line of its own
    names = max((len(_label(r).split("::")[0]) for r in records), default=4)
    for drop in (None, *DROP_ORDER):
        shown = [c for c in shown if c[0] != drop]
        room = width - _figures_width(records, shown)
        if room >= names:
            break
    return shown, max(room, 12)


def _figures_width(records: list[ResultRecord], shown: list[tuple[str, str, int]]) -> int:
    """Cells taken by every column but the name's, with the two spaces between columns."""
    from rich.cells import cell_len

    rows = [_cells(r) for r in records]
    widths = [max([cell_len(h), *(cell_len(str(row[h])) for row in rows)]) for h, _, _ in shown if h != "test"]
    return sum(widths) + 2 * len(widths) + 2  # +2: the table's edge


def _cells(r: ResultRecord) -> dict[str, Any]:
    return {
        "test": Text(_label(r)),
        "n_in": str(r.n_in),
        "n_out": str(r.n_out),
        "reqs": str(r.requests),
        "J/tok": _num(r.j_per_out_token, ".4g") + (HOST_BOUND_MARK if r.host_bound else ""),
        "tok/J": _num(r.tokens_per_joule, ".4g"),
        "avg W": _num(r.avg_watts, ".0f"),
        "rounds": str(len(r.rounds)),
        "spread": _num(r.spread, ".1%"),
        "vs base": _delta(r),
        "vs model": _model_error(r),
        "verdict": _verdict_cell(r),
    }


def measurements_table(records: list[ResultRecord], width: int) -> Table:
    first = records[0]
    simulated = any(r.simulated for r in records)
    title = "pytest-joules: energy per output token" + (" — SIMULATED device" if simulated else "")
    fp = fingerprint(first.engine, first.device, first.simulated)
    shown, room = _columns(records, width)
    # ids, names and paths are the user's: Text, never markup ("[/bold]" in an id is no tag)
    table = Table(title=title, title_justify="left", caption=Text(describe(fp) + f" · meter {first.meter}"),
                  caption_justify="left", title_style="bold red" if simulated else "bold", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False, header_style="bold")
    for header, justify, _ in shown:
        # the figures keep their width; a test name too long for what they leave breaks between words
        table.add_column(header, justify=justify, overflow="fold", no_wrap=header != "test")
    for r in records:
        cells = _cells(r)
        cells["test"] = Text(break_name(_label(r), room))
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


def _lines(title: str, records: Iterable[ResultRecord], style: str, render: Any) -> list[Text]:
    items = list(records)
    if not items:
        return []
    out = [Text(f"{title} ({len(items)}):", style=style)]
    out += [Text(f"  {render(r)}") for r in items]
    return out


def _change(r: ResultRecord) -> str:
    v = r.verdict
    assert v is not None and v.baseline is not None and v.current is not None and v.delta is not None
    return (f"{r.key}: baseline {v.baseline:.6g}, now {v.current:.6g} J/out-token, "
            f"delta {v.delta:+.2%}, tolerance {v.tolerance or 0:.2%}")


def session_lines(state: Summary, records: list[ResultRecord], verbosity: int) -> list[Text]:
    lines: list[Text] = []
    model = state.model
    if model is not None:
        mape, count = state.mape, state.mape_points
        text = Text(f"model {model.name} ({_shown_path(state.model_path)}): ")
        text.append("session MAPE " + (f"{mape:.2%} over {count} measurements" if mape is not None else "— (no prediction in range)"))
        if state.options.model_tolerance is not None:
            ok = state.model_check is None
            text.append(f", tolerance {state.options.model_tolerance:.2%}: ")
            text.append("ok" if ok else "FAILED", style="bold green" if ok else "bold red")
        if any(r.extrapolated for r in records):
            text.append("  (* outside the fitted range, not in the MAPE)", style="dim")
        lines.append(text)
    else:
        from .suggest import no_model_lines

        lines += no_model_lines(state, records)  # the `joules calibrate` command, with its estimated time
    fitted_at, skipped = other_batching(records)
    if skipped:
        tests = "test uses other batching and was" if skipped == 1 else "tests use other batching and were"
        lines.append(Text(f"model fitted at {fitted_at}; {skipped} {tests} not compared "
                          "(— in the model column)", style="yellow"))
    from .drift import drift_lines

    lines += drift_lines(state)
    failing = state.model_check
    if failing:
        lines.append(Text(failing, style="bold red"))
    if state.json_error:
        lines.append(Text(state.json_error, style="bold red"))
    elif state.options.json is not None:
        lines.append(Text(f"results written to {_shown_path(state.options.json)}", style="dim"))
    for error in state.export_errors:
        lines.append(Text(error, style="bold red"))
    lines += _store_lines(state, records)
    for flag, path in (("github-action-benchmark JSON", state.options.export_gab), ("Bencher BMF JSON", state.options.export_bmf)):
        if path is not None and not any(str(path) in e for e in state.export_errors):
            lines.append(Text(f"{flag} written to {_shown_path(path)}", style="dim"))
    if state.step_summary:
        lines.append(Text(f"Markdown summary appended to $GITHUB_STEP_SUMMARY ({_shown_path(state.step_summary)})", style="dim"))
    lines += footprint_lines(state.options.footprint, records, verbosity)
    if state.saved_run is not None:
        lines.append(Text(f"run {state.saved_run.id} saved to {_shown_path(state.saved_run.path)} "
                          "(joules list; joules compare last~1 last)", style="dim"))
    by = lambda *s: [r for r in records if _status(r) in s]  # noqa: E731
    dry = by(V.DRY_RUN)
    if dry:
        from ..measure.measurement import DRY_RUN

        meters = ", ".join(sorted({str(r.meter) for r in dry}))
        lines.append(Text(f"{DRY_RUN} (meter {meters}): {len(dry)} measurement(s) checked their token counts only; "
                          "their tests were skipped", style="yellow"))
    # a regression is not listed here: its test failed, and the failure says it once, verdict first
    lines += _lines("invalid or refused", by(V.INVALID, "refused", "error"), "bold red",
                    lambda r: f"{r.key}: {r.verdict.detail if r.verdict else ''}")
    lines += _lines("too noisy to judge (not failed)", by(V.NOISY), "yellow",
                    lambda r: f"{r.key}: {r.verdict.detail if r.verdict else ''}"
                    + (f" (stopped: {r.rounds_stopped})" if r.rounds_stopped else ""))
    host_bound = [r for r in records if r.host_bound]
    if host_bound:
        from ..measure.measurement import HOST_BOUND_FIX

        lines += _lines(f"{HOST_BOUND_MARK} host-bound: {HOST_BOUND_FIX}", host_bound, "yellow",
                        lambda r: f"{r.key}: GPU busy {r.gpu_util or 0:.0%} of the window")
    if verbosity >= 0:
        lines += _lines("improvements", by(V.IMPROVED), "bold green", _change)
        lines += _lines("new (no baseline yet; record with --joules-update-baselines)",
                        (r for r in by(V.NEW) if not r.baseline_updated), "cyan",
                        lambda r: f"{r.key}" + (f": {r.baseline_note}" if r.baseline_note else ""))
        lines += _lines(f"baselines saved to {_shown_path(state.options.baselines)}", (r for r in records if r.baseline_updated),
                        "cyan", lambda r: f"{r.key}")
    lines += _lines("baselines not saved: the test failed (fix it, then record again)",
                    (r for r in records if r.baseline_not_saved), "bold yellow", lambda r: f"{r.key}")
    return lines


def footprint_lines(footprint: Any, records: list[ResultRecord], verbosity: int) -> list[Text]:
    """Carbon and cost per 1,000 output tokens, with the stated inputs (only when they are given):
    the session's range, and each test's figures at -v."""
    if not footprint:
        return []

    def span(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g} to {high:.3g}"

    def figures(j: float | None) -> list[float | None]:
        return [footprint.gco2e_per_1k(j), footprint.cost_per_1k(j)]

    js = [r.j_per_out_token for r in records if r.j_per_out_token is not None]
    if not js:
        return [Text(f"footprint ({footprint.describe()}): no valid measurement to convert", style="dim")]
    parts = []
    for i, unit in ((0, "gCO2e"), (1, "cost")):
        values = [figures(j)[i] for j in js]
        if values[0] is not None:
            parts.append(f"{span(values)} gCO2e" if unit == "gCO2e" else f"cost {span(values)}")
    lines = [Text(f"footprint per 1,000 output tokens at {footprint.describe()} (stated values): "
                  + ", ".join(parts) + (f" over {len(js)} measurements" if len(js) > 1 else ""))]
    if verbosity >= 1:
        for r in records:
            g, c = figures(r.j_per_out_token)
            shown = ", ".join(x for x in (g is not None and f"{g:.3g} gCO2e", c is not None and f"cost {c:.3g}") if x)
            lines.append(Text(f"  {r.key or r.name}: {shown or '—'}"))
    return lines


def _store_lines(state: Summary, records: list[ResultRecord]) -> list[Text]:
    """What happened to the baseline store as a whole: errors, replaced files, a store made anew."""
    lines = [Text(error, style="bold red") for error in state.baseline_errors]
    saved = {r.key for r in records if r.baseline_updated}
    for r in state.replaced:
        dropped = [k for k in r["old_keys"] if k not in saved]
        text = (f"replaced {_shown_path(r['path'])}, recorded on another device or engine "
                f"({'; '.join(r['differences'])}); the old file is kept as {_shown_path(r['backup'])}")
        if dropped:
            shown = ", ".join(dropped[:10]) + (f", … ({len(dropped) - 10} more)" if len(dropped) > 10 else "")
            text += f"; dropped {len(dropped)} baseline(s) this run did not record again: {shown}"
        lines.append(Text(text, style="bold yellow"))
    if not state.store_existed and records:
        where = _shown_path(state.options.baselines)
        if saved:
            lines.append(Text(f"created a new baseline store at {where}: if baselines exist elsewhere, point "
                              "--joules-baselines (ini key joules_baselines) at them", style="bold yellow"))
        else:
            lines.append(Text(f"no baseline store at {where}: nothing was compared with a baseline; record one with "
                              "--joules-update-baselines, or point --joules-baselines at yours", style="bold yellow"))
    return lines


def one_line(state: Summary, records: list[ResultRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[_status(r)] = counts.get(_status(r), 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    mape = state.mape
    if mape is not None:
        parts.append(f"model MAPE {mape:.2%}")
    return f"joules: {len(records)} measured: " + ", ".join(parts)


def render(state: Summary, width: int, markup: bool, verbosity: int) -> str:
    """The summary as text (ANSI-coloured when `markup`)."""
    records = list(state.records)
    out = io.StringIO()
    console = Console(file=out, width=max(width, 40), force_terminal=markup, no_color=not markup,
                      color_system="standard" if markup else None, highlight=False, soft_wrap=False)
    if not records:
        return ""
    if verbosity <= -2:
        console.print(Text(one_line(state, records)))
        return out.getvalue()
    console.print(measurements_table(records, width))
    model = state.model
    if model is not None and verbosity >= 0:
        from .models import sweet_spot_table

        n_ins = sorted({int(r.n_in) for r in records if r.n_in})
        console.print()
        console.print(sweet_spot_table([model], n_ins, title=f"Sweet spots ({model.name} model): n_out* minimizes J/out-token",
                                       uncertainties=state.intervals))
    console.print()
    for line in session_lines(state, records, verbosity):
        # on a terminal, sentences wrap between words (the terminal would cut them anywhere);
        # in a log they stay one line to grep, and indented lines (commands, test ids) stay whole
        console.print(line, soft_wrap=not markup or line.plain.startswith("  "))
    return out.getvalue()


def write_summary(terminalreporter: Any, state: Summary) -> None:
    tw = getattr(terminalreporter, "_tw", None)
    width = getattr(tw, "fullwidth", 100)
    markup = bool(getattr(tw, "hasmarkup", False))
    verbosity = terminalreporter.config.get_verbosity() if hasattr(terminalreporter.config, "get_verbosity") else terminalreporter.config.option.verbose
    text = render(state, width, markup, verbosity)
    if text:
        terminalreporter.write_sep("=", "joules" + (" (SIMULATED)" if state.simulated else ""))
        terminalreporter.write(text)


def other_batching(records: list[ResultRecord]) -> tuple[str | None, int]:
    """The model's batching and how many measurements were not compared because theirs differs."""
    skipped = [r.model_batching for r in records if r.model_batching]
    return (skipped[0] if skipped else None), len(skipped)
