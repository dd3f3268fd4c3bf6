"""Test names in narrow tables: broken between words, never cut or folded mid-word."""

from __future__ import annotations

import re

#: where a test's name may break over lines: before "::name" and "[params]", after "/", after
#: "_" outside the brackets (so never inside "n_out") and after "-" between the parameters
_BREAKS = re.compile(r"(?=::)|(?=\[)|(?<=/)|(?<=_)(?![^\[]*\])|(?<=-)(?=[^\[]*\])")


def break_name(name: str, width: int) -> str:
    """The name over lines of at most `width` cells, broken only at `_BREAKS` (a single word
    longer than the line is the only thing a table still has to fold)."""
    lines: list[str] = []
    for piece in _BREAKS.split(name):
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return "\n".join(lines)
