"""Judging one measurement: its baseline (compare, or stage a new one), its model prediction.

The baselines are staged while tests run and written between tests or at the end (`flush`),
never before the test's outcome is known: a failing test's rounds are dropped (`test_done`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..judge import verdict as V
from .devices import Devices
from .drifting import SessionDrift
from .options import JoulesOptions

if TYPE_CHECKING:
    from ..engines.workload import Workload
    from ..measure.measurement import Measurement
    from ..measure.stopping import Rule
    from ..models.analytical import FittedModel
    from ..store.baselines import BaselineStore
    from ..store.record import ResultRecord

REFUSED = "refused"  # baseline file of another fingerprint
ERROR = "error"  # baseline file unreadable


@dataclass
class Judged:
    """What judging a measurement added to its record, and the lines that fail its test."""

    key: str
    failures: list[str] = field(default_factory=list)
    baseline_note: str = ""
    baseline_updated: bool = False
    extrapolated: bool = False
    model_batching: str | None = None
    #: the drift model's inputs (plugin/drifting.py), for the session's end
    drift: dict[str, Any] | None = None

    def record_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"key": self.key, "baseline_note": self.baseline_note,
                                  "baseline_updated": self.baseline_updated, "extrapolated": self.extrapolated}
        if self.model_batching is not None:
            fields["model_batching"] = self.model_batching
        if self.drift is not None:
            fields["drift"] = self.drift
        return fields


class Judging:
    """Baselines and the fitted model of one session, and the verdict of each measurement."""

    def __init__(self, options: JoulesOptions, devices: Devices) -> None:
        self.options = options
        self.devices = devices
        #: models file beside the baselines, when one was found (shipped from xdist workers too)
        self.model_path: str | None = None
        #: why staged baselines could not be written (shown in the summary; the session fails)
        self.baseline_errors: list[str] = []
        #: files of another fingerprint an update replaced (`baselines.Replaced` as dicts, from workers too)
        self.replaced: list[dict[str, Any]] = []
        #: whether the baselines directory existed when the session began (a new one is announced)
        self.store_existed = options.baselines.is_dir()
        self._store: BaselineStore | None = None
        self._models: list[FittedModel] | None = None
        self._model_error: str | None = None
        #: the drift between sessions: this session's shift and the device's spread (drifting.py);
        #: its session id names the session in the baselines it records (xdist workers get the controller's)
        self.drift = SessionDrift(options, lambda: self.store, new_session_id())

    @property
    def store(self) -> BaselineStore:
        if self._store is None:
            from ..store.baselines import BaselineStore

            self._store = BaselineStore(self.options.baselines)
        return self._store

    # -- the fitted model ---------------------------------------------------------------------
    def models(self) -> list[FittedModel]:
        """The fitted models beside the baselines ([] when there is no model file)."""
        if self._models is None:
            path = self.store.model_path_for(self.devices.fingerprint)
            self._models = []
            if path.exists():
                from ..models.analytical import load_models

                try:
                    self._models = load_models(path)
                    self.model_path = str(path)
                except DataError as exc:
                    self._model_error = f"{exc}; fix it or fit it again with `joules fit ... --save {path}`"
        return self._models

    def model(self) -> FittedModel | None:
        """The model used for predictions: the lowest leave-one-out MAPE (`analytical.best_model`)."""
        from ..models.analytical import best_model

        return best_model(self.models())

    def models_for_report(self) -> list[FittedModel]:
        """Models for the summary: loaded here, or (under xdist) from the path a worker found."""
        if self._models:
            return list(self._models)
        if self.model_path:
            from ..models.analytical import load_models

            try:
                return load_models(self.model_path)
            except DataError:
                return []
        return []

    # -- one measurement ----------------------------------------------------------------------
    def judge(self, m: Measurement, key: str, tolerance: float | None, model_tolerance: float | None) -> Judged:
        """Fill in the baseline, verdict and prediction of `m`."""
        tol = self.options.tolerance if tolerance is None else tolerance
        judged = Judged(key)
        if m.dry_run:
            m.verdict = V.Verdict(V.DRY_RUN, tolerance=tol, detail=f"dry run: no energy read (meter {m.meter!r})")
            return judged
        if not m.valid:
            m.verdict = V.Verdict(V.INVALID, tolerance=tol, detail="no valid rounds: " + "; ".join(m.problems))
            judged.failures.append(f"{key}: no valid measurement: " + ("; ".join(m.problems) or "no rounds"))
            return judged
        readable = self._compare(m, tol, judged)
        if readable and self.options.update_baselines:  # never write over a file we cannot read
            self._stage(m, judged)
        self._predict(m, judged, model_tolerance)
        return judged

    def rounds_rule(self, key: str, workload: Workload, tolerance: float | None) -> Rule:
        """The stopping rule of `--joules-rounds auto` for this test: resolve the comparison with
        its baseline, or (recording, or no usable baseline) know the median to a fraction of T."""
        from ..measure import stopping
        from ..store.baselines import FingerprintMismatch

        tol = self.options.tolerance if tolerance is None else tolerance
        budget = dict(tolerance=tol, max_seconds=self.options.max_seconds)
        if self.options.update_baselines:
            return stopping.Precise(**budget)
        try:
            found = self.store.lookup(self.devices.fingerprint, key, workload)
        except (FingerprintMismatch, DataError):  # judged (and reported) after measuring
            return stopping.Precise(**budget)
        if found.entry is None or found.note or sum(len(s) for s in found.entry.sessions) < 2:
            return stopping.Precise(**budget)
        return self.drift.rule(found.entry, key, self.devices.fingerprint, tol, self.options.max_seconds)

    def _compare(self, m: Measurement, tol: float, judged: Judged) -> bool:
        """Judge `m` against its baseline; False when the baseline file cannot be read."""
        from ..store.baselines import FingerprintMismatch

        key = judged.key
        try:
            found = self.store.lookup(self.devices.fingerprint, key, m.workload)
        except FingerprintMismatch as exc:
            m.verdict = V.Verdict(REFUSED, current=m.j_per_out_token, tolerance=tol, detail=str(exc))
            if self.options.update_baselines:
                judged.baseline_note = "replaced baselines of another fingerprint"
            else:
                judged.failures.append(str(exc))
            return True
        except DataError as exc:
            m.verdict = V.Verdict(ERROR, current=m.j_per_out_token, tolerance=tol, detail=str(exc))
            judged.failures.append(f"baseline store: {exc}")
            return False
        m.baseline_rounds = [r for s in found.entry.sessions for r in s] if found.entry else None
        if found.entry is not None and not found.note:
            m.verdict, judged.drift = self.drift.judge(m.round_values, found.entry, key, self.devices.fingerprint, tol,
                                                       m.confidence, self.options.noisy_fails)
        else:
            m.verdict = V.judge(m.round_values, m.baseline_rounds, tol, confidence=m.confidence,
                                noisy_fails=self.options.noisy_fails)
        if found.note:  # recorded for another workload: not comparable
            m.verdict = V.Verdict(V.NEW, current=m.verdict.current, tolerance=tol, detail=found.note)
            judged.baseline_note = found.note
        if m.verdict.failed and not self.options.update_baselines:
            judged.failures.append(m.verdict.failure(test_name(key)))
        elif m.verdict.status == V.NEW and self.options.new_fails and not self.options.update_baselines:
            judged.failures.append(
                f"energy new (--joules-new-fails): {test_name(key)}: {m.verdict.detail}; record its baseline "
                "with --joules-update-baselines (a renamed test needs one under its new name)")
        return True

    def _stage(self, m: Measurement, judged: Judged) -> None:
        """Stage the rounds; they are written at the session's end (or when due, between tests),
        and dropped if the test fails (`test_done`)."""
        try:
            self.store.stage(self.devices.fingerprint, judged.key, m.workload, m.round_values, m.spread,
                             session=self.drift.session_id, keep=self.options.baseline_sessions)
            judged.baseline_updated = True
        except DataError as exc:
            judged.failures.append(f"baseline store: {exc}")

    def _predict(self, m: Measurement, judged: Judged, tolerance: float | None) -> None:
        model = self.model()
        if self._model_error:
            judged.failures.append(f"fitted model: {self._model_error}")
            return
        if model is None:
            if tolerance is not None:
                judged.failures.append(
                    f"{judged.key}: model_tolerance is set but there is no fitted model at "
                    f"{self.store.model_path_for(self.devices.fingerprint)}; fit one with `joules fit RESULTS --save PATH`"
                )
            return
        w = m.workload
        other = model.batching_mismatch(w.requests, w.max_batch_size)
        if other is not None:  # a model fitted at another batching does not predict this workload
            judged.model_batching = other
            if tolerance is not None:
                judged.failures.append(
                    f"{judged.key}: model_tolerance is set but the model was fitted at {other}, this test runs "
                    f"{_batching(w)}; fit a model at this batching with `joules sweep` and `joules fit --save`"
                )
            return
        m.prediction = float(model.predict(w.n_in, w.n_out))
        m.model_name = model.name
        judged.extrapolated = not model.in_range(w.n_in, w.n_out)
        if tolerance is not None:
            try:
                m.assert_matches_model(tolerance)
            except AssertionError as exc:
                judged.failures.append(str(exc))

    # -- after a test, and at the end ---------------------------------------------------------
    def test_done(self, records: list[ResultRecord], nodeid: str, passed: bool) -> None:
        """After a test's call phase: a failed test's staged baselines are dropped, since its own
        assertions rejected what it measured; then staged ones are written if due. Flushing only
        here, between tests, means no entry is written before its test's outcome is known."""
        if not passed:
            for r in reversed(records):  # this test's records are the last ones
                if r.nodeid != nodeid:
                    break
                if r.baseline_updated and r.key and self.store.unstage(self.devices.fingerprint, r.key):
                    r.baseline_updated = False
                    r.baseline_not_saved = "the test failed"
        if self._store is not None and self._store.due():
            self.flush()

    def flush(self) -> None:
        """Write the staged baselines (one write per file); a failure is kept for the summary."""
        if self._store is None or not self._store.pending:
            return
        import dataclasses

        try:
            done = self._store.flush()
        except DataError as exc:
            self.baseline_errors.append(f"baseline store: {exc}; the baselines of this run were not saved")
            return
        self.replaced += [dataclasses.asdict(r) for r in done]

    def model_file(self) -> Any:
        """Where this session's fitted model is (or would be) kept."""
        return self.store.model_path_for(self.devices.fingerprint)


def new_session_id() -> str:
    """This session's name in the baselines it records: its UTC start and a random suffix."""
    import datetime as _dt
    import secrets

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def test_name(key: str) -> str:
    """A baseline key without its file part ("test_chat_turn", "TestX::test_y::#2"): pytest's
    one-line summaries put the node id beside a failure's message already."""
    return key.split("::", 1)[1] if "::" in key else key


def _batching(w: Workload) -> str:
    return f"requests={w.requests}" + (f" max_batch_size={w.max_batch_size}" if w.max_batch_size is not None else "")
