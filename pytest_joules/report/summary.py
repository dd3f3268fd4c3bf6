"""The end-of-session summary of `pytest --joules`: a rich table of every measurement, the sweet
spots of the fitted model, the session MAPE and what changed against the baselines.

Rendered to text with rich and written through pytest's terminal reporter, so it respects
capture, colour settings and the terminal width. `-q` keeps the table and the failures; `-qq`
leaves one line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from rich import box
from rich.console import Console, Group, JustifyMethod
from rich.table import Table
from rich.text import Text

from ..judge import verdict as V
from ..measure import latency
from ..store.fingerprint import describe, fingerprint
from .facts import Summary
from .names import break_name
from ..numbers import sig

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
COLUMNS: list[tuple[str, JustifyMethod, int]] = [
    ("test", "left", 0),
    ("n_in", "right", 0),
    ("n_out", "right", 0),
    # requests: part of the workload (J/tok of 1 request is ~13x that of 16); not at 80 columns,
    # where it would fold the test names
    ("reqs", "right", 86),
    ("J/tok", "right", 0),
    ("tok/J", "right", 110),
    ("avg W", "right", 92),
    # latency beside energy (latency.py): median ms to the first token / per output token
    ("TTFT/TPOT", "right", 96),  # from 96 columns: at 80 the energy columns come first
    ("out tok/s", "right", 120),
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
DROP_ORDER = ("tok/J", "out tok/s", "TTFT/TPOT", "avg W", "spread", "reqs", "rounds", "vs model")

#: the compact form's headers (narrow terminals and CI logs): the README's table explains them
SHORT = {"out tok/s": "tok/s", "avg W": "W", "rounds": "rnd", "spread": "sprd", "vs base": "base", "vs model": "model"}


@dataclass(frozen=True)
class Layout:
    """The columns shown, the cells left for test names, and the form: `short` headers, `gap`
    spaces between columns, a requests value shared by every row said once (`requests_note`)."""

    shown: list[tuple[str, JustifyMethod, int]]
    room: int
    short: bool = False
    gap: int = 2
    requests_note: str = ""


def _lines_needed(records: list[ResultRecord], room: int) -> int:
    return max((len(break_name(_label(r), room).splitlines()) for r in records), default=1)


def _columns(records: list[ResultRecord], width: int) -> Layout:
    """The first form, widest first, in which every test name fits (on one line, then wrapped
    once at its joints); optional columns are given up only when even the most compact fails."""
    columns = [c for c in COLUMNS if _has(records, c[0])]
    wide = [c for c in columns if width >= c[2]]
    room = width - _figures_width(records, wide)
    # the wide form: every column a terminal of this width shows (only tok/J and out tok/s wait
    # for a wider one), each name on one line
    if len(wide) == len([c for c in columns if c[2] <= 100 or width >= c[2]]) and _lines_needed(records, room) <= 1:
        return Layout(wide, room)
    shown = [c for c in columns if c[2] <= 100 or width >= c[2]]
    note = ""
    requests = {r.requests for r in records}
    if len(requests) == 1:  # one value for every row: said once, under the table
        shown = [c for c in shown if c[0] != "reqs"]
        n = next(iter(requests))
        note = f"{n} request{'s' if n != 1 else ''} each"
    for short, gap, lines in ((False, 2, 1), (True, 2, 1), (True, 1, 1), (True, 1, 2)):
        room = width - _figures_width(records, shown, gap, short)
        if _lines_needed(records, room) <= lines:
            return Layout(shown, room, short, gap, note)
    for drop in DROP_ORDER:
        shown = [c for c in shown if c[0] != drop]
        room = width - _figures_width(records, shown, 1, True)
        if _lines_needed(records, room) <= 2:
            break
    return Layout(shown, max(room, 12), True, 1, note)


def _has(records: list[ResultRecord], header: str) -> bool:
    """The latency columns only when some engine reported the figure (hf and trtllm may not)."""
    if header not in ("TTFT/TPOT", "out tok/s"):
        return True
    keys = ("ttft_s", "tpot_s") if header == "TTFT/TPOT" else ("out_tok_per_s",)
    return any((r.latency or {}).get(k) is not None for r in records for k in keys)


def _figures_width(records: list[ResultRecord], shown: list[tuple[str, JustifyMethod, int]], gap: int = 2,
                   short: bool = False) -> int:
    """Cells taken by every column but the name's, with the gaps between columns."""
    from rich.cells import cell_len

    rows = [_cells(r) for r in records]
    widths = [max([cell_len(SHORT.get(h, h) if short else h), *(cell_len(str(row[h])) for row in rows)])
              for h, _, _ in shown if h != "test"]
    edge = 2 if gap == 2 else 0  # the tightest form has no edge
    return sum(widths) + gap * len(widths) + edge


def _cells(r: ResultRecord) -> dict[str, Any]:
    mean = "~" if (r.traffic or {}).get("mix") else ""  # a length mix: its mean lengths (docs/mixes.md)
    return {
        "test": Text(_label(r)),
        "n_in": f"{mean}{r.n_in}",
        "n_out": f"{mean}{r.n_out}",
        "reqs": str(r.requests),
        "J/tok": sig(r.j_per_out_token) + (HOST_BOUND_MARK if r.host_bound else ""),
        "tok/J": sig(r.tokens_per_joule),
        "avg W": sig(r.avg_watts),
        "TTFT/TPOT": latency.cell(r.latency),
        "out tok/s": sig((r.latency or {}).get("out_tok_per_s")),
        "rounds": str(len(r.rounds)),
        "spread": _num(r.spread, ".1%"),
        "vs base": _delta(r),
        "vs model": _model_error(r),
        "verdict": _verdict_cell(r),
    }


def measurements_table(records: list[ResultRecord], width: int) -> Group:
    first = records[0]
    simulated = any(r.simulated for r in records)
    title = "pytest-joules: energy per output token" + (" — SIMULATED device" if simulated else "")
    fp = fingerprint(first.engine, first.device, first.simulated)
    layout = _columns(records, width)
    shown, room = layout.shown, layout.room
    meter = f"meter {first.meter}" + (f" · {layout.requests_note}" if layout.requests_note else "")
    caption = [describe(fp) + f" · {meter}"] if layout.gap == 2 and not layout.short else [describe(fp), meter]
    if any(h == "TTFT/TPOT" for h, _, _ in shown):
        caption.append("TTFT/TPOT: median ms to the first token / per output token")
    # ids, names and paths are the user's: Text, never markup ("[/bold]" in an id is no tag); title
    # and caption are lines of their own, not wrapped to the figures' width
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, header_style="bold",
                  padding=(0, 1 if layout.gap == 2 else 0), show_edge=layout.gap == 2)
    for header, justify, _ in shown:
        # the figures keep their width; a test name too long for what they leave breaks between words
        table.add_column(SHORT.get(header, header) if layout.short else header, justify=justify,
                         overflow="fold", no_wrap=header != "test")
    for r in records:
        cells = _cells(r)
        cells["test"] = Text(break_name(_label(r), room))
        table.add_row(*(cells[h] for h, _, _ in shown))
    return Group(Text(title, style="bold red" if simulated else "bold"), table, *(Text(c) for c in caption))


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
    return (f"{r.key}: {v.delta:+.1%} (tolerance {v.tolerance or 0:.0%}): baseline {sig(v.baseline)}, "
            f"now {sig(v.current)} J/out-token")


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
    elif not getattr(state.options, "no_hints", False):
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
    lines += _lines("latency regressions (--joules-latency-tolerance)", (r for r in records if r.latency_regression),
                    "bold red", lambda r: f"{r.key}: {r.latency_regression}")
    # a regression is not listed here: its test failed, and the failure says it once, verdict first
    lines += _lines("invalid or refused", by(V.INVALID, "refused", "error"), "bold red",
                    lambda r: f"{r.key}: {r.verdict.detail if r.verdict else ''}")
    def noisy(r: ResultRecord) -> str:
        # plain words; the statistics at -v (and in the JSON)
        v = r.verdict
        why = (v.plain() or v.detail) if v else ""
        if v and verbosity >= 1 and v.detail and v.detail != why:
            why += f" (statistics: {v.detail})"
        return f"{r.key}: {why}" + (f" (stopped: {r.rounds_stopped})" if r.rounds_stopped else "")

    lines += _lines("too noisy to judge (not failed)", by(V.NOISY), "yellow", noisy)
    idle = sorted({rd["info"]["idle_watts"] for r in records for rd in r.rounds
                   if isinstance(rd.get("info"), dict) and isinstance(rd["info"].get("idle_watts"), (int, float))})
    if idle:  # nvml meter option idle_s: shown beside J/tok, never subtracted from it
        lines.append(Text(f"idle power of the metered GPUs: {sig(idle[0])} W, measured before the first test (meter "
                          "option idle_s); J/tok includes it, each round's info has joules_above_idle", style="dim"))
    lines += _lines("device state: readings a GPU may not repeat (taken throttled, or far from the usual temperature)",
                    (r for r in records if r.device_state and r.device_state.get("flags")), "yellow",
                    lambda r: f"{r.key}: {'; '.join((r.device_state or {}).get('flags', []))}")
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
        from ..store.baselines import KEPT

        kept = [r for r in records if r.baseline_note == KEPT]
        if kept:  # one line, not a list: these are the tests whose energy did not change
            lines.append(Text(f"baselines kept for {len(kept)} test(s) whose energy did not change (this run passes "
                              "against them); delete an entry to record it anew", style="dim"))
    failed = "the test failed"
    lines += _lines("baselines not saved: the test failed (fix it, then record again)",
                    (r for r in records if r.baseline_not_saved == failed), "bold yellow", lambda r: f"{r.key}")
    lines += _lines("baselines not saved: the store could not write them (see above)",
                    (r for r in records if r.baseline_not_saved and r.baseline_not_saved != failed), "bold red",
                    lambda r: f"{r.key}")
    return lines


def footprint_lines(footprint: Any, records: list[ResultRecord], verbosity: int) -> list[Text]:
    """Carbon and cost per 1,000 output tokens, with the stated inputs (only when they are given):
    the session's range, and each test's figures at -v."""
    if not footprint:
        return []

    def span(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g} to {high:.3g}"

    def figures(j: float) -> list[float | None]:
        return [footprint.gco2e_per_1k(j), footprint.cost_per_1k(j)]

    js = [r.j_per_out_token for r in records if r.j_per_out_token is not None]
    if not js:
        return [Text(f"footprint ({footprint.describe()}): no valid measurement to convert", style="dim")]
    parts = []
    for i, unit in ((0, "gCO2e"), (1, "cost")):
        values = [v for v in (figures(j)[i] for j in js) if v is not None]
        if values:
            parts.append(f"{span(values)} gCO2e" if unit == "gCO2e" else f"cost {span(values)}")
    lines = [Text(f"footprint per 1,000 output tokens at {footprint.describe()} (stated values): "
                  + ", ".join(parts) + (f" over {len(js)} measurements" if len(js) > 1 else ""))]
    if verbosity >= 1:
        for r in records:
            g, c = figures(r.j_per_out_token) if r.j_per_out_token is not None else (None, None)
            shown = ", ".join(x for x in (g is not None and f"{g:.3g} gCO2e", c is not None and f"cost {c:.3g}") if x)
            lines.append(Text(f"  {r.key or r.name}: {shown or '—'}"))
    return lines


def _store_lines(state: Summary, records: list[ResultRecord]) -> list[Text]:
    """What happened to the baseline store as a whole: errors, replaced files, a store made anew."""
    lines = [Text(error, style="bold red") for error in state.baseline_errors]
    lines += [Text(note, style="bold yellow") for note in state.notes]
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
    if model is not None and verbosity >= 0 and not getattr(state.options, "no_hints", False):
        from .models import sweet_spot_table

        n_ins = sorted({int(r.n_in) for r in records if r.n_in})
        console.print()
        console.print(sweet_spot_table([model], n_ins, title=f"Sweet spots ({model.name} model): "
                                       "the n_out with the least J/out-token", uncertainties=state.intervals,
                                       verbose=verbosity >= 1))
    console.print()
    for line in session_lines(state, records, verbosity):
        # on a terminal, sentences wrap between words (the terminal would cut them anywhere);
        # in a log they stay one line to grep, and indented lines (commands, test ids) stay whole
        console.print(line, soft_wrap=not markup or line.plain.startswith("  "))
    text = out.getvalue()
    return text if markup else "\n".join(line.rstrip() for line in text.split("\n"))  # no padding in a log


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
