"""The session of `pytest --joules`: a plugin object registered only when --joules is on.

It holds the session's three parts, each a job of its own: `Devices` (the engine and meter,
built once), `Judging` (baselines and the fitted model: a verdict per measurement) and
`Recording` (the records, and the files written from them at the end). Its hook methods run only
when it is registered, so none of them needs an "is --joules on?" guard; pytest-xdist workers ship
their records to the controller as `ResultRecord` dicts. Only imported when --joules is on.
"""

from __future__ import annotations

import json
from typing import Any, Generator

import pytest

from .devices import Devices
from .judging import Judging
from .options import JoulesOptions
from .recording import Recording

#: the key of a worker's records in its `workeroutput`, and of the drawn seed in `workerinput`
WORKER_KEY = "pytest_joules"
SEED_KEY = "pytest_joules_seed"
SESSION_ID_KEY = "pytest_joules_session"
#: the name the session is registered under (`config.pluginmanager.get_plugin(PLUGIN_NAME)`)
PLUGIN_NAME = "joules-session"


class JoulesSession:
    def __init__(self, options: JoulesOptions, worker: tuple[str, int] | None = None, rootdir: Any = None) -> None:
        self.options = options
        self.devices = Devices(options, worker)
        self.judging = Judging(options, self.devices)
        self.recording = Recording(options, self.judging, rootdir=rootdir)
        from .outcome import Outcomes

        self.outcomes = Outcomes(self.judging, self.recording, worker=worker is not None)

    @property
    def is_worker(self) -> bool:
        return self.devices.worker is not None

    def test_key(self, node: Any) -> str:
        """The baseline key of a test: its node id, with the file part made relative to
        `options.key_base` when that is set (so a store is keyed alike from any rootdir)."""
        import os

        base = self.options.key_base
        nodeid = node.nodeid
        if base is None or "::" not in nodeid:
            return nodeid
        try:
            rel = os.path.relpath(node.path, base)
        except ValueError:  # another drive (Windows)
            return nodeid
        if rel.startswith(".."):  # a test outside the store's directory: keep pytest's id
            return nodeid
        return rel.replace(os.sep, "/") + "::" + nodeid.split("::", 1)[1]

    # -- hooks --------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> str:
        from ..measure.measurement import DRY_RUN

        o = self.options
        engine = o.engine + (" (SIMULATED)" if o.engine == "sim" else "")
        model = f", model {o.model}" if o.model else ""
        update = ", updating baselines" if o.update_baselines else ""
        noisy = " (noisy verdicts fail)" if o.noisy_fails else ""
        if o.new_fails or (o.ci and not o.allow_new):
            noisy += " (tests without a baseline fail" + (": CI; --joules-allow-new lets them pass)" if not o.new_fails else ")")
        noisy += " (the store must hold baselines for this device)" if o.require_baselines else ""
        rounds = f"rounds {o.rounds}" + (f" (at most {o.max_seconds:g} s a test)" if o.rounds == "auto" else "")
        seed = f"seed {o.seed}" + ("" if o.seed_given else f" (random; --joules-seed {o.seed} repeats this run)")
        new = "" if self.judging.store_existed else " (does not exist yet)"
        dry = f", {DRY_RUN} (meter none)" if o.meter == "none" else ""
        return (f"joules: engine {engine}{model}, tolerance {o.tolerance:.1%}{noisy}, {rounds}, {seed}, "
                f"baselines {o.baselines}{new}{update}{dry}") + (f"\njoules: {o.anchor_note}" if o.anchor_note else "")

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the outcome after xfail and the like
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        self.outcomes.phase(item.nodeid, call.when, report)  # a test failed in any phase saves no baseline
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """xdist controller: a worker's test records, shipped on its teardown report (outcome.py)."""
        if not self.is_worker:
            self.outcomes.received(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.outcomes.finish()  # the controller (or the only process) writes what was recorded
        if self.recording.collection_order:  # xdist: workers finish in any order
            self.recording.records.sort(key=self.recording.record_order)
        self.devices.close()
        if self.is_worker:
            # xdist: ship this worker's measurements to the controller (see pytest_testnodedown)
            payload = {"records": [r.to_dict() for r in self.recording.records], "model_path": self.judging.model_path,
                       "replaced": self.judging.replaced, "baseline_errors": self.judging.baseline_errors,
                       "notes": self.judging.notes, "model_refused": self.judging.model_refused}
            session.config.workeroutput[WORKER_KEY] = json.dumps(payload, default=str)  # type: ignore[attr-defined]  # set by xdist
            return
        rec = self.recording
        from ..measure.state import annotate

        annotate(rec.records)  # each measurement's device state, against the session's usual one
        drifted = rec.finish_drift()  # the session's end of the drift model: verdicts final before anything is written
        if (rec.model_check() or drifted) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        rec.write_json()
        rec.write_exports()  # the controller only: workers returned above
        rec.autosave()
        if (rec.json_error or rec.export_errors or self.judging.baseline_errors) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: hand this run's seed to each worker (see plugin.pytest_configure)."""
        node.workerinput[SEED_KEY] = self.options.seed
        node.workerinput[SESSION_ID_KEY] = self.judging.drift.session_id  # one session in the baselines it records

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist controller: keep the collection order, so the summary lists tests as a run without -n does."""
        if not self.recording.collection_order:
            self.recording.collection_order = {nodeid: i for i, nodeid in enumerate(ids)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect the measurements a worker took."""
        from ..store.record import ResultRecord

        data = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if not data:
            return
        payload = json.loads(data)
        rec = self.recording
        rec.records.extend(ResultRecord.from_dict(r) for r in payload.get("records", []))
        rec.records.sort(key=rec.record_order)  # workers finish in any order; stable: a test's own stay in order
        self.judging.model_path = self.judging.model_path or payload.get("model_path")
        self.judging.replaced += payload.get("replaced", [])
        self.judging.baseline_errors += payload.get("baseline_errors", [])
        self.judging.add_notes(payload.get("notes", []))
        self.judging.model_refused = self.judging.model_refused or payload.get("model_refused")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from ..report.summary import write_summary

        write_summary(terminalreporter, self.recording.summary())


STASH: pytest.StashKey[JoulesSession] = pytest.StashKey()


def get(config: pytest.Config) -> JoulesSession | None:
    return config.stash.get(STASH, None)
