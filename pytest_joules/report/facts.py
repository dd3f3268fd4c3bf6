"""What the end-of-run summary shows, as a plain value: gathered by the session
(`plugin.recording.Recording.summary`), rendered by `report.summary` without reading a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    from .footprint import Footprint
    from ..models.analytical import FittedModel
    from ..store.record import ResultRecord
    from ..store.runs import SavedRun


class ShownOptions(Protocol):
    """The session's options the summary shows or builds its hints from (`plugin.options.JoulesOptions`)."""

    @property
    def engine(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    @property
    def gpu(self) -> str | None: ...

    @property
    def engine_options(self) -> Mapping[str, Any]: ...

    @property
    def sim_slowdown(self) -> float | None: ...

    @property
    def meter(self) -> str | None: ...

    @property
    def meter_options(self) -> Mapping[str, Any]: ...

    @property
    def warmup(self) -> int: ...

    @property
    def model_tolerance(self) -> float | None: ...

    @property
    def json(self) -> Path | None: ...

    @property
    def export_gab(self) -> Path | None: ...

    @property
    def export_bmf(self) -> Path | None: ...

    @property
    def baselines(self) -> Path: ...

    @property
    def footprint(self) -> Footprint: ...


@dataclass
class Summary:
    """Everything the summary shows, gathered by the session (`Recording.summary`): rendering it
    reads no file."""

    records: list[ResultRecord]
    options: ShownOptions
    model: FittedModel | None = None
    model_path: str | None = None
    #: bootstrap replicates of `model` (its sweet spots' intervals); {} when its file has none
    intervals: dict[str, Any] = field(default_factory=dict)
    mape: float | None = None
    mape_points: int = 0
    model_check: str | None = None
    #: where a fitted model for this device is kept (the `joules calibrate` hint names it)
    model_file: Path | None = None
    json_error: str | None = None
    export_errors: list[str] = field(default_factory=list)
    step_summary: str | None = None
    saved_run: SavedRun | None = None
    baseline_errors: list[str] = field(default_factory=list)
    replaced: list[dict[str, Any]] = field(default_factory=list)
    store_existed: bool = True
    #: session-wide facts about the store and the model (a refused model, migrated files, the
    #: devices a store holds baselines for when this one has none), shown in yellow
    notes: list[str] = field(default_factory=list)
    #: the drift model's session check (judge/drift_session.SessionResult), and what it failed
    drift: Any = None
    drift_failures: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return any(r.simulated for r in self.records)
