"""The baseline store against careless and hostile files: bad entries, deep nesting, stray temp
files of killed writes, symlinks, files that are no store, a fingerprint change on update, and
what recording a session costs (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_joules.store.baselines import SCHEMA, BaselineStore
from pytest_joules.errors import DataError
from pytest_joules.engines.workload import Workload

from .plugin_fake import BASELINE, project
from .test_plugin_baselines import TESTS

ROOT = Path(__file__).resolve().parent.parent
FP = {"device": {"gpu": "G", "simulated": True}, "engine": {"kind": "k", "model": "m"}}
CHAT = "test_energy.py::test_chat"


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def _entry(**workload):
    return {"workload": {"n_in": 128, "n_out": 64, **workload}, "rounds": [0.1, 0.1, 0.1],
            "j_per_out_token": 0.1, "spread": 0.0, "recorded": "2025-01-01T00:00:00+00:00"}


def _plant(proj, entries, fingerprint=None):
    """A baseline file with the fake engine's fingerprint (recorded once, then edited)."""
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    path = proj.path / BASELINE
    data = json.loads(path.read_text())
    data["entries"] = entries
    path.write_text(json.dumps(data, indent=2))
    return path


def _no_traceback(result):
    out = result.stdout.str() + result.stderr.str()
    for word in ("Traceback", "RecursionError", "TypeError", "INTERNALERROR", "ConfigError:"):
        assert word not in out, out[-3000:]


# -- 3. entries validated like everything else ------------------------------------------------------
@pytest.mark.parametrize("workload, message", [
    ({"n_in": "128"}, "'workload': n_in must be a positive integer, got '128'"),
    ({"batch": 4}, "'workload' has unknown key(s) batch"),
    ({"requests": 1.5}, "'workload': requests must be a positive integer, got 1.5"),
])
def test_a_bad_workload_in_an_entry_is_one_line_naming_it_and_the_file_is_kept(proj, workload, message):
    path = _plant(proj, {CHAT: _entry(**workload)})
    before = path.read_bytes()
    for args in (["--joules"], ["--joules", "--joules-update-baselines"]):
        result = proj.runpytest(*args)
        result.assert_outcomes(failed=3)
        result.stdout.fnmatch_lines([f"*baseline store: {path}: entry '{CHAT}': {message}*restore it from version control*"])
        _no_traceback(result)
        assert path.read_bytes() == before


# -- 10. hand-edited figures and flags -------------------------------------------------------------
def test_an_edited_median_that_is_not_the_rounds_median_is_refused_saying_the_rounds_count(proj):
    entry = _entry()
    entry["j_per_out_token"] = 0.05  # edited; the gate would have compared the rounds (0.1) without a word
    path = _plant(proj, {CHAT: entry})
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([f"*{path}: entry '{CHAT}': 'j_per_out_token' 0.05 is not the median of its "
                                 "'rounds' (0.1); the rounds are what runs are compared with*"])


@pytest.mark.parametrize("field, value", [("spread", "0.01"), ("recorded", 20250101)])
def test_wrongly_typed_entry_fields_are_refused(proj, field, value):
    entry = _entry()
    entry[field] = value
    path = _plant(proj, {CHAT: entry})
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([f"*{path}: entry '{CHAT}': '{field}' must be *"])


# -- 2. deeply nested JSON ---------------------------------------------------------------------------
@pytest.mark.parametrize("content", [
    "[" * 100000 + "]" * 100000,  # beyond the JSON parser's recursion
    # parses, but deeper than any file of ours: a reader's repr or validation could overflow
    json.dumps({"schema": SCHEMA, "fingerprint": {"x": json.loads("[" * 500 + "]" * 500)}, "entries": {}}),
], ids=["100000-deep", "500-deep"])
def test_deeply_nested_baseline_files_are_one_line_errors(proj, content):
    path = proj.path / BASELINE
    path.parent.mkdir(parents=True)
    path.write_text(content)
    for args in (["--joules"], ["--joules", "--joules-update-baselines"]):
        result = proj.runpytest(*args)
        result.assert_outcomes(failed=3)
        result.stdout.fnmatch_lines([f"*baseline store: {path}: *"])
        _no_traceback(result)
        assert path.read_text() == content


def test_a_deeply_nested_model_file_is_one_line(proj):
    path = proj.path / BASELINE.replace(".json", ".model.json")
    path.parent.mkdir(parents=True)
    path.write_text("[" * 100000 + "]" * 100000)
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([f"*fitted model: {path}: JSON nested more than 100 levels deep*"])
    _no_traceback(result)


# -- 7. a store that is no store ---------------------------------------------------------------------
def test_a_baseline_file_holding_null_is_an_error_and_is_not_overwritten(proj):
    path = proj.path / BASELINE
    path.parent.mkdir(parents=True)
    path.write_text("null\n")
    for args in (["--joules"], ["--joules", "--joules-update-baselines"]):
        result = proj.runpytest(*args)
        result.assert_outcomes(failed=3)
        result.stdout.fnmatch_lines([f"*{path}: not a pytest-joules baseline file (schema 'null'*"])
        assert path.read_text() == "null\n"


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_baselines_option_at_a_file_or_dangling_link_is_a_usage_error(proj, kind):
    target = proj.path / "store"
    if kind == "file":
        target.write_text("{}")
        message = f"*--joules-baselines {target}: is a file, not a directory*"
    else:
        target.symlink_to(proj.path / "gone")
        message = f"*--joules-baselines {target}: a symlink to {proj.path / 'gone'}, which does not exist*"
    for args in (["--joules"], ["--joules", "--joules-update-baselines"]):
        result = proj.runpytest(*args, "--joules-baselines", "store")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])
    assert not (proj.path / "gone").exists()
    # without --joules nothing is checked: a plain run is not the plugin's business
    assert proj.runpytest("--joules-baselines", "store").ret == pytest.ExitCode.OK


def test_a_dangling_symlink_as_the_baseline_file_is_an_error(proj):
    path = proj.path / BASELINE
    path.parent.mkdir(parents=True)
    path.symlink_to(proj.path / "shared" / "gone.json")
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([f"*{path}: a symlink to *gone.json, which does not exist*"])


def _no_ini_project(pytester, monkeypatch):
    """Tests and their conftest in sub/, a repository root above, and no ini file anywhere."""
    proj = project(pytester, monkeypatch)
    (proj.path / "tox.ini").unlink()
    sub = proj.path / "sub"
    sub.mkdir()
    (proj.path / "conftest.py").rename(sub / "conftest.py")
    (sub / "test_energy.py").write_text(TESTS)
    (proj.path / ".git").mkdir()
    return proj, sub


ARGS = ("--joules", "--joules-engine", "fake", "--joules-seed", "0", "-p", "no:cacheprovider")


def test_without_an_ini_file_a_subdirectory_run_finds_the_store_of_the_repository(pytester, monkeypatch):
    proj, sub = _no_ini_project(pytester, monkeypatch)
    result = proj.runpytest(*ARGS, "--joules-update-baselines", "sub")
    result.assert_outcomes(passed=3)
    store = proj.path / "baselines"
    assert [p.name for p in store.iterdir()] == ["fakegpu-80gb-simulated"]
    result.stdout.fnmatch_lines(["*baselines *baselines (does not exist yet), updating baselines*",
                                 "*created a new baseline store at baselines: if baselines exist elsewhere*"])
    monkeypatch.chdir(sub)  # pytest's rootdir is now sub/
    result = proj.runpytest(*ARGS, "--joules-sim-slowdown", "1.10")
    result.assert_outcomes(failed=1, passed=2)  # judged against the repository's store, not "new"
    result.stdout.fnmatch_lines([f"*, baselines {store}"])
    proj.runpytest(*ARGS, "--joules-update-baselines").assert_outcomes(passed=3)
    assert not (sub / "baselines").exists()  # no stray store in the subdirectory


def test_a_run_without_any_store_says_so_loudly(proj):
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*baselines *baselines (does not exist yet)*",
                                 "*no baseline store at baselines: nothing was compared with a baseline*"])


def test_the_default_store_rule(tmp_path):
    from pytest_joules.plugin.options import default_baselines

    repo = tmp_path / "repo"
    unit = repo / "tests" / "unit"
    unit.mkdir(parents=True)
    assert default_baselines(unit, has_ini=False) == unit / "baselines"  # outside a repository: rootdir's
    (repo / ".git").mkdir()
    assert default_baselines(unit, has_ini=False) == repo / "baselines"  # a new store: the repository root
    (repo / "tests" / "baselines").mkdir()
    assert default_baselines(unit, has_ini=False) == repo / "tests" / "baselines"  # the nearest existing one
    (tmp_path / "baselines").mkdir()  # above the repository: never looked at
    (repo / "tests" / "baselines").rmdir()
    assert default_baselines(unit, has_ini=False) == repo / "baselines"
    assert default_baselines(unit, has_ini=True) == unit / "baselines"  # the ini file's directory decides


# -- 5. symlinks in the store ------------------------------------------------------------------------
def test_a_baseline_file_linked_into_the_store_is_written_through(proj):
    shared = proj.path / "shared" / "fake.json"
    shared.parent.mkdir()
    link = proj.path / BASELINE
    link.parent.mkdir(parents=True)
    link.symlink_to(shared)
    shared.write_text(json.dumps({"schema": SCHEMA, "fingerprint": {}, "entries": {}}))  # another fingerprint
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    assert link.is_symlink() and os.readlink(link) == str(shared)
    assert len(json.loads(shared.read_text())["entries"]) == 3
    assert not list(link.parent.glob("*.bak")) and (shared.parent / "fake.json.bak").exists()


# -- 11. a fingerprint change on update keeps the replaced file --------------------------------------
def test_an_update_on_another_device_keeps_the_old_file_and_names_what_it_dropped(proj, monkeypatch):
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    path = proj.path / BASELINE
    old = path.read_bytes()
    monkeypatch.setenv("FAKE_POWER_LIMIT", "500")
    result = proj.runpytest("--joules", "--joules-update-baselines", "-k", "test_chat")
    result.assert_outcomes(passed=1, deselected=2)
    backup = path.with_name(path.name + ".bak")
    assert backup.read_bytes() == old
    assert set(json.loads(path.read_text())["entries"]) == {CHAT}
    assert (f"replaced {BASELINE}, recorded on another device or engine (device.power_limit_w: 700.0 (baseline) "
            f"vs 500.0 (now)); the old file is kept as {BASELINE}.bak; dropped 2 baseline(s) this run did not "
            "record again: test_energy.py::test_grid[n_in=256-n_out=32], test_energy.py::test_grid[n_in=512-n_out=32]"
            ) in result.stdout.str()


# -- 12. one write per session ------------------------------------------------------------------------
COUNTING = """
from pathlib import Path

import pytest_joules.store.baselines as store

_write = store.atomic_write_json


def counting(path, data):
    with open(Path(__file__).parent / "writes.log", "a") as fh:
        fh.write(f"{path}\\n")
    _write(path, data)


store.atomic_write_json = counting
"""


def test_recording_a_session_writes_the_baseline_file_once(proj, monkeypatch):
    import pytest_joules.store.baselines as store_module

    # the inner run's conftest patches this module object: monkeypatch puts the original back
    monkeypatch.setattr(store_module, "atomic_write_json", store_module.atomic_write_json)

    proj.makepyfile(test_many="""
        import pytest

        @pytest.mark.energy(n_in=[16, 32, 64, 128], n_out=[8, 16, 32])
        def test_point(joules):
            joules()
        """)
    (proj.path / "conftest.py").write_text((proj.path / "conftest.py").read_text() + COUNTING)
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=15)
    assert len(json.loads((proj.path / BASELINE).read_text())["entries"]) == 15
    assert (proj.path / "writes.log").read_text().splitlines() == [str(proj.path / BASELINE)]


def test_a_store_that_breaks_before_the_session_ends_fails_the_session_and_is_kept(proj):
    proj.makepyfile(test_energy="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_chat(joules, request):
            joules()
            path = request.config.rootpath / "baselines/fakegpu-80gb-simulated/fake-fake-1-fp16.json"
            path.write_text("{ broken by someone else")
        """)
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*baseline store: *fake-fake-1-fp16.json: not valid JSON*1 baseline(s) of this run were not saved*"])
    assert (proj.path / BASELINE).read_text() == "{ broken by someone else"


def test_staged_entries_are_written_before_the_end_when_due(tmp_path, monkeypatch):
    import pytest_joules.store.baselines as store_module

    store = BaselineStore(tmp_path)
    store.stage(FP, "t1", Workload(8, 8), [0.1], None)
    assert not store.due() and not store.path_for(FP).exists()
    monkeypatch.setattr(store_module, "FLUSH_EVERY_S", 0.0)
    assert store.due()
    store.flush()
    assert set(json.loads(store.path_for(FP).read_text())["entries"]) == {"t1"}
    assert not store.due() and store.pending == 0


# -- 4. temp files of killed writes ------------------------------------------------------------------
CHILD = """
import os, sys, time
from pytest_joules.store.baselines import BaselineStore
from pytest_joules.engines.workload import Workload
if sys.argv[2] == "stall":  # stop inside the write, after the temporary file exists
    os.fsync = lambda fd: time.sleep(60)
fp = {"device": {"gpu": "G", "simulated": True}, "engine": {"kind": "k", "model": "m"}}
store = BaselineStore(sys.argv[1])
i = 0
while True:  # each record is a locked read-merge-write of the whole file
    store.record(fp, f"t{i}", Workload(8, 8), [0.1 + i * 1e-4] * 50, None)
    i += 1
"""


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


@pytest.mark.slow  # bounded: 5 child processes killed, about 5 s in all
def test_a_kill_loop_leaves_a_valid_file_and_no_temp_file_behind(tmp_path):
    store = BaselineStore(tmp_path)
    path = store.path_for(FP)
    big = {f"old{i}": _entry() for i in range(6000)}  # about 3 MB, as the outside test's file
    store.record(FP, "first", Workload(8, 8), [0.1], None)
    data = json.loads(path.read_text())
    data["entries"].update(big)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    left: set[Path] = set()
    for i, mode in enumerate(["stall", "stall", "run", "run", "run"]):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), mode], env=env)
        start = time.monotonic()
        if mode == "stall":  # killed while its temporary file exists: what 7 of 20 kills left
            while not set(_temps(path.parent)) - left and time.monotonic() - start < 10:
                time.sleep(0.01)
        else:  # killed at some moment of reading, merging or writing
            time.sleep(0.3 * i - 0.1)  # 0.5, 0.8, 1.1 s
        child.send_signal(signal.SIGKILL)
        child.wait()
        json.loads(path.read_text())  # whatever moment the kill hit, the file is whole
        left |= set(_temps(path.parent))
    assert len(left) >= 2  # the kills did leave temp files (else this test would prove nothing)
    BaselineStore(tmp_path).record(FP, "after", Workload(8, 8), [0.1], None)
    assert _temps(path.parent) == []
    entries = json.loads(path.read_text())["entries"]
    assert {"first", "after"} <= set(entries) and set(big) <= set(entries)


def test_the_store_keeps_its_temp_files_and_backups_out_of_git(tmp_path):
    store = BaselineStore(tmp_path / "baselines")
    store.record(FP, "t", Workload(8, 8), [0.1], None)
    directory = store.path_for(FP).parent
    ignore = (directory / ".gitignore").read_text().splitlines()
    assert ".*.tmp" in ignore and "*.bak" in ignore
    if shutil.which("git") is None:
        return
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    names = [f".{store.path_for(FP).name}.abcd1234.tmp", store.path_for(FP).name + ".bak"]
    for name in names:
        (directory / name).write_text("x")
    status = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert store.path_for(FP).name + "\n" in status and not any(name in status for name in names)


def test_a_users_gitignore_is_left_alone(tmp_path):
    store = BaselineStore(tmp_path)
    directory = store.path_for(FP).parent
    directory.mkdir(parents=True)
    (directory / ".gitignore").write_text("mine\n")
    store.record(FP, "t", Workload(8, 8), [0.1], None)
    assert (directory / ".gitignore").read_text() == "mine\n"


def test_the_store_refuses_a_baseline_file_that_is_not_a_regular_file(tmp_path):
    store = BaselineStore(tmp_path)
    path = store.path_for(FP)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # reading it would block forever
    with pytest.raises(DataError, match="not a regular file"):
        store.lookup(FP, "t", Workload(8, 8))
    store.stage(FP, "t", Workload(8, 8), [0.1], None)
    with pytest.raises(DataError, match="not a regular file"):
        store.flush()
    assert path.is_fifo()
