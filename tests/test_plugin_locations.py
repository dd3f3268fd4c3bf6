"""Skips and warnings point at the test; ini keys read booleans as pytest does; --help names what
each option takes (issue 13, fix 11)."""

import pytest

from .plugin_fake import project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_measured(joules):
    m = joules()
    assert m.j_per_out_token > 0

@pytest.mark.energy(n_in=128, n_out=64)
def test_forgot_to_measure(joules):
    pass
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def test_the_skip_without_joules_points_at_the_test(proj):
    result = proj.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_energy.py:3: energy test: run with `pytest --joules`*",
                                 "SKIPPED [[]1[]] test_energy.py:8: energy test*"])
    assert "pytest_joules" not in result.stdout.str()


def test_a_dry_runs_skip_points_at_the_joules_call(proj):
    result = proj.runpytest("--joules", "--joules-meter", "none", "-rs")
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_energy.py:5: dry run: no energy read*"])
    assert "pytest_joules" not in result.stdout.str()


def test_the_never_measured_warning_points_at_the_test(proj):
    result = proj.runpytest("--joules")
    result.stdout.fnmatch_lines(["*test_energy.py:8: PytestWarning: *test_forgot_to_measure is marked "
                                 "@pytest.mark.energy but never called joules()*"])
    assert "pytest_joules/fixtures.py" not in result.stdout.str()


@pytest.mark.parametrize("value, outcome", [("true", {"passed": 2}), ("yes", {"passed": 2}), ("false", {"skipped": 2})])
def test_joules_itself_is_an_ini_key(pytester, monkeypatch, value, outcome):
    proj = project(pytester, monkeypatch, joules=value)
    proj.makepyfile(test_energy=TESTS)
    proj.runpytest().assert_outcomes(**outcome, warnings=1 if "passed" in outcome else 0)


def test_boolean_ini_keys_are_declared_as_bool(pytester):
    pytester.makeini("[pytest]\n")
    config = pytester.parseconfig()
    from pytest_joules.plugin.options import FLAGS, ini_key

    for flag, kind, _ in FLAGS:
        if kind == "flag":
            assert config._parser._inidict[ini_key(flag)][1] == "bool", flag


def test_a_bad_boolean_ini_value_is_one_line_naming_the_key(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules="maybe")
    proj.makepyfile(test_energy=TESTS)
    result = proj.runpytest()
    result.stderr.fnmatch_lines(["ERROR: --joules: invalid value 'maybe': give true or false (the ini key joules)"])
    assert "Traceback" not in result.stderr.str()


def test_value_options_name_what_they_take_in_the_help(pytester):
    out = pytester.runpytest("--help").stdout.str()
    assert "=VALUE" not in out.replace("KEY=VALUE", "")
    for shown in ("--joules-tolerance=FRACTION", "--joules-rounds=N|auto", "--joules-engine=NAME"):
        assert shown in out
