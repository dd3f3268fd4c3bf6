"""The drift model in a session of the plugin (judge/drift.py; docs/drift.md).

`SessionDrift` holds the device's between-session spread (stated with --joules-drift, else
estimated once from the baseline file's sessions and the saved runs beside the store, with the
prior) and the changes of the tests judged so far, per frame (tests whose baselines come from the
same sessions). Each verdict while tests run uses the median of the earlier tests' changes; at the
session's end (`finish`, on the controller under xdist) every record is judged again and the
session check runs. A record keeps what that needs as its `drift` field.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

from ..errors import DataError
from ..judge import drift as D
from ..judge import verdict as V

if TYPE_CHECKING:
    from ..judge.drift_session import SessionResult
    from ..measure.stopping import Rule
    from ..store.baselines import BaselineStore, Entry
    from ..store.record import ResultRecord
    from .options import JoulesOptions

#: saved runs read for the spread: the newest ones (each file is a whole results document)
MAX_RUNS = 50


def _mean_and_var(rounds: list[float]) -> tuple[float, float]:
    """The mean log J/token of one session's rounds, and its variance (0 for a single round)."""
    logs = [math.log(r) for r in rounds]
    mean = sum(logs) / len(logs)
    var = sum((x - mean) ** 2 for x in logs) / (len(logs) - 1) / len(logs) if len(logs) > 1 else 0.0
    return mean, var


class SessionDrift:
    def __init__(self, options: JoulesOptions, store: Callable[[], BaselineStore], session_id: str) -> None:
        self.options = options
        self._store = store
        self.session_id = session_id
        self._spread: D.Spread | None = None
        #: frame -> key -> change, in the order the tests were judged
        self.changes: dict[str, dict[str, D.Change]] = defaultdict(dict)
        #: the session's end: set by `finish`
        self.result: SessionResult | None = None

    # -- the spread -----------------------------------------------------------------------------
    def spread(self, fp: dict[str, Any]) -> D.Spread:
        if self._spread is None:
            self._spread = self._estimate(fp)
        return self._spread

    def _estimate(self, fp: dict[str, Any]) -> D.Spread:
        from ..judge import drift_history as H

        if self.options.drift is not None:
            return D.stated(self.options.drift)
        try:
            entries = self._store().entries(fp)
        except DataError:  # the comparison reports the file; the spread falls back on the prior
            entries = {}
        tests = []
        for entry in entries.values():
            ids = entry.session_ids
            if len(set(ids)) == len(ids) and len(ids) >= 2:
                tests.append({sid: _mean_and_var(rounds) for sid, rounds in zip(ids, entry.sessions)})
        return H.posterior([H.from_sessions(tests), H.from_runs(self._saved_shifts(fp))])

    def _saved_shifts(self, fp: dict[str, Any]) -> list[tuple[str, float, float]]:
        """(frame, log shift, its noise) of the saved runs of this device and engine, oldest first."""
        from ..store.fingerprint import fingerprint
        from ..store.results import load_json
        from ..store.runs import list_runs

        try:
            runs = list_runs(self.options.autosave_dir)[-MAX_RUNS:]
        except DataError:
            return []
        out = []
        for run in runs:
            try:
                doc = load_json(run.path)
            except DataError:
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("engine"), dict) or not isinstance(doc.get("device"), dict):
                continue
            if fingerprint(doc["engine"], doc["device"], bool(doc.get("simulated"))) != fp:
                continue
            drift = (doc.get("session") or {}).get("drift") if isinstance(doc.get("session"), dict) else None
            for frame in (drift or {}).get("frames") or []:
                shift = frame.get("shift") if isinstance(frame, dict) else None
                noise = frame.get("noise") if isinstance(frame, dict) else None
                if isinstance(shift, (int, float)) and shift > -1 and frame.get("status") == "within drift":
                    out.append((str(frame.get("frame")), math.log1p(shift), float(noise) if isinstance(noise, (int, float)) else 0.0))
        return out

    # -- while tests run ------------------------------------------------------------------------
    def shift_so_far(self, frame: str, key: str) -> D.Shift | None:
        return D.common_shift([c for k, c in self.changes[frame].items() if k != key])

    def rule(self, entry: Entry, key: str, fp: dict[str, Any], tolerance: float, max_seconds: float) -> Rule:
        from ..measure.drift_rule import CompareInSession

        return CompareInSession(tolerance=tolerance, max_seconds=max_seconds, sessions=entry.sessions,
                                spread=self.spread(fp), shift=self.shift_so_far(entry.frame, key))

    def judge(self, values: list[float], entry: Entry, key: str, fp: dict[str, Any], tolerance: float,
              confidence: float, noisy_fails: bool) -> tuple[V.Verdict, dict[str, Any] | None]:
        """The verdict while the test runs, and the record's `drift` field (None: no change measured)."""
        spread = self.spread(fp)
        verdict, change = D.judge_rounds(values, entry.sessions, tolerance, spread, self.shift_so_far(entry.frame, key),
                                         confidence=confidence, noisy_fails=noisy_fails)
        if change is None:
            return verdict, None
        self.changes[entry.frame][key] = change
        return verdict, {"frame": entry.frame, "change": change.to_dict(), "spread": spread.to_dict(),
                         "tolerance": tolerance, "confidence": confidence, "noisy_fails": noisy_fails}

    # -- the session's end ----------------------------------------------------------------------
    def finish(self, records: list[ResultRecord]) -> list[str]:
        """Judge every record again and run the session check; the failing lines of what was found
        only now (none when recording baselines)."""
        from ..judge.drift_session import Item, finish

        items, spread = [], None
        for r in records:
            d = r.drift
            if not d or r.key is None or r.verdict is None:
                continue
            try:
                items.append(Item(r.key, str(d["frame"]), D.Change.from_dict(d["change"]), r.verdict,
                                  float(d["tolerance"]), float(d["confidence"]), bool(d.get("noisy_fails"))))
                spread = spread or D.Spread.from_dict(d["spread"])
            except (KeyError, TypeError, ValueError):
                continue  # a record of another version: its verdict stands
        if not items or spread is None:
            return []
        self.result = finish(items, spread, self.options.tolerance)
        for r in records:
            if r.key in self.result.verdicts:
                r.verdict = self.result.verdicts[r.key]
        if self.options.update_baselines:
            return []
        found = set(self.result.found)
        return [f"found at the session's end (its test passed while it ran): {r.verdict.failure(r.key)}"
                for r in records if r.key in found and r.verdict is not None]
