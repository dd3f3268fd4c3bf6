"""Judging one measurement: its baseline (compare, or stage a new one), its model prediction.

The baselines are held while a test runs, staged once it passed (plugin/outcome.py), and written
between tests or at the end (`flush`): a test that failed in any phase saves none.
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
    #: the test's own key (without a second measurement's name)
    test: str | None = None
    baseline_note: str = ""
    baseline_updated: bool = False
    extrapolated: bool = False
    model_batching: str | None = None
    #: the baseline's latency figures (measure/latency.py), and why this run's fail the latency gate
    baseline_latency: dict[str, Any] | None = None
    latency_regression: str | None = None
    #: the drift model's inputs (plugin/drifting.py), for the session's end
    drift: dict[str, Any] | None = None

    def record_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"key": self.key, "baseline_note": self.baseline_note,
                                  "baseline_updated": self.baseline_updated, "extrapolated": self.extrapolated}
        for name in ("model_batching", "baseline_latency", "latency_regression", "drift"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
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
        #: why the model file beside the baselines is not used (fitted on another fingerprint)
        self.model_refused: str | None = None
        #: session-wide facts for the summary (a refused model, migrated files, other devices' stores)
        self.notes: list[str] = []
        from .missing import Missing

        #: tests without a baseline (the session sets the command that records them)
        self.missing = Missing()
        #: the current test's rounds to record, until its outcome is known (plugin/outcome.py)
        self.held: list[Any] = []
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
        """The fitted models beside the baselines ([] when there is no model file, or its
        fingerprint is another device's or engine's: models/identity.py)."""
        if self._models is None:
            path = self.store.model_source_for(self.devices.fingerprint)
            self._models = []
            if path.exists():
                from ..models import identity
                from ..models.analytical import models_from_data
                from ..store.results import load_json

                try:
                    data = load_json(path)
                    models = models_from_data(data, str(path))
                except DataError as exc:
                    self._model_error = f"{exc}; fix it or fit it again with `joules fit ... --save {path}`"
                else:
                    self.model_refused = identity.refusal(path, data, self.devices.fingerprint)
                    if self.model_refused is None:
                        self._models, self.model_path = models, str(path)
                    else:
                        self.add_notes([self.model_refused])
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
    def judge(self, m: Measurement, key: str, tolerance: float | None, model_tolerance: float | None,
              test: str | None = None) -> Judged:
        """Fill in the baseline, verdict and prediction of `m`; `test` is the key of the test it
        belongs to (without a second measurement's name), for the command that records it."""
        tol = self.options.tolerance if tolerance is None else tolerance
        judged = Judged(key, test=test)
        if m.dry_run:
            m.verdict = V.Verdict(V.DRY_RUN, tolerance=tol, detail=f"dry run: no energy read (meter {m.meter!r})")
            return judged
        if not m.valid:
            m.verdict = V.Verdict(V.INVALID, tolerance=tol, detail="no valid rounds: " + "; ".join(m.problems))
            judged.failures.append(f"{key}: no valid measurement: " + ("; ".join(m.problems) or "no rounds"))
            return judged
        readable = self._compare(m, tol, judged)
        self._judge_latency(m, judged)
        if readable and self.options.update_baselines:  # never write over a file we cannot read
            # a pass keeps its entry byte for byte (quiet diffs), unless this session is to join the
            # entry's earlier ones (--joules-baseline-sessions > 1: the drift between sessions)
            keeps = self.options.baseline_sessions <= 1
            if keeps and m.baseline_rounds and m.verdict is not None and m.verdict.status == V.PASS and not judged.baseline_note:
                from ..store.baselines import KEPT

                judged.baseline_note = KEPT  # no change to record: the entry stays byte for byte
            else:
                self._stage(m, judged)
        self._predict(m, judged, model_tolerance)
        return judged

    def _judge_latency(self, m: Measurement, judged: Judged) -> None:
        """--joules-latency-tolerance: a test whose TTFT/TPOT grew (or tokens/s fell) beyond it fails."""
        from ..measure.latency import regression

        tol = self.options.latency_tolerance
        if tol is None or self.options.update_baselines:
            return
        problem = regression(m.latency, judged.baseline_latency, tol)
        if problem:
            judged.latency_regression = problem
            judged.failures.append(f"{test_name(judged.key)}: {problem}")

    def rounds_rule(self, key: str, workload: Workload, tolerance: float | None) -> Rule:
        """The stopping rule of `--joules-rounds auto` for this test: resolve the comparison with
        its baseline, or (recording, or no usable baseline) know the median to a fraction of T."""
        from ..measure import stopping
        from ..store.baselines import FingerprintMismatch

        tol = self.options.tolerance if tolerance is None else tolerance
        precise = stopping.Precise(tolerance=tol, max_seconds=self.options.max_seconds)
        if self.options.update_baselines:
            return precise
        try:
            found = self.store.lookup(self.devices.fingerprint, key, workload)
        except (FingerprintMismatch, DataError):  # judged (and reported) after measuring
            return precise
        if found.entry is None or found.note or sum(len(s) for s in found.entry.sessions) < 2:
            return precise
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
        judged.baseline_latency = found.entry.latency if found.entry and not found.note else None
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
            judged.failures.append(m.verdict.failure(test_name(key), verbose=self.options.verbosity >= 1))
        elif m.verdict.status == V.NEW and not self.options.update_baselines:
            judged.failures += self._without_baseline(judged, m.verdict.detail)
        return True

    def _without_baseline(self, judged: Judged, detail: str) -> list[str]:
        """A test without a baseline: the store's other identities are named in the summary; it
        fails with --joules-require-baselines (none for this identity), --joules-new-fails, or in
        CI unless --joules-allow-new (plugin/missing.py)."""
        from ..store.fingerprint import describe

        o, fp, name = self.options, self.devices.fingerprint, test_name(judged.key)
        note = self.missing.note(self.store, fp, describe)
        if note:
            self.add_notes([note])
        command = self.missing.record_command(judged.test or judged.key)
        if o.require_baselines and note:
            return [f"energy new (--joules-require-baselines): {name}: {self.store.root} holds no baselines for this "
                    f"device and engine; it holds {'; '.join(self.missing.others(self.store, fp))}. Record them with `{command}`"]
        if o.new_fails or (o.ci and not o.allow_new):
            why = "--joules-new-fails" if o.new_fails else "in CI a test without a baseline fails; --joules-allow-new lets it pass"
            return [f"energy new ({why}): {name}: {detail}; record its baseline with `{command}` and commit it "
                    "(a renamed test needs one under its new name)"]
        return []

    def _stage(self, m: Measurement, judged: Judged) -> None:
        """Hold the rounds until the test's outcome is known (plugin/outcome.py): a test that
        fails in any phase saves none. An unwritable store fails this test, not the session's end."""
        from ..store.baselines import workload_dict
        from .outcome import Stage

        fp = self.devices.fingerprint
        try:
            self.store.check_writable(fp)
        except DataError as exc:
            judged.failures.append(f"baseline store: {exc}")
            return
        self.held.append(Stage(dict(fp), judged.key, workload_dict(m.workload), list(m.round_values), m.spread,
                               dict(m.latency) if m.latency else None, self.drift.session_id,
                               self.options.baseline_sessions))
        judged.baseline_updated = True

    def _predict(self, m: Measurement, judged: Judged, tolerance: float | None) -> None:
        model = self.model()
        if self._model_error:
            judged.failures.append(f"fitted model: {self._model_error}")
            return
        if model is None:
            if tolerance is not None and self.model_refused:
                judged.failures.append(f"{judged.key}: model_tolerance is set but the {self.model_refused}")
            elif tolerance is not None:
                judged.failures.append(
                    f"{judged.key}: model_tolerance is set but there is no fitted model at "
                    f"{self.store.model_path_for(self.devices.fingerprint)}; fit one with `joules fit RESULTS --save PATH`"
                )
            return
        w = m.workload
        in_flight = _in_flight(w)
        other = model.batching_mismatch(in_flight or w.requests, w.max_batch_size)
        if in_flight is None:  # Poisson arrivals: no fixed number in flight, so no batching the model knows
            other = model.batching_label() or "all requests at once"
        if other is not None:  # a model fitted at another batching does not predict this workload
            judged.model_batching = other
            if tolerance is not None:
                judged.failures.append(
                    f"{judged.key}: model_tolerance is set but the model was fitted at {other}, this test runs "
                    f"{_batching(w)}; fit a model at this batching with `joules sweep` and `joules fit --save`"
                )
            return
        if w.mix is not None:  # the per-point model weighted by each request's output tokens (models/mix.py)
            from ..models.mix import predict as predict_mix

            m.prediction = predict_mix(model, w.lengths())
            judged.extrapolated = not all(model.in_range(n, o) for n, o in set(w.lengths()))
        else:
            m.prediction = float(model.predict(w.n_in, w.n_out))
            judged.extrapolated = not model.in_range(w.n_in, w.n_out)
        m.model_name = model.name
        if tolerance is not None:
            try:
                m.assert_matches_model(tolerance)
            except AssertionError as exc:
                judged.failures.append(str(exc))

    # -- after a test, and at the end ---------------------------------------------------------
    def flush_if_due(self) -> None:
        """Between tests: write the staged baselines when they have waited long enough."""
        if self._store is not None and self._store.due():
            self.flush()

    def flush(self, final: bool = False) -> dict[str, str]:
        """Write the staged baselines (one write per file). At the session's end (`final`) a
        failure is reported once, with the number of entries it left unwritten; returns those
        keys with the reason. A failure between tests is retried at the end."""
        if self._store is None or not self._store.pending:
            return {}
        import dataclasses

        error = None
        try:
            done = self._store.flush()
        except DataError as exc:
            done, error = [], str(exc)
        finally:
            self.add_notes([m.describe() for m in self._store.migrated])
        self.replaced += [dataclasses.asdict(r) for r in done]
        if not final or error is None:
            return {}
        unsaved = {key: f"not written: {error}" for key in self._store.pending_keys()}
        self.add_error(f"baseline store: {error}; {len(unsaved)} baseline(s) of this run were not saved (listed below)")
        return unsaved

    def add_error(self, error: str) -> None:
        if error not in self.baseline_errors:
            self.baseline_errors.append(error)

    def add_notes(self, notes: list[str]) -> None:
        """Session notes, each once (every xdist worker finds the same ones)."""
        self.notes += [n for n in notes if n not in self.notes]

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
    return (f"requests={w.requests}" + (f" max_batch_size={w.max_batch_size}" if w.max_batch_size is not None else "")
            + (f" {w.arrival.label()}" if w.arrival is not None else ""))


def _in_flight(w: Workload) -> int | None:
    """Requests in flight, as the model's `requests` counts them: all of them at once, a closed loop's
    users, or None for Poisson arrivals (as many as happen to overlap)."""
    if w.arrival is None:
        return w.requests
    if w.arrival.concurrency is not None:
        return min(w.arrival.concurrency, w.requests)
    return None
