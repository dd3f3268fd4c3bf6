"""The saved runs read back: one line per run (`joules list`) and one test's trend (`joules history`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from .results import ResultsFile, read_results
from .runs import SavedRun


@dataclass
class RunSummary:
    """What `joules list` shows of one saved run."""

    run: SavedRun
    created: str | None
    commit: str | None
    dirty: bool | None
    host: str | None
    device: str
    simulated: bool
    tests: int
    statuses: dict[str, int]


@dataclass
class Point:
    """One test's reading in one run."""

    run: str
    created: str | None
    commit: str | None
    dirty: bool | None
    j_per_out_token: float | None
    verdict: str | None


@dataclass
class Series:
    """One test at one workload across the saved runs, oldest first."""

    name: str
    n_in: int
    n_out: int
    requests: int
    max_batch_size: int | None
    simulated: bool
    points: list[Point] = field(default_factory=list)


def read_runs(saved: list[SavedRun]) -> tuple[list[tuple[SavedRun, ResultsFile]], list[str]]:
    """Each saved run read back; a file that cannot be read is left out with a note (one bad file
    must not hide the rest of the history)."""
    files, notes = [], []
    for run in saved:
        try:
            files.append((run, read_results(run.path)))
        except DataError as exc:
            notes.append(f"run {run.id} left out: {exc}")
    return files, notes


def _git(results: ResultsFile) -> dict[str, Any]:
    git = results.machine.get("git")
    return git if isinstance(git, dict) else {}


def summarize(run: SavedRun, results: ResultsFile) -> RunSummary:
    statuses: dict[str, int] = {}
    for row in results.rows:
        verdict = row.raw.get("verdict")
        status = verdict.get("status") if isinstance(verdict, dict) else None
        if status:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    git = _git(results)
    device = str(results.device.get("gpu") or results.device.get("name") or "?")
    return RunSummary(run, results.created, git.get("commit"), git.get("dirty"), results.machine.get("host"),
                      device, results.simulated, len(results.rows), statuses)


def trend(files: list[tuple[SavedRun, ResultsFile]], test: str) -> list[Series]:
    """The series of every test named `test` (exactly, else every name containing it)."""
    names = {row.name for _, results in files for row in results.rows}
    wanted = {test} if test in names else {n for n in names if test in n}
    if not wanted:
        shown = ", ".join(sorted(names)[:5]) + (f", … ({len(names) - 5} more)" if len(names) > 5 else "")
        raise DataError(f"no saved run has a test named or containing {test!r}"
                        + (f"; tests seen: {shown}" if names else ""))
    series: dict[tuple[Any, ...], Series] = {}
    for run, results in files:
        git = _git(results)
        for row in results.rows:
            if row.name not in wanted:
                continue
            w = row.workload
            key = (row.name, w.n_in, w.n_out, w.requests, w.max_batch_size)
            s = series.setdefault(key, Series(row.name, w.n_in, w.n_out, w.requests, w.max_batch_size, False))
            s.simulated = s.simulated or results.simulated
            verdict = row.raw.get("verdict")
            s.points.append(Point(run.id, results.created, git.get("commit"), git.get("dirty"), row.j_per_out_token,
                                  verdict.get("status") if isinstance(verdict, dict) else None))
    return [series[k] for k in sorted(series, key=lambda k: (k[0], k[1], k[2], k[3], k[4] or 0))]


@dataclass
class DriftPoint:
    """One saved run's session shift (the drift model's session check, judge/drift_session.py)."""

    run: str
    created: str | None
    commit: str | None
    dirty: bool | None
    #: the main frame's common shift (relative) and what the check made of it; None in older runs
    shift: float | None
    status: str | None
    tests: int
    band: float | None
    frame: str | None
    #: the shift's own variance (log) from its tests' rounds
    noise: float | None
    #: the between-session spread the run was judged with, and where it came from
    spread: float | None
    source: str | None


@dataclass
class DriftSeries:
    """The saved runs of one device and engine (one baseline fingerprint), oldest first."""

    device: str
    simulated: bool
    points: list[DriftPoint] = field(default_factory=list)


def drift(files: list[tuple[SavedRun, ResultsFile]]) -> list[DriftSeries]:
    """Each device's session shifts across the saved runs (`joules history --drift`)."""
    from .fingerprint import describe, fingerprint

    series: dict[str, DriftSeries] = {}
    for run, results in files:
        fp = fingerprint(results.engine, results.device, results.simulated)
        name = describe(fp)
        s = series.setdefault(name, DriftSeries(name, results.simulated))
        found = results.session.get("drift")
        d: dict[str, Any] = found if isinstance(found, dict) else {}
        frames = [f for f in d.get("frames") or [] if isinstance(f, dict)]
        main: dict[str, Any] = max(frames, key=lambda f: f.get("tests") or 0, default={})
        spread: dict[str, Any] = d["spread"] if isinstance(d.get("spread"), dict) else {}
        git = _git(results)
        s.points.append(DriftPoint(run.id, results.created, git.get("commit"), git.get("dirty"), _number(main.get("shift")),
                                   main.get("status"), int(main.get("tests") or 0), _number(main.get("band")),
                                   main.get("frame"), _number(main.get("noise")), _number(spread.get("sd")),
                                   spread.get("source")))
    return list(series.values())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
