"""The summary's lines about the drift between sessions (judge/drift.py, docs/drift.md): the
session's common shift, the between-session spread used, and what the session's end found."""

from __future__ import annotations

from typing import Any

from rich.text import Text

STYLES = {"regression": "bold red", "improved": "bold green", "within drift": "", "too few tests": "dim"}


def drift_lines(state: Any) -> list[Text]:
    result = state.drift
    if result is None:
        return []
    spread = result.spread
    lines = []
    main = result.main
    if main is not None and main.shift is not None:
        text = Text(f"session shift {main.shift:+.2%} (the median of {main.tests} tests' changes); between-session "
                    f"spread {spread.describe()}: a whole-session change within ±{main.band:.2%} is drift here; ")
        text.append(_status(main.status, main.shift), style=STYLES.get(main.status, ""))
        lines.append(text)
    elif main is not None:
        lines.append(Text(f"session shift: unknown ({main.tests} test(s) compared with baselines of the same sessions; "
                          f"it takes 3); between-session spread {spread.describe()}", style="dim"))
    if spread.source == "prior":
        lines.append(Text("no drift history of this device yet: record the baselines over several sessions "
                          "(--joules-update-baselines --joules-baseline-sessions 5) or keep runs (--joules-autosave) "
                          "to measure it", style="yellow"))
    lines += [Text(line, style="bold red") for line in state.drift_failures]
    return lines


def _status(status: str, shift: float) -> str:
    if status == "regression":
        return "the whole session regressed, beyond the drift"
    if status == "improved":
        return "the whole session improved, beyond the drift"
    return status
