"""Nothing measured is lost and no report contradicts itself (issue 21, items 5, 6, 7 and 12, and
item 14's output paths): results written into the store, crashed xdist workers, a full disk,
teardown errors and reruns."""

from __future__ import annotations

import errno
import json
import os

import pytest

from .plugin_fake import BASELINE, TWO_TESTS, project


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TWO_TESTS)
    return p


# -- item 5: --joules-json into the store -----------------------------------------------------
@pytest.mark.parametrize("where", [BASELINE, "baselines/results.json"])
def test_a_results_file_inside_the_store_is_refused_before_measuring(proj, where):
    """Before: `--joules-json` on a baseline file replaced it (exit 0); the next run failed on it."""
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    before = (proj.path / BASELINE).read_bytes()
    result = proj.runpytest("--joules", f"--joules-json={where}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --joules-json {proj.path / where}: is inside the baseline store "
                                 f"{proj.path / 'baselines'}, where a results file would replace (or be read as) a "
                                 "baseline file; write it outside the store"])
    assert (proj.path / BASELINE).read_bytes() == before


# -- item 14: output paths that cannot be written -----------------------------------------------
def test_a_results_path_that_is_a_directory_is_refused_before_measuring(proj):
    (proj.path / "out").mkdir()
    result = proj.runpytest("--joules", "--joules-json=out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "passed" not in result.stdout.str()
    result.stderr.fnmatch_lines(["ERROR: --joules-json *out: is a directory; give a file name such as *out/results.json"])


def test_a_fifo_without_a_reader_ends_the_session_with_one_line(proj, monkeypatch):
    """Before: the session hung after its tests, waiting for a reader that never came."""
    import pytest_joules.store.results as results

    monkeypatch.setattr(results, "FIFO_WAIT_S", 0.2)
    os.mkfifo(proj.path / "pipe")
    result = proj.runpytest("--joules", "--joules-json=pipe")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--joules-json *pipe: cannot write: *is a FIFO that no process read within 0.2 s; "
                                 "start its reader first*"])


# -- item 7: a full disk ------------------------------------------------------------------------
def _disk_full(monkeypatch):
    """Baseline writes fail with ENOSPC, as on a full disk; the .gitignore's temporary file is
    created, then its write fails."""
    import pathlib

    import pytest_joules.store.baselines as baselines

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(baselines, "atomic_write_json", full)
    write_text = pathlib.Path.write_text

    def write_gitignore(self, *args, **kwargs):
        if self.name.endswith(".joules-tmp"):
            self.touch()
            full()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_gitignore)


def test_a_full_disk_is_reported_once_and_no_row_says_saved(proj, monkeypatch):
    """Before: "baselines of this run were not saved", then "baselines saved (2)", rows marked
    saved, `baseline_updated: true`, advice to make the directory writable, an empty
    `.gitignore.joules-tmp` left behind."""
    _disk_full(monkeypatch)
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-json=r.json")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*baseline store: cannot write baseline file *fake-fake-1-fp16.json: No space left on "
                                 "device; the disk holding * is full: free space on it, or point --joules-baselines at "
                                 "another disk; 3 baseline(s) of this run were not saved (listed below)*",
                                 "baselines not saved: the store could not write them (see above) (3):"])
    assert "baselines saved" not in out and "writable" not in out and out.count("No space left") == 1
    rows = json.loads((proj.path / "r.json").read_text())["results"]
    assert [r["baseline_updated"] for r in rows] == [False] * 3
    assert all(r["baseline_not_saved"].startswith("not written: cannot write baseline file") for r in rows)
    assert not list(proj.path.rglob(".gitignore.joules-tmp"))


# -- item 12: a test's whole outcome decides ---------------------------------------------------
TEARDOWN = """
import pytest

@pytest.fixture
def breaks_on_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules, breaks_on_teardown):
    joules()

@pytest.mark.energy(n_in=256, n_out=32)
def test_ok(joules):
    joules()
"""


def test_a_teardown_error_saves_no_baseline(proj):
    proj.makepyfile(test_energy=TEARDOWN)
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["baselines not saved: the test failed (fix it, then record again) (1):",
                                 "  test_energy.py::test_chat"])
    assert set(json.loads((proj.path / BASELINE).read_text())["entries"]) == {"test_energy.py::test_ok"}


FLAKY = """
import pathlib
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_flaky(joules):
    joules()
    marker = pathlib.Path("attempted")
    if not marker.exists():
        marker.write_text("1")
        assert False, "first attempt fails"
"""

#: what pytest-rerunfailures does (its pytest_runtest_protocol): run the protocol again while
#: reporting the failed attempt's reports as "rerun"
RERUN_CONFTEST = """
import pytest
from _pytest.runner import runtestprotocol

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(2):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        rerun = attempt == 0 and any(r.failed for r in reports)
        for report in reports:
            if rerun and report.failed:
                report.outcome = "rerun"
            item.ihook.pytest_runtest_logreport(report=report)
        if not rerun:
            break
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


def _check_rerun(proj, result):
    out = result.stdout.str()
    assert "baselines not saved" not in out
    result.stdout.fnmatch_lines(["baselines saved to baselines (1):", "  test_energy.py::test_flaky"])
    rows = json.loads((proj.path / "r.json").read_text())["results"]
    assert len(rows) == 1 and rows[0]["baseline_updated"] is True
    assert set(json.loads((proj.path / BASELINE).read_text())["entries"]) == {"test_energy.py::test_flaky"}


def test_a_rerun_test_is_listed_once_by_its_last_attempt(proj):
    """Before: listed both saved and not saved, and twice in the results JSON."""
    proj.makepyfile(test_energy=FLAKY)
    (proj.path / "conftest.py").write_text((proj.path / "conftest.py").read_text() + RERUN_CONFTEST)
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-json=r.json")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    _check_rerun(proj, result)


def test_a_test_rerun_by_pytest_rerunfailures_is_listed_once(proj, monkeypatch):
    plugin = pytest.importorskip("pytest_rerunfailures")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.environ["PYTHONPATH"], os.path.dirname(plugin.__file__)]))
    proj.makepyfile(test_energy=FLAKY)
    result = proj.runpytest_subprocess("--joules", "--joules-update-baselines", "--joules-json=r.json", "--reruns", "1")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    _check_rerun(proj, result)


# -- item 6: a crashed xdist worker -------------------------------------------------------------
CRASH = """
import os
import pytest

@pytest.mark.energy(n_in=[64, 128, 256, 512], n_out=32)
def test_before(joules):
    joules()

def test_crash():
    os._exit(1)

@pytest.mark.energy(n_in=[64, 128, 256, 512], n_out=64)
def test_after(joules):
    joules()
"""


@pytest.mark.slow  # starts worker processes
def test_a_crashed_worker_takes_no_measurement_with_it(proj):
    """Before: 8 passed, 4 rows in the table and 4 entries in the store."""
    pytest.importorskip("xdist")
    proj.makepyfile(test_energy=CRASH)
    result = proj.runpytest_subprocess("--joules", "--joules-update-baselines", "--joules-json=r.json", "-n", "1")
    result.assert_outcomes(passed=8, failed=1)
    rows = json.loads((proj.path / "r.json").read_text())["results"]
    assert len(rows) == 8 and all(r["baseline_updated"] for r in rows)
    assert len(json.loads((proj.path / BASELINE).read_text())["entries"]) == 8
    result.stdout.fnmatch_lines(["baselines saved to baselines (8):"])
