"""The Markdown of a pull-request comment: what a reviewer needs from an energy run, first.

Regressions lead, each with its change, the interval the rounds allow and the tolerance; other
verdicts follow, passes folded away. The comment starts with `MARKER`, an HTML comment a workflow
searches for to update its own comment instead of adding one per push (examples/ci/). It stays
within GitHub's limit on a comment's size (65,536 characters): past `LIMIT` the passing rows are
left out with a count, then the others, never the heading or the regressions' summary.

A plain value in (`CommentRow`s and a `CommentContext`), a string out: `joules report` builds the rows
from a run's own verdicts or from a comparison of two files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..numbers import sig

#: the first line of every comment: a workflow finds its own comment by it
MARKER = "<!-- pytest-joules:report -->"
#: GitHub refuses a comment body over 65,536 characters; leave room for what a workflow adds
LIMIT = 60_000

#: the order verdicts are listed in: what needs a reviewer first
ORDER = ("regression", "invalid", "refused", "error", "noisy", "improved", "new", "pass", "dry-run")
#: a word of what each verdict means, for the legend under the table
MEANING = {
    "regression": "J/output-token rose beyond the tolerance, beyond the noise",
    "improved": "J/output-token fell beyond the tolerance, beyond the noise",
    "noisy": "the rounds were too scattered to judge a change of the tolerance's size",
    "new": "no baseline yet",
    "invalid": "no valid reading",
    "pass": "within the tolerance",
}


@dataclass(frozen=True)
class CommentRow:
    """One test's figures and verdict, as the comment shows them."""

    name: str
    n_in: int
    n_out: int
    requests: int
    j_per_out_token: float | None
    status: str
    baseline: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    tolerance: float | None = None
    #: "TTFT 41 ms · TPOT 12 ms" where the run measured latency (else "")
    latency: str = ""


@dataclass(frozen=True)
class CommentContext:
    """Where the figures come from: shown under the heading and in the footer."""

    simulated: bool = False
    device: str = ""
    against: str = ""
    run: str = ""
    commit: str = ""
    tolerance: float | None = None
    notes: list[str] = field(default_factory=list)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _cell(text: str) -> str:
    """A test's name in a table cell: pipes escaped, code so brackets stay literal."""
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _interval(r: CommentRow) -> str:
    if r.ci_low is None or r.ci_high is None:
        return "—"
    return f"{r.ci_low:+.1%} to {r.ci_high:+.1%}"


def _verdict(r: CommentRow) -> str:
    return f"**{r.status}**" if r.status in ("regression", "invalid", "refused", "error") else r.status


def _table(rows: Sequence[CommentRow], latency: bool) -> list[str]:
    head = "| test | n_in→n_out ×req | J/out-token | baseline | change | likely change | verdict |"
    rule = "|---|---:|---:|---:|---:|---:|---|"
    if latency:
        head, rule = head + " latency |", rule + "---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {_cell(r.name)} | {r.n_in}→{r.n_out} ×{r.requests} | {sig(r.j_per_out_token)} | "
                f"{sig(r.baseline)} | {_pct(r.delta)} | {_interval(r)} | {_verdict(r)} |")
        lines.append(line + (f" {r.latency or '—'} |" if latency else ""))
    return lines


def _ordered(rows: Sequence[CommentRow]) -> list[CommentRow]:
    rank = {s: i for i, s in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r.status, len(ORDER)), -(r.delta or 0.0), r.name))


def _heading(rows: Sequence[CommentRow], ctx: CommentContext) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    plural = {"regression": "regressions", "pass": "passed"}
    tally = ", ".join(f"{counts[s]} {plural.get(s, s) if counts[s] != 1 or s == 'pass' else s}"
                      for s in sorted(counts, key=lambda s: ORDER.index(s) if s in ORDER else 99))
    return f"### Energy per output token: {tally}" + (" (SIMULATED)" if ctx.simulated else "")


def comment_markdown(rows: Sequence[CommentRow], ctx: CommentContext, limit: int = LIMIT) -> str:
    """The comment's Markdown, at most `limit` characters."""
    rows = _ordered(rows)
    latency = any(r.latency for r in rows)
    top = [MARKER, _heading(rows, ctx), ""]
    if ctx.simulated:
        top += ["> **SIMULATED device**: these figures show the pipeline working, not a measurement of real hardware.", ""]
    tol = _tolerances(rows, ctx.tolerance)
    top += [f"A test fails when its J/output-token rises by more than the tolerance ({tol}) and the rise "
            "stands out from the noise of its rounds. *Likely change*: the range the rounds allow "
            f"({_level(rows)} confidence).", ""]
    shown = [r for r in rows if r.status != "pass"]
    passing = [r for r in rows if r.status == "pass"]
    foot = _footer(ctx)
    body = _body(shown, passing, latency)
    text = "\n".join(top + body + foot)
    while len(text) > limit and (passing or shown):
        # passing rows go first, then the least urgent of the rest; the count says what is left out
        if passing:
            passing = passing[: len(passing) // 2] if len(passing) > 1 else []
        else:
            shown = shown[: max(len(shown) // 2, 0)] if len(shown) > 1 else []
        body = _body(shown, passing, latency, left_out=len(rows) - len(shown) - len(passing))
        text = "\n".join(top + body + foot)
    return text[:limit] + "\n"


def _body(shown: list[CommentRow], passing: list[CommentRow], latency: bool, left_out: int = 0) -> list[str]:
    lines: list[str] = []
    if shown:
        lines += _table(shown, latency) + [""]
    if passing:
        lines += [f"<details><summary>{len(passing)} passing test(s)</summary>", ""]
        lines += _table(passing, latency) + ["", "</details>", ""]
    if left_out:
        lines += [f"*{left_out} more row(s) left out to fit GitHub's comment size; the step summary and "
                  "the results JSON hold them all.*", ""]
    return lines


def _tolerances(rows: Sequence[CommentRow], given: float | None) -> str:
    """"5%", or "5%; 3% for 2 tests" where markers set their own."""
    from collections import Counter

    counts = Counter(r.tolerance for r in rows if r.tolerance is not None)
    if not counts:
        return f"{given * 100:.4g}%" if given is not None else "each test's"
    (common, _), *others = counts.most_common()
    text = f"{common * 100:.4g}%"
    for tol, n in others:
        text += f"; {tol * 100:.4g}% for {n} test{'s' if n != 1 else ''}"
    return text


def _level(rows: Sequence[CommentRow]) -> str:
    levels = sorted({r.confidence for r in rows if r.confidence})
    if not levels:
        return "95%"
    return " or ".join(f"{c * 100:.4g}%" for c in levels)


def _footer(ctx: CommentContext) -> list[str]:
    parts = [p for p in (f"run {ctx.run}" if ctx.run else "", f"commit `{ctx.commit}`" if ctx.commit else "",
                         ctx.device, f"against {ctx.against}" if ctx.against else "") if p]
    lines = [f"- {note}" for note in ctx.notes]
    if lines:
        lines.append("")
    return lines + ([f"<sub>pytest-joules · {' · '.join(parts)}</sub>"] if parts else [])
