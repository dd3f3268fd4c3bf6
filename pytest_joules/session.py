"""Per-session state of the plugin, kept on `config.stash`.

It holds the options, builds the engine and meter once (lazily, at the first energy test), looks
baselines and model predictions up, records every measurement as a plain dict (so pytest-xdist
workers can ship them to the controller), and at the end checks the session MAPE and writes
--joules-json. Only imported when --joules is on; heavy modules are imported inside methods.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from . import verdict as V
from .errors import ConfigError, DataError, EngineUnavailable, JoulesError, MeterUnavailable
from .options import JoulesOptions

if TYPE_CHECKING:
    from .baselines import BaselineStore
    from .engines.base import Engine
    from .measurement import Measurement
    from .meters.base import Meter

REFUSED = "refused"  # baseline file of another fingerprint
ERROR = "error"  # baseline file unreadable


@dataclass
class Unavailable:
    """Why the engine or meter could not be built: skip each test, or fail it (--joules-require-gpu)."""

    message: str
    fail: bool


class _CannotBuild(Exception):
    def __init__(self, message: str, fail: bool) -> None:
        super().__init__(message)
        self.fail = fail


@dataclass
class JoulesSession:
    options: JoulesOptions
    #: one dict per measurement: `results.measurement_to_dict` plus nodeid, key and what the
    #: baseline store did; the summary, the MAPE check and --joules-json read only these
    records: list[dict[str, Any]] = field(default_factory=list)
    #: models file beside the baselines, when one was found (shipped from xdist workers too)
    model_path: str | None = None
    #: why --joules-json could not be written (shown in the summary)
    json_error: str | None = None
    _engine: Any = None
    _meter: Any = None
    _unavailable: Unavailable | None = None
    _fingerprint: dict[str, Any] | None = None
    _store: Any = None
    _models: Any = None  # list[FittedModel] | None once loaded; False when there is no file
    _model_error: str | None = None
    #: under pytest-xdist: (worker id, number of workers); None on the controller or without xdist
    worker: tuple[str, int] | None = None
    #: why the summary or an exporter could not be written (shown in the summary)
    export_errors: list[str] = field(default_factory=list)
    #: the $GITHUB_STEP_SUMMARY file the Markdown summary was appended to
    step_summary: str | None = None
    #: why staged baselines could not be written (shown in the summary; the session fails)
    baseline_errors: list[str] = field(default_factory=list)
    #: files of another fingerprint an update replaced (`baselines.Replaced` as dicts, from workers too)
    replaced: list[dict[str, Any]] = field(default_factory=list)
    #: whether the baselines directory existed when the session began (a new one is announced)
    store_existed: bool = True
    #: xdist controller: each node id's place in the collection (the summary's row order)
    collection_order: dict[str, int] = field(default_factory=dict)
    #: the run --joules-autosave kept (`runs.SavedRun`), for the summary
    saved_run: Any = None
    #: pytest's rootdir: the git commit recorded in the results is the one of the code under test
    rootdir: Any = None
    _document: Any = None

    def __post_init__(self) -> None:
        self.store_existed = self.options.baselines.is_dir()

    # -- engine and meter ---------------------------------------------------------------------
    def engine_spec(self) -> Any:
        from .engines.base import EngineSpec

        # options.from_config made seed and sim_slowdown agree with the engine options that name them
        opts: dict[str, Any] = {**self.options.engine_options, "seed": self.options.seed}
        if self.options.sim_slowdown is not None:
            opts["slowdown"] = self.options.sim_slowdown
        return EngineSpec(name=self.options.engine, model=self.options.model, gpu=self.options.gpu, options=opts)

    def _raise_unavailable(self) -> NoReturn:
        u = self._unavailable
        assert u is not None
        if u.fail:
            pytest.fail(u.message, pytrace=False)
        pytest.skip(u.message)

    def devices(self) -> tuple[Engine, Meter]:
        """The session's engine and meter, built at the first call; skips or fails when they can't be.

        A failure to build is remembered, so every later test skips or fails the same way
        without loading a model again.
        """
        if self._unavailable is None and self._engine is None:
            try:
                self._engine, self._meter = self._build()
            except _CannotBuild as exc:
                self._unavailable = Unavailable(str(exc), exc.fail or self.options.require_gpu)
        if self._unavailable is not None:
            self._raise_unavailable()  # outside `except`: no chained traceback in the report
        return self._engine, self._meter

    def _build(self) -> tuple[Engine, Meter]:
        from . import registry, workers
        from .meters.base import MeterSpec

        name = self.options.engine
        if self.options.sim_slowdown is not None and name in workers.GPU_ENGINES:
            # never simulated: say so before loading a model (its create would only call 'slowdown' unknown)
            raise _CannotBuild(f"--joules-sim-slowdown only applies to simulated engines, not {name!r}", fail=True)
        shared = self._pin_gpu()
        try:
            engine = registry.make_engine(self.engine_spec())
        except (ModuleNotFoundError, EngineUnavailable) as exc:
            raise _CannotBuild(f"engine {name!r} is not available: {exc}", fail=False) from None
        except ConfigError as exc:
            raise _CannotBuild(f"engine {name!r}: {exc}", fail=True) from None
        try:
            if self.options.sim_slowdown is not None and not engine.simulated:
                raise _CannotBuild(f"--joules-sim-slowdown only applies to simulated engines, not {engine.kind!r}", fail=True)
            if shared and not engine.simulated:
                raise _CannotBuild(shared, fail=True)
            meter_name = self.options.meter or engine.default_meter
            try:
                meter = registry.make_meter(MeterSpec(name=meter_name, options=dict(self.options.meter_options)), engine)
            except (ModuleNotFoundError, MeterUnavailable) as exc:
                raise _CannotBuild(f"meter {meter_name!r} is not available: {exc}", fail=False) from None
            except ConfigError as exc:
                raise _CannotBuild(f"meter {meter_name!r}: {exc}", fail=True) from None
            if meter.name == "rapl" and self.worker is not None and self.worker[1] > 1:
                meter.close()
                raise _CannotBuild(
                    f"meter 'rapl' reads the whole CPU package: with {self.worker[1]} pytest-xdist workers "
                    "each would count the others' energy; run the energy tests without -n", fail=True)
            problem = self._not_a_gpu(engine, meter) if self.options.require_gpu else None
            if problem:
                meter.close()
                raise _CannotBuild(f"--joules-require-gpu: {problem}", fail=True)
        except _CannotBuild:
            engine.close()
            raise
        return engine, meter

    def _pin_gpu(self) -> str | None:
        """Under xdist, give this worker its own GPU (CUDA_VISIBLE_DEVICES) before the engine is built.

        Returns why workers would share a GPU when that can only be judged once the engine is
        built (an engine that may be simulated); raises _CannotBuild for the known GPU engines.
        """
        if self.worker is None or self.options.engine == "sim":
            return None
        import os

        from . import workers

        visible = workers.visible_gpus()
        if not visible:  # no GPU here at all: nothing to share (a CPU or simulated engine)
            return None
        worker_id, count = self.worker
        try:
            os.environ[workers.ENV] = workers.assign(worker_id, count, visible)
        except ConfigError as exc:
            if self.options.engine in workers.GPU_ENGINES:
                raise _CannotBuild(str(exc), fail=True) from None
            return str(exc)
        return None

    @staticmethod
    def _not_a_gpu(engine: Engine, meter: Meter) -> str | None:
        if engine.simulated:
            return f"engine {engine.kind!r} is SIMULATED, not a real GPU"
        if not engine.devices() and not meter.device_info().get("gpu_count"):  # a server's GPUs: meter option devices=
            return f"engine {engine.kind!r} runs on no GPU"
        if meter.name in ("none", "rapl", "sim") or meter.device_info().get("simulated"):
            return f"meter {meter.name!r} does not read a GPU's energy"
        return None

    def close(self) -> None:
        for thing in (self._meter, self._engine):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing must not hide the session's results
                    pass
        self._engine = self._meter = None

    # -- baselines and models -----------------------------------------------------------------
    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            from .fingerprint import fingerprint

            engine, meter = self.devices()
            self._fingerprint = fingerprint(engine.identity(), meter.device_info(), engine.simulated)
        return self._fingerprint

    @property
    def store(self) -> BaselineStore:
        if self._store is None:
            from .baselines import BaselineStore

            self._store = BaselineStore(self.options.baselines)
        return self._store

    def models(self) -> list[Any]:
        """The fitted models beside the baselines ([] when there is no model file)."""
        if self._models is None:
            path = self.store.model_path_for(self.fingerprint)
            if not path.exists():
                self._models = []
            else:
                from .analytical import load_models

                try:
                    self._models = load_models(path)
                    self.model_path = str(path)
                except DataError as exc:
                    self._models = []
                    self._model_error = f"{exc}; fix it or fit it again with `joules fit ... --save {path}`"
        return self._models

    def model(self) -> Any:
        """The model used for predictions (see `choose_model`)."""
        return choose_model(self.models())

    def report_model(self) -> Any:
        """The model the summary shows: this process's, or under xdist the one a worker used."""
        return choose_model(self.models_for_report())

    def test_key(self, node: Any) -> str:
        """The baseline key of a test: its node id, with the file part made relative to
        `options.key_base` when that is set (so a store is keyed alike from any rootdir)."""
        base = self.options.key_base
        nodeid = node.nodeid
        if base is None or "::" not in nodeid:
            return nodeid
        import os

        try:
            rel = os.path.relpath(node.path, base)
        except ValueError:  # another drive (Windows)
            return nodeid
        if rel.startswith(".."):  # a test outside the store's directory: keep pytest's id
            return nodeid
        return rel.replace(os.sep, "/") + "::" + nodeid.split("::", 1)[1]

    # -- judging one measurement --------------------------------------------------------------
    def judge(self, m: Measurement, key: str, tolerance: float | None, model_tolerance: float | None) -> tuple[list[str], dict[str, Any]]:
        """Fill in the baseline, verdict and prediction of `m`; returns (failures, record extras)."""
        tol = self.options.tolerance if tolerance is None else tolerance
        failures: list[str] = []
        extra: dict[str, Any] = {"key": key, "baseline_note": "", "baseline_updated": False, "extrapolated": False}
        if m.dry_run:
            m.verdict = V.Verdict(V.DRY_RUN, tolerance=tol, detail=f"dry run: no energy read (meter {m.meter!r})")
            return failures, extra
        if not m.valid:
            m.verdict = V.Verdict(V.INVALID, tolerance=tol, detail="no valid rounds: " + "; ".join(m.problems))
            failures.append(f"{key}: no valid measurement: " + ("; ".join(m.problems) or "no rounds"))
            return failures, extra
        readable = self._compare(m, key, tol, failures, extra)
        self._judge_latency(m, key, failures, extra)
        if readable and self.options.update_baselines:  # never write over a file we cannot read
            self._record(m, key, failures, extra)
        self._predict(m, extra, model_tolerance, failures)
        return failures, extra

    def _compare(self, m: Measurement, key: str, tol: float, failures: list[str], extra: dict[str, Any]) -> bool:
        """Judge `m` against its baseline; False when the baseline file cannot be read."""
        from .baselines import FingerprintMismatch

        try:
            found = self.store.lookup(self.fingerprint, key, m.workload)
        except FingerprintMismatch as exc:
            m.verdict = V.Verdict(REFUSED, current=m.j_per_out_token, tolerance=tol, detail=str(exc))
            if self.options.update_baselines:
                extra["baseline_note"] = "replaced baselines of another fingerprint"
            else:
                failures.append(str(exc))
            return True
        except DataError as exc:
            m.verdict = V.Verdict(ERROR, current=m.j_per_out_token, tolerance=tol, detail=str(exc))
            failures.append(f"baseline store: {exc}")
            return False
        m.baseline_rounds = list(found.entry.rounds) if found.entry else None
        extra["baseline_latency"] = found.entry.latency if found.entry and not found.note else None
        m.verdict = V.judge(m.round_values, m.baseline_rounds, tol, confidence=m.confidence,
                            noisy_fails=self.options.noisy_fails)
        if found.note:  # recorded for another workload: not comparable
            m.verdict = V.Verdict(V.NEW, current=m.verdict.current, tolerance=tol, detail=found.note)
            extra["baseline_note"] = found.note
        if m.verdict.failed and not self.options.update_baselines:
            failures.append(m.verdict.failure(test_name(key)))
        elif m.verdict.status == V.NEW and self.options.new_fails and not self.options.update_baselines:
            failures.append(f"energy new (--joules-new-fails): {test_name(key)}: {m.verdict.detail}; record its baseline "
                            "with --joules-update-baselines (a renamed test needs one under its new name)")
        return True

    def _judge_latency(self, m: Measurement, key: str, failures: list[str], extra: dict[str, Any]) -> None:
        """--joules-latency-tolerance: a test whose TTFT/TPOT grew (or tokens/s fell) beyond it fails."""
        from .latency import regression

        tol = self.options.latency_tolerance
        if tol is None or self.options.update_baselines:
            return
        problem = regression(m.latency, extra.get("baseline_latency"), tol)
        if problem:
            extra["latency_regression"] = problem
            failures.append(f"{test_name(key)}: {problem}")

    def rounds_rule(self, key: str, workload: Any, tolerance: float | None) -> Any:
        """The stopping rule of `--joules-rounds auto` for this test: resolve the comparison with
        its baseline, or (recording, or no usable baseline) know the median to a fraction of T."""
        from . import rounds
        from .baselines import FingerprintMismatch

        tol = self.options.tolerance if tolerance is None else tolerance
        budget = dict(tolerance=tol, max_seconds=self.options.max_seconds)
        if self.options.update_baselines:
            return rounds.Precise(**budget)
        try:
            found = self.store.lookup(self.fingerprint, key, workload)
        except (FingerprintMismatch, DataError):  # judged (and reported) after measuring
            return rounds.Precise(**budget)
        if found.entry is None or found.note or len(found.entry.rounds) < 2:
            return rounds.Precise(**budget)
        return rounds.Compare(baseline=list(found.entry.rounds), **budget)

    def _record(self, m: Measurement, key: str, failures: list[str], extra: dict[str, Any]) -> None:
        """Stage the rounds; they are written at the session's end (or when `due`, between tests),
        and dropped if the test fails (`test_done`)."""
        try:
            self.store.stage(self.fingerprint, key, m.workload, m.round_values, m.spread, latency=m.latency)
            extra["baseline_updated"] = True
        except DataError as exc:
            failures.append(f"baseline store: {exc}")

    def test_done(self, nodeid: str, passed: bool) -> None:
        """After a test's call phase: a failed test's staged baselines are dropped, since its own
        assertions rejected what it measured; then staged ones are written if due. Flushing only
        here, between tests, means no entry is written before its test's outcome is known."""
        if not passed:
            for r in reversed(self.records):  # this test's records are the last ones
                if r.get("nodeid") != nodeid:
                    break
                if r.get("baseline_updated") and self.store.unstage(self.fingerprint, r["key"]):
                    r["baseline_updated"] = False
                    r["baseline_not_saved"] = "the test failed"
        if self._store is not None and self._store.due():
            self.flush_baselines()

    def flush_baselines(self) -> None:
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

    def _predict(self, m: Measurement, extra: dict[str, Any], tolerance: float | None, failures: list[str]) -> None:
        model = self.model()
        if self._model_error:
            failures.append(f"fitted model: {self._model_error}")
            return
        if model is None:
            if tolerance is not None:
                failures.append(
                    f"{extra['key']}: model_tolerance is set but there is no fitted model at "
                    f"{self.store.model_path_for(self.fingerprint)}; fit one with `joules fit RESULTS --save PATH`"
                )
            return
        w = m.workload
        other = model.batching_mismatch(w.requests, w.max_batch_size)
        if other is not None:  # a model fitted at another batching does not predict this workload
            extra["model_batching"] = other
            if tolerance is not None:
                failures.append(
                    f"{extra['key']}: model_tolerance is set but the model was fitted at {other}, this test runs "
                    f"{_batching(w)}; fit a model at this batching with `joules sweep` and `joules fit --save`"
                )
            return
        m.prediction = float(model.predict(w.n_in, w.n_out))
        m.model_name = model.name
        extra["extrapolated"] = not model.in_range(w.n_in, w.n_out)
        if tolerance is not None:
            try:
                m.assert_matches_model(tolerance)
            except AssertionError as exc:
                failures.append(str(exc))

    # -- the session's results ----------------------------------------------------------------
    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def record_order(self, record: dict[str, Any]) -> tuple[int, list[Any]]:
        """Sort key of a record: its test's place in the collection, else its node id with the
        numbers in it compared as numbers (n_out=256 before n_out=1024, not after as text)."""
        nodeid = str(record.get("nodeid", ""))
        return self.collection_order.get(nodeid, len(self.collection_order)), natural_key(nodeid)

    def mape(self) -> tuple[float | None, int]:
        """MAPE of the model's predictions over the session (in-range points only), and their count."""
        errors = [r["model_error"] for r in self.records if r.get("model_error") is not None and not r.get("extrapolated")]
        return (statistics.fmean(errors) if errors else None), len(errors)

    def model_check(self) -> str | None:
        """The failing line of the --joules-model-tolerance session check, or None when it passes."""
        tol = self.options.model_tolerance
        if tol is None or not self.records:
            return None
        mape, count = self.mape()
        if mape is None:
            return (
                f"--joules-model-tolerance {tol:.2%}: no measurement had a model prediction inside the "
                "fitted range; fit a model with `joules fit` and keep it beside the baselines"
            )
        if mape > tol:
            return f"--joules-model-tolerance: the session MAPE {mape:.2%} over {count} measurements exceeds {tol:.2%}"
        return None

    def write_json(self) -> None:
        if self.options.json is None:
            return
        from .results import atomic_write_json

        doc = self.document()
        try:
            atomic_write_json(self.options.json, doc)
        except OSError as exc:
            raise JoulesError(f"--joules-json {self.options.json}: cannot write: {exc}") from None

    def autosave(self) -> None:
        """--joules-autosave: keep this run as the next numbered file in `.joules/`."""
        if not self.options.autosave or not self.records:
            return
        from .runs import save_run

        try:
            self.saved_run = save_run(self.options.autosave_dir, self.document())
        except DataError as exc:
            self.export_errors.append(str(exc))

    def document(self) -> dict[str, Any]:
        """The session's results document (--joules-json, --joules-autosave: built once, so both
        files say the same), at the session's end."""
        if self._document is not None:
            return self._document
        from .results import results_document

        doc = results_document([], models=[m.to_dict() for m in self.models_for_report()], where=self.rootdir)
        if self.records:
            first = self.records[0]
            doc.update(simulated=any(r.get("simulated") for r in self.records), engine=first.get("engine", {}),
                       device=first.get("device", {}), meter=first.get("meter"))
        doc["results"] = self.records
        mape, count = self.mape()
        doc["session"] = {"mape": mape, "mape_points": count, "model_path": self.model_path,
                          "model_check": self.model_check(), "baselines": str(self.options.baselines)}
        footprint = self.options.footprint
        if footprint:  # the stated inputs beside the figures they give
            doc["footprint"] = footprint.to_dict()
            doc["results"] = [{**r, **footprint.result_fields(r.get("j_per_out_token"))} for r in self.records]
        self._document = doc
        return doc

    def write_exports(self, environ: Any = None) -> list[str]:
        """--joules-export-gab/-bmf and the $GITHUB_STEP_SUMMARY Markdown; returns what was written.

        A failure is kept in `export_errors` (the summary shows it, the session fails) and the
        other exports still run.
        """
        from . import exporters
        from .results import atomic_write_json

        written: list[str] = []
        rows = exporters.rows_from_records(self.records, self.options.footprint)
        for flag, path, build in (("--joules-export-gab", self.options.export_gab, exporters.gab_json),
                                  ("--joules-export-bmf", self.options.export_bmf, exporters.bmf_json)):
            if path is None:
                continue
            try:
                atomic_write_json(path, build(rows))
                written.append(str(path))
            except OSError as exc:
                self.export_errors.append(f"{flag} {path}: cannot write: {exc.strerror or exc}")
        if not self.options.no_step_summary and self.records:
            try:
                target = exporters.append_step_summary(rows, environ=environ)
                if target is not None:
                    self.step_summary = str(target)
                    written.append(str(target))
            except DataError as exc:
                self.export_errors.append(str(exc))
        return written

    def models_for_report(self) -> list[Any]:
        """Models for the summary: loaded here, or (under xdist) from the path a worker found."""
        if self._models:
            return list(self._models)
        if self.model_path:
            from .analytical import load_models

            try:
                return load_models(self.model_path)
            except DataError:
                return []
        return []


def natural_key(text: str) -> list[Any]:
    """"a[n=256]" before "a[n=1024]": digit runs compare as numbers (they alternate with text, so
    the list's items line up by type)."""
    import re

    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def test_name(key: str) -> str:
    """A baseline key without its file part ("test_chat_turn", "TestX::test_y::#2"): pytest's
    one-line summaries put the node id beside a failure's message already."""
    return key.split("::", 1)[1] if "::" in key else key


def _batching(w: Any) -> str:
    return f"requests={w.requests}" + (f" max_batch_size={w.max_batch_size}" if w.max_batch_size is not None else "")


def other_batching(records: list[dict[str, Any]]) -> tuple[str | None, int]:
    """The model's batching and how many measurements were not compared because theirs differs."""
    skipped = [r["model_batching"] for r in records if r.get("model_batching")]
    return (skipped[0] if skipped else None), len(skipped)


def choose_model(models: list[Any]) -> Any:
    """The lowest leave-one-out MAPE, the paper's models before the linear one; None for none."""
    from .analytical import best_model

    return best_model(models)


STASH: pytest.StashKey[JoulesSession] = pytest.StashKey()


def get(config: pytest.Config) -> JoulesSession | None:
    return config.stash.get(STASH, None)
