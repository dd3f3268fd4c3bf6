"""A gate that switched itself off without a word (issue 21, items 1, 2 and 15): option values
that moved pytest's rootdir, device directories that are files, another GPU, CI without baselines.
Each now gives the right verdict or one clear line."""

from __future__ import annotations

import json
import os

import pytest

from .plugin_fake import BASELINE, TWO_TESTS, project

SLOW = ("--joules-sim-slowdown", "1.5")  # +50%: every test with a baseline fails


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TWO_TESTS)
    return p


def record(proj, *args):
    proj.runpytest("--joules", "--joules-update-baselines", *args).assert_outcomes(passed=3)


def no_ini_repository(pytester, monkeypatch):
    """A repository without an ini file (pytest's rootdir then follows the arguments), tests in tests/."""
    p = project(pytester, monkeypatch)
    (p.path / "tox.ini").unlink()
    (p.path / ".git").mkdir()
    (p.path / "tests").mkdir()
    (p.path / "tests" / "test_energy.py").write_text(TWO_TESTS)
    return p


NO_INI = ("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest", "--joules",
          "--joules-engine=fake", "--joules-seed=0")


# -- item 1: option values taken as test paths -------------------------------------------------
def test_an_option_value_after_a_space_that_moves_the_ini_file_is_refused_naming_the_fix(proj, tmp_path_factory):
    """Before: `--joules-json /elsewhere/out.json` (an existing file) made pytest read no ini file:
    every test "new", exit 0. With `=` the same run failed."""
    record(proj)
    out = tmp_path_factory.mktemp("elsewhere") / "out.json"
    out.write_text("{}")
    result = proj.runpytest("--joules", *SLOW, "--joules-json", str(out))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest took the value of --joules-json {out} for a test path when it chose "
                                 f"its rootdir, so it read no ini file instead of *tox.ini*; write --joules-json={out} (with '=')"])
    result = proj.runpytest("--joules", *SLOW, f"--joules-json={out}")
    result.assert_outcomes(failed=3)


def test_both_spellings_of_a_store_outside_the_repository_give_the_same_keys(pytester, monkeypatch, tmp_path_factory):
    """Without an ini file: `--joules-baselines /tmp/store` moved the rootdir to a common ancestor
    and with it every key: all "new", a +50% regression passed."""
    p = no_ini_repository(pytester, monkeypatch)
    store = tmp_path_factory.mktemp("store")
    p.runpytest(*NO_INI, f"--joules-baselines={store}", "--joules-update-baselines", "tests").assert_outcomes(passed=3)
    keys = set(json.loads(next(store.rglob("*.json")).read_text())["entries"])
    assert keys == {"tests/test_energy.py::test_chat", "tests/test_energy.py::test_grid[n_in=256-n_out=32]",
                    "tests/test_energy.py::test_grid[n_in=512-n_out=32]"}
    result = p.runpytest(*NO_INI, "--joules-baselines", str(store), *SLOW, "tests")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([f"joules: pytest took --joules-baselines {store} for a test path when it chose its "
                                 f"rootdir (write --option=value); baseline keys stay anchored at {p.path}"])
    p.runpytest(*NO_INI, f"--joules-baselines={store}", *SLOW, "tests").assert_outcomes(failed=3)


def test_a_results_file_given_after_a_space_does_not_move_the_keys(pytester, monkeypatch, tmp_path_factory):
    p = no_ini_repository(pytester, monkeypatch)
    p.runpytest(*NO_INI, "--joules-update-baselines").assert_outcomes(passed=3)
    out = tmp_path_factory.mktemp("out") / "r.json"
    out.write_text("{}")
    p.runpytest(*NO_INI, *SLOW, "--joules-json", str(out)).assert_outcomes(failed=3)
    assert json.loads(out.read_text())["results"][0]["key"].startswith("tests/test_energy.py::")


def test_from_tests_with_the_store_given_relatively_the_keys_are_the_repositorys(pytester, monkeypatch):
    """Before: from tests/, `--joules-baselines=../baselines` read every test as new."""
    p = no_ini_repository(pytester, monkeypatch)
    p.runpytest(*NO_INI, "--joules-update-baselines").assert_outcomes(passed=3)
    monkeypatch.chdir(p.path / "tests")
    p.runpytest(*NO_INI, "--joules-baselines=../baselines", *SLOW).assert_outcomes(failed=3)
    p.runpytest(*NO_INI, *SLOW).assert_outcomes(failed=3)  # the default store from here, too


# -- item 2: a device directory that is no directory --------------------------------------------
def test_a_device_directory_checked_out_as_a_file_fails_naming_it(proj):
    """Before: Git on Windows checks a symlink out as a file holding its target: every test "new", exit 0."""
    record(proj)
    device = (proj.path / BASELINE).parent
    for path in device.iterdir():
        path.unlink()
    device.rmdir()
    device.write_text("../shared/fakegpu")
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*baseline store: *fakegpu-80gb-simulated: is a file, not a directory of baselines "
                                 "(it holds '../shared/fakegpu': a symlink that git checked out as a file*"])


def test_a_dangling_device_directory_link_fails_naming_its_target(proj):
    record(proj)
    device = (proj.path / BASELINE).parent
    device.rename(proj.path / "moved")
    os.symlink(proj.path / "gone", device)
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*fakegpu-80gb-simulated: a symlink to *gone, which does not exist*"])


# -- item 15: another GPU, and CI --------------------------------------------------------------
def test_a_device_without_baselines_names_the_ones_the_store_holds(proj, monkeypatch):
    """Before: `--joules-gpu H200` against H100 baselines: "8 passed", all new, nothing else said."""
    record(proj)
    monkeypatch.setenv("FAKE_POWER_LIMIT", "500")  # another device fingerprint, same directory
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)  # a fingerprint change of the same device and engine fails, as before
    monkeypatch.delenv("FAKE_POWER_LIMIT")
    result = proj.runpytest("--joules", "--joules-model", "fake-2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*holds no baselines for this device and engine (*fake fake-2*), so its tests were not "
                                 "gated; it holds baselines/fakegpu-80gb-simulated/fake-fake-1-fp16.json (3 baselines; "
                                 "model 'fake-1' (not 'fake-2'))*"])
    result = proj.runpytest("--joules", "--joules-model", "fake-2", "--joules-require-baselines")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*energy new (--joules-require-baselines): test_chat: *holds no baselines for this "
                                 "device and engine; it holds *fake-fake-1-fp16.json*"])


def test_in_ci_a_test_without_a_baseline_fails_with_the_command_that_records_it(proj, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = proj.runpytest("--joules", "-k", "chat")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*energy new (in CI a test without a baseline fails; --joules-allow-new lets it pass): "
                                 "test_chat: no baseline recorded yet; record its baseline with "
                                 "`pytest --joules -k chat * --joules-update-baselines test_energy.py::test_chat` and commit it*"])
    result = proj.runpytest("--joules", "-k", "chat", "--joules-update-baselines")
    result.assert_outcomes(passed=1)
    proj.runpytest("--joules", "-k", "chat").assert_outcomes(passed=1)


@pytest.mark.parametrize("how", [("--joules-allow-new",), ("-o", "joules_allow_new=true")])
def test_in_ci_allow_new_lets_a_new_test_pass(proj, monkeypatch, how):
    monkeypatch.setenv("CI", "true")
    proj.runpytest("--joules", *how).assert_outcomes(passed=3)


@pytest.mark.parametrize("value, fails", [("true", True), ("1", True), ("false", False), ("0", False), ("", False)])
def test_outside_ci_a_new_test_stays_new(proj, monkeypatch, value, fails):
    monkeypatch.setenv("CI", value)
    outcome = {"failed": 3} if fails else {"passed": 3}
    proj.runpytest("--joules").assert_outcomes(**outcome)


def test_new_fails_and_allow_new_together_are_a_usage_error(proj):
    result = proj.runpytest("--joules", "--joules-new-fails", "--joules-allow-new")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --joules-new-fails and --joules-allow-new contradict each other; give one"])
