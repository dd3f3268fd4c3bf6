"""The sessions of a baseline recorded over several (`--joules-update-baselines
--joules-baseline-sessions K`): each run adds its session's rounds and keeps the K - 1 before.

An entry's own "rounds" stay the newest session's (what older versions read); the earlier ones
are kept beside them, oldest first, each with the session that measured it:

    "rounds": [...], "session": "<id>", "recorded": "<UTC ISO>",
    "earlier_sessions": [{"rounds": [...], "session": "<id>" | null, "recorded": "<UTC ISO>"}, ...]

judge/drift.py averages the sessions' offsets and estimates from them how far sessions drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import DataError


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@dataclass(frozen=True)
class Earlier:
    """One earlier session of a baseline recorded over several (--joules-baseline-sessions)."""

    rounds: list[float]
    session: str | None
    recorded: str


def parse_earlier(where: str, items: Any, fix: str) -> tuple[Earlier, ...]:
    """The earlier sessions of an entry ([] when it has none), each validated like its rounds."""
    if items is None:
        return ()
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DataError(f"{where}: 'earlier_sessions' must be a list of objects; {fix}")
    out = []
    for i, item in enumerate(items):
        rounds, session, recorded = item.get("rounds"), item.get("session"), item.get("recorded", "")
        if not isinstance(rounds, list) or not rounds or not all(_positive(r) for r in rounds):
            raise DataError(f"{where}: earlier_sessions[{i}]: 'rounds' must be a non-empty list of positive "
                            f"J/output-token values; {fix}")
        if (session is not None and not isinstance(session, str)) or not isinstance(recorded, str):
            raise DataError(f"{where}: earlier_sessions[{i}]: 'session' and 'recorded' must be strings; {fix}")
        out.append(Earlier([float(r) for r in rounds], session, recorded))
    return tuple(out)


def with_earlier(entry: dict[str, Any], old: Mapping[str, Any], keep: int, same_work: bool) -> dict[str, Any]:
    """`entry` with up to keep - 1 of the old entry's sessions before it (the old one's own last):
    only an entry of the same work, and never a session twice (the newest measurement wins)."""
    if keep <= 1 or not old or not same_work:
        return entry
    sessions = list(old.get("earlier_sessions") or [])
    sessions.append({"rounds": old.get("rounds"), "session": old.get("session"), "recorded": old.get("recorded", "")})
    sessions = [s for s in sessions if s.get("session") is None or s.get("session") != entry.get("session")]
    return {**entry, "earlier_sessions": sessions[-(keep - 1):]} if sessions else entry
