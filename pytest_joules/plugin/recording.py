"""The session's results: one `ResultRecord` per measurement, and what is written from them at
the end (--joules-json, --joules-autosave, the exporters, the summary's value)."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import DataError, JoulesError
from .judging import Judging
from .options import JoulesOptions

if TYPE_CHECKING:
    from ..report.facts import Summary
    from ..store.record import ResultRecord
    from ..store.runs import SavedRun


@dataclass
class Recording:
    options: JoulesOptions
    judging: Judging
    records: list[ResultRecord] = field(default_factory=list)
    #: xdist controller: each node id's place in the collection (the summary's row order)
    collection_order: dict[str, int] = field(default_factory=dict)
    #: pytest's rootdir: the git commit recorded in the results is the one of the code under test
    rootdir: Path | None = None
    #: why --joules-json could not be written (shown in the summary)
    json_error: str | None = None
    #: why the summary or an exporter could not be written (shown in the summary)
    export_errors: list[str] = field(default_factory=list)
    #: the $GITHUB_STEP_SUMMARY file the Markdown summary was appended to
    step_summary: str | None = None
    #: the run --joules-autosave kept, for the summary
    saved_run: SavedRun | None = None
    #: failures the session's end of the drift model found (drifting.SessionDrift.finish)
    drift_failures: list[str] = field(default_factory=list)
    _document: dict[str, Any] | None = None

    def add(self, record: ResultRecord) -> None:
        self.records.append(record)

    def record_order(self, record: ResultRecord) -> tuple[int, list[Any]]:
        """Sort key of a record: its test's place in the collection, else its node id with the
        numbers in it compared as numbers (n_out=256 before n_out=1024, not after as text)."""
        nodeid = record.nodeid or ""
        return self.collection_order.get(nodeid, len(self.collection_order)), natural_key(nodeid)

    def mape(self) -> tuple[float | None, int]:
        """MAPE of the model's predictions over the session (in-range points only), and their count."""
        errors = [r.model_error for r in self.records if r.model_error is not None and not r.extrapolated]
        return (statistics.fmean(errors) if errors else None), len(errors)

    def model_check(self) -> str | None:
        """The failing line of the --joules-model-tolerance session check, or None when it passes."""
        tol = self.options.model_tolerance
        if tol is None or not self.records:
            return None
        mape, count = self.mape()
        if mape is None and self.judging.model_refused:
            return f"--joules-model-tolerance {tol:.2%}: the {self.judging.model_refused}"
        if mape is None:
            return (
                f"--joules-model-tolerance {tol:.2%}: no measurement had a model prediction inside the "
                "fitted range; fit a model with `joules fit` and keep it beside the baselines"
            )
        if mape > tol:
            return f"--joules-model-tolerance: the session MAPE {mape:.2%} over {count} measurements exceeds {tol:.2%}"
        return None

    def finish_drift(self) -> list[str]:
        """Judge every record again at the session's end (the controller's, under xdist)."""
        self.drift_failures = self.judging.drift.finish(self.records)
        return self.drift_failures

    def document(self) -> dict[str, Any]:
        """The session's results document (--joules-json, --joules-autosave: built once, so both
        files say the same), at the session's end."""
        if self._document is not None:
            return self._document
        from ..store.results import results_document

        models = [m.to_dict() for m in self.judging.models_for_report()]
        doc = results_document([], models=models, where=self.rootdir)
        results = [r.to_dict() for r in self.records]
        if self.records:
            first = self.records[0]
            doc.update(simulated=any(r.simulated for r in self.records), engine=first.engine,
                       device=first.device, meter=first.meter)
        mape, count = self.mape()
        doc["session"] = {"mape": mape, "mape_points": count, "model_path": self.judging.model_path,
                          "model_check": self.model_check(), "baselines": str(self.options.baselines)}
        if self.judging.drift.result is not None:  # the session's common shift and the spread used
            doc["session"]["drift"] = self.judging.drift.result.to_dict()
        footprint = self.options.footprint
        if footprint:  # the stated inputs beside the figures they give
            doc["footprint"] = footprint.to_dict()
            results = [{**r, **footprint.result_fields(r.get("j_per_out_token"))} for r in results]
        doc["results"] = results
        self._document = doc
        return doc

    def write_json(self) -> None:
        if self.options.json is None:
            return
        from ..store.results import atomic_write_json

        try:
            atomic_write_json(self.options.json, self.document())
        except OSError as exc:
            self.json_error = str(JoulesError(f"--joules-json {self.options.json}: cannot write: {exc}"))

    def autosave(self) -> None:
        """--joules-autosave: keep this run as the next numbered file in `.joules/`."""
        if not self.options.autosave or not self.records:
            return
        from ..store.runs import save_run

        try:
            self.saved_run = save_run(self.options.autosave_dir, self.document())
        except DataError as exc:
            self.export_errors.append(str(exc))

    def write_exports(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """--joules-export-gab/-bmf and the $GITHUB_STEP_SUMMARY Markdown; returns what was written.

        A failure is kept in `export_errors` (the summary shows it, the session fails) and the
        other exports still run.
        """
        from ..report import exporters
        from ..store.results import atomic_write_json

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

    def summary(self) -> Summary:
        """Everything the end-of-run summary shows, as a plain value (the report reads no files)."""
        from ..models.analytical import best_model
        from ..report.facts import Summary

        model = best_model(self.judging.models_for_report())
        mape, count = self.mape()
        return Summary(
            records=list(self.records),
            options=self.options, model=model, model_path=self.judging.model_path,
            intervals=self._intervals(model), mape=mape, mape_points=count, model_check=self.model_check(),
            model_file=self._model_file(), json_error=self.json_error, export_errors=list(self.export_errors),
            step_summary=self.step_summary, saved_run=self.saved_run,
            baseline_errors=list(self.judging.baseline_errors), replaced=list(self.judging.replaced),
            store_existed=self.judging.store_existed, notes=list(self.judging.notes),
            drift=self.judging.drift.result, drift_failures=list(self.drift_failures),
        )

    def _intervals(self, model: Any) -> dict[str, Any]:
        """The model's bootstrap replicates saved in its file (`joules calibrate`, `joules fit --save`),
        for the sweet spots' intervals; {} when the file has none or they cannot be read."""
        path = self.judging.model_path
        if model is None or not path:
            return {}
        from ..models.uncertainty import load

        try:
            found = load(path)
        except DataError:
            return {}
        return {model.name: found[model.name]} if model.name in found else {}

    def _model_file(self) -> Path | None:
        """Where a fitted model for this session's device would be kept (for the `joules calibrate` hint)."""
        if not self.records:
            return None
        from ..store.fingerprint import fingerprint

        first = self.records[0]
        return self.judging.store.model_path_for(fingerprint(first.engine, first.device, first.simulated))


def natural_key(text: str) -> list[Any]:
    """"a[n=256]" before "a[n=1024]": digit runs compare as numbers (they alternate with text, so
    the list's items line up by type)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]
