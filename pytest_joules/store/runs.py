"""Saved runs: `pytest --joules --joules-autosave` keeps each session's results JSON in `.joules/`.

Like pytest-benchmark's `.benchmarks/`: one file per run, numbered in order,
`0003_20250101T120000Z_ab12cd3.json` (number, UTC time, short commit, `-dirty` when tracked
files had changes), each a full results document with its machine and commit info. The
folder lies beside the baselines directory (options.JoulesOptions.autosave_dir); the CLI
finds it as the nearest `.joules/` from the working directory up to the repository root, or
takes `--storage DIR`.

A run is named by its number (`3`, `0003`), `last`, or `last~N` (N runs before the last).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..paths import RUNS_DIR, nearest_dir
from .results import ResultsFile, read_results

_NAME = re.compile(r"^(\d{4,})_[^/]*\.json$")
_SPEC = re.compile(r"^(?:(\d+)|last(?:~(\d+))?)$")


@dataclass(frozen=True)
class SavedRun:
    number: int
    path: Path

    @property
    def id(self) -> str:
        return f"{self.number:04d}"


def find_storage(start: Path | None = None) -> Path | None:
    """The nearest existing `.joules/` from `start` (the working directory) up to the repository root."""
    return nearest_dir((start or Path.cwd()).resolve(), RUNS_DIR)


def list_runs(storage: Path) -> list[SavedRun]:
    """The saved runs in number order ([] for an empty or missing folder)."""
    try:
        names = os.listdir(storage)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataError(f"{storage}: cannot list the saved runs: {exc.strerror or exc}") from None
    runs = [SavedRun(int(m.group(1)), storage / name) for name in names if (m := _NAME.match(name))]
    return sorted(runs, key=lambda r: (r.number, r.path.name))


def file_name(number: int, document: dict[str, Any]) -> str:
    created = str(document.get("created") or "")
    stamp = re.sub(r"[^0-9TZ]", "", created.replace("+00:00", "Z")) or "notime"
    git = (document.get("machine") or {}).get("git") or {}
    commit = str(git.get("commit") or "nogit")[:7] + ("-dirty" if git.get("dirty") else "")
    return f"{number:04d}_{stamp}_{commit}.json"


def save_run(storage: Path, document: dict[str, Any]) -> SavedRun:
    """Write `document` as the next numbered run; the number is taken under a lock so two sessions
    saving at once get two numbers."""
    from .directories import locked as _locked
    from .results import atomic_write_json

    try:
        storage.mkdir(parents=True, exist_ok=True)
        with _locked(storage):
            _ensure_ignored(storage)
            runs = list_runs(storage)
            number = (runs[-1].number + 1) if runs else 1
            path = storage / file_name(number, document)
            atomic_write_json(path, document)
    except OSError as exc:
        raise DataError(f"--joules-autosave {storage}: cannot save the run: {exc.strerror or exc}") from None
    return SavedRun(number, path)


#: written into the runs folder when it has none: saved runs are local history, not source
GITIGNORE = "# pytest-joules: saved runs (--joules-autosave) are this machine's history, not source\n*\n"


def _ensure_ignored(storage: Path) -> None:
    """Give the folder a `.gitignore` that ignores everything in it (never over one that exists)."""
    ignore = storage / ".gitignore"
    if not os.path.lexists(ignore):
        tmp = storage / ".gitignore.joules-tmp"  # under the lock: no other writer of this name
        tmp.write_text(GITIGNORE, encoding="utf-8")
        os.replace(tmp, ignore)


def is_run_spec(text: str) -> bool:
    return bool(_SPEC.match(text.strip()))


def resolve(spec: str, storage: Path | None) -> Path:
    """The file of run `spec` (`3`, `0003`, `last`, `last~1`); DataError naming the fix when absent."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise DataError(f"{spec!r} is not a run id: give a number such as 0003, last or last~1")
    if storage is None:
        raise DataError(f"run {spec}: no {RUNS_DIR}/ folder from here up to the repository root; save runs with "
                        f"`pytest --joules --joules-autosave`, or point --storage at the folder")
    runs = list_runs(storage)
    if not runs:
        raise DataError(f"run {spec}: {storage} holds no saved runs; save one with `pytest --joules --joules-autosave`")
    if match.group(1) is not None:
        number = int(match.group(1))
        found = [r for r in runs if r.number == number]
        if not found:
            raise DataError(f"run {spec}: not in {storage} (runs {runs[0].id} to {runs[-1].id}; `joules list` shows them)")
        return found[-1].path
    back = int(match.group(2) or 0)
    if back >= len(runs):
        raise DataError(f"run {spec}: {storage} holds only {len(runs)} run(s); `joules list` shows them")
    return runs[-1 - back].path


def results_path(arg: str, storage: Path | None) -> Path:
    """A command-line argument that names a results file or a saved run: an existing file wins."""
    if os.path.exists(arg) or not is_run_spec(arg):
        return Path(arg)
    return resolve(arg, storage)


def add_storage_argument(parser: Any) -> None:
    parser.add_argument("--storage", metavar="DIR", default=None,
                        help=f"folder of saved runs (default: the nearest {RUNS_DIR}/ up to the repository root)")


def require_storage(args: Any) -> Path:
    """The runs folder for `joules list` / `history`: --storage, or the nearest one; DataError saying
    how to make one when there is none."""
    storage = storage_from(args)
    if storage is None:
        raise DataError(f"no {RUNS_DIR}/ folder from here up to the repository root; save runs with "
                        "`pytest --joules --joules-autosave`, or point --storage at the folder")
    return storage


def storage_from(args: Any) -> Path | None:
    if getattr(args, "storage", None):
        path = Path(args.storage)
        if not path.is_dir():
            raise DataError(f"--storage {path}: not a directory; give the {RUNS_DIR}/ folder that "
                            "`pytest --joules --joules-autosave` writes")
        return path
    return find_storage()


# -- the saved runs read back: one line per run (`joules list`), one test's trend (`joules history`)


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
