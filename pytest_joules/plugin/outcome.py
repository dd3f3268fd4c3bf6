"""A test's outcome decides whether its baselines are saved; nothing measured is lost on the way.

- A test's rounds are held (`Judging.held`) until its teardown: it saves them only when no phase
  failed (setup, call or teardown: a teardown error used to save them).
- A rerun (pytest-rerunfailures) starts the test again: the earlier attempt's records are dropped
  at its setup, so a test is listed once, saved or not, and the results JSON holds it once.
- Under pytest-xdist each worker ships a test's records and held rounds to the controller on the
  test's teardown report, and the controller writes the store. A worker that crashes later takes
  nothing with it; before, its records and baselines went down with it (8 passed, 4 rows).
- Baselines the store could not write (a full disk) are marked so on their rows at the end, and
  only then: a row never says "saved" for an entry that is not in the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: the attribute of a teardown report that carries a worker's records to the controller
REPORT_ATTR = "joules_payload"
FAILED = "the test failed"


@dataclass
class Stage:
    """One test's rounds to be recorded as its baseline, once the test passed."""

    fp: dict[str, Any]
    key: str
    workload: dict[str, Any]
    rounds: list[float]
    spread: float | None
    #: the measurement's latency figures (measure/latency.py), kept beside the rounds
    latency: dict[str, Any] | None = None
    #: the session that measured them, and how many sessions an entry keeps (judge/drift.py)
    session: str | None = None
    keep: int = 1


@dataclass
class Outcomes:
    #: the session's `Judging` and `Recording` (not imported: they import this module's Stage)
    judging: Any
    recording: Any
    worker: bool = False
    #: node id -> whether a phase of its current attempt failed
    _failed: dict[str, bool] = field(default_factory=dict)

    def phase(self, nodeid: str, when: str, report: Any) -> None:
        """After each phase's report of a test (the outermost makereport wrapper)."""
        if when == "setup":
            self._new_attempt(nodeid)
        failed = report.failed or (when == "call" and not report.passed)
        self._failed[nodeid] = self._failed.get(nodeid, False) or failed
        if when == "teardown":
            self._settle(nodeid, report, passed=not self._failed.pop(nodeid))

    def _new_attempt(self, nodeid: str) -> None:
        """A (re)run begins: what an earlier attempt of this test left is not its result."""
        self.recording.records = [r for r in self.recording.records if r.nodeid != nodeid]
        self.judging.held.clear()
        self._failed.pop(nodeid, None)

    def _settle(self, nodeid: str, report: Any, passed: bool) -> None:
        mine = [r for r in self.recording.records if r.nodeid == nodeid]
        held, self.judging.held = list(self.judging.held), []
        if not passed:
            for r in mine:
                if r.baseline_updated:
                    r.baseline_updated, r.baseline_not_saved = False, FAILED
            held = []
        if self.worker:  # ship to the controller now: a crash later cannot take them
            setattr(report, REPORT_ATTR, json.dumps(
                {"records": [r.to_dict() for r in mine], "stages": [asdict(s) for s in held]}, default=str))
            self.recording.records = [r for r in self.recording.records if r.nodeid != nodeid]
            return
        self._stage(held, mine)
        self.judging.flush_if_due()

    def received(self, report: Any) -> None:
        """xdist controller: a worker's teardown report with a test's records and baselines."""
        from ..store.record import ResultRecord

        data = getattr(report, REPORT_ATTR, None)
        if not data:
            return
        payload = json.loads(data)
        records = [ResultRecord.from_dict(r) for r in payload.get("records", [])]
        self.recording.records = [r for r in self.recording.records if r.nodeid != report.nodeid] + records
        self._stage([Stage(**s) for s in payload.get("stages", [])], records)
        self.judging.flush_if_due()

    def _stage(self, held: list[Stage], records: list[Any]) -> None:
        from ..engines.workload import Workload
        from ..errors import DataError

        for s in held:
            try:
                self.judging.store.stage(s.fp, s.key, s.workload, s.rounds, s.spread, latency=s.latency,
                                         session=s.session, keep=s.keep)
            except DataError as exc:
                self.judging.add_error(f"baseline store: {exc}")
                for r in records:
                    if r.key == s.key:
                        r.baseline_updated, r.baseline_not_saved = False, str(exc)

    def finish(self) -> None:
        """The session's end: write what is staged; rows of entries the store could not write
        say so (and the summary lists them), so none reads "saved" that is not in the file."""
        unsaved = self.judging.flush(final=True)
        if not unsaved:
            return
        for r in self.recording.records:
            if r.key in unsaved and r.baseline_updated:
                r.baseline_updated, r.baseline_not_saved = False, unsaved[r.key]
