"""The gates wired into the plugin: exporters, JUnit properties, the step summary, noisy verdicts,
per-test tolerance, meter options and the model's batching."""

import json
import xml.etree.ElementTree as ET

import pytest

from .plugin_fake import THETA, TWO_TESTS, project

TESTS = TWO_TESTS

MODEL = "baselines/fakegpu-80gb-simulated/fake-fake-1-fp16.model.json"
KEYS = ["test_energy.py::test_chat", "test_energy.py::test_grid[n_in=256-n_out=32]",
        "test_energy.py::test_grid[n_in=512-n_out=32]"]


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


# -- exporters -----------------------------------------------------------------------------------
def test_gab_bmf_and_step_summary_are_written_from_the_sessions_measurements(proj, monkeypatch):
    summary = proj.path / "step-summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = proj.runpytest("--joules", "--joules-json", "out.json", "--joules-export-gab", "gab.json",
                            "--joules-export-bmf", "bmf.json")
    result.assert_outcomes(passed=3)
    measured = {r["name"]: r["j_per_out_token"] for r in json.loads((proj.path / "out.json").read_text())["results"]}
    assert sorted(measured) == KEYS

    gab = json.loads((proj.path / "gab.json").read_text())
    assert [e["name"] for e in gab] == KEYS
    for e in gab:
        assert e["unit"] == "J/output-token" and e["value"] == measured[e["name"]]
        assert set(e) == {"name", "unit", "value", "range", "extra"} and "SIMULATED" in e["extra"]

    bmf = json.loads((proj.path / "bmf.json").read_text())
    assert sorted(bmf) == KEYS
    for name, measures in bmf.items():
        j = measures["j-per-output-token"]
        assert j["value"] == measured[name] and j["lower_value"] <= j["value"] <= j["upper_value"]
        assert measures["tokens-per-joule"]["value"] == pytest.approx(1 / measured[name])

    text = summary.read_text()
    assert text.startswith("# earlier step\n")  # appended, never overwritten
    assert "### pytest-joules energy (SIMULATED)" in text
    assert all(f"| {key} | " in text for key in KEYS)
    result.stdout.fnmatch_lines(["*github-action-benchmark JSON written to gab.json*", "*Bencher BMF JSON written to bmf.json*",
                                 "*Markdown summary appended to $GITHUB_STEP_SUMMARY (step-summary.md)*"])


def test_export_paths_from_ini_are_relative_to_the_ini_file(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_export_gab="reports/gab.json", joules_export_bmf="reports/bmf.json")
    proj.makepyfile(test_energy=TESTS)
    sub = proj.mkdir("sub")
    monkeypatch.chdir(sub)
    proj.runpytest("--joules", str(proj.path)).assert_outcomes(passed=3)
    assert len(json.loads((proj.path / "reports/gab.json").read_text())) == 3
    assert sorted(json.loads((proj.path / "reports/bmf.json").read_text())) == KEYS


def test_no_step_summary_flag_and_ini_key_leave_the_file_alone(proj, monkeypatch):
    summary = proj.path / "step-summary.md"
    summary.write_text("untouched\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    proj.runpytest("--joules", "--joules-no-step-summary").assert_outcomes(passed=3)
    assert summary.read_text() == "untouched\n"
    proj.runpytest("--joules", "-o", "joules_no_step_summary=true").assert_outcomes(passed=3)
    assert summary.read_text() == "untouched\n"
    proj.runpytest("--joules").assert_outcomes(passed=3)
    assert summary.read_text().count("### pytest-joules energy") == 1


def test_without_joules_nothing_is_exported(proj, monkeypatch):
    summary = proj.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    proj.runpytest("--joules-export-gab", "gab.json").assert_outcomes(skipped=3)
    assert not summary.exists() and not (proj.path / "gab.json").exists()


def test_an_unwritable_export_is_refused_before_measuring_naming_the_flag(proj):
    (proj.path / "taken").write_text("a file, not a directory")
    result = proj.runpytest("--joules", "--joules-export-gab", "taken/gab.json", "--joules-export-bmf", "bmf.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and not (proj.path / "bmf.json").exists()
    result.stderr.fnmatch_lines(["ERROR: --joules-export-gab *taken/gab.json: cannot write there: *taken is a file, "
                                 "not a directory"])


def test_an_unwritable_step_summary_fails_the_session_and_the_exports_are_still_written(proj, monkeypatch):
    summary = proj.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(proj.path / "missing-dir" / "summary.md"))
    result = proj.runpytest("--joules", "--joules-export-bmf", "bmf.json")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*GITHUB_STEP_SUMMARY=*missing-dir*summary.md: cannot append the energy summary*"])
    assert sorted(json.loads((proj.path / "bmf.json").read_text())) == KEYS  # the others are still written
    assert not summary.exists()


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_junit_xml_carries_per_test_properties(proj, family):
    proj.makepyfile(test_two="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_two(joules):
            joules()
            joules(n_in=256, name="long")
        """)
    result = proj.runpytest("--joules", "--junitxml", "junit.xml", "-o", f"junit_family={family}", "--joules-json", "out.json")
    result.assert_outcomes(passed=4)
    measured = {r["name"]: r["j_per_out_token"] for r in json.loads((proj.path / "out.json").read_text())["results"]}
    cases = {c.get("name"): c for c in ET.parse(proj.path / "junit.xml").getroot().iter("testcase")}
    props = {name: {p.get("name"): p.get("value") for p in case.iter("property")} for name, case in cases.items()}
    chat = props["test_chat"]
    assert float(chat["joules_j_per_out_token"]) == pytest.approx(measured["test_energy.py::test_chat"], rel=1e-12)
    assert chat["joules_n_in"] == "128" and chat["joules_n_out"] == "64" and chat["joules_verdict"] == "new"
    assert chat["joules_simulated"] == "true" and float(chat["joules_tokens_per_joule"]) > 0
    two = props["test_two"]  # the second measurement's properties carry its name
    assert float(two["joules_j_per_out_token"]) == pytest.approx(measured["test_two.py::test_two"], rel=1e-12)
    assert float(two["joules_long_j_per_out_token"]) == pytest.approx(measured["test_two.py::test_two::long"], rel=1e-12)
    assert two["joules_long_n_in"] == "256"


def test_junit_properties_are_builtin_types_for_xdist():
    # execnet (xdist's transport of reports) cannot serialize numpy scalars, which engines produce
    import numpy as np

    from pytest_joules.report.exporters import junit_properties
    from pytest_joules.measure.measurement import Measurement, Round
    from pytest_joules.engines.workload import Workload

    r = Round(joules=np.float64(12.5), seconds=np.float64(0.1), reps=1, output_tokens=np.int64(64), input_tokens=128)
    m = Measurement(Workload(128, 64), [r, r], engine={}, device={}, meter="sim", simulated=True)
    props = dict(junit_properties(m))
    assert props["joules_j_per_out_token"] == pytest.approx(12.5 / 64)
    assert {type(v) for v in props.values()} <= {int, float, str}


# -- verdict options -----------------------------------------------------------------------------
def test_noisy_verdicts_pass_by_default_and_fail_with_noisy_fails(proj, monkeypatch):
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    monkeypatch.setenv("FAKE_JITTER", "0.3")  # rounds spread by tens of percent: a 5% change is unresolvable
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    statuses = [r["verdict"]["status"] for r in json.loads((proj.path / "out.json").read_text())["results"]]
    assert statuses == ["noisy"] * 3, statuses
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*too noisy to judge (not failed) (3):*"])

    result = proj.runpytest("--joules", "--joules-noisy-fails")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["joules: engine fake, tolerance 5.0% (noisy verdicts fail), *"])
    result.stdout.fnmatch_lines(["energy noisy *% (tolerance 5%): test_chat: J/output-token baseline *", "*too noisy to judge a 5% change*"])
    proj.runpytest("--joules", "-o", "joules_noisy_fails=true").assert_outcomes(failed=3)


def test_noisy_fails_rejects_a_bad_ini_value(proj):
    result = proj.runpytest("--joules", "-o", "joules_noisy_fails=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-noisy-fails: invalid value 'maybe': give true or false*"])


def test_marker_tolerance_reaches_the_verdict_on_the_sim(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_engine="sim")
    proj.makepyfile(test_sim="""
        import pytest

        @pytest.mark.energy(n_in=256, n_out=64, requests=4)
        def test_default_tolerance(joules):
            joules()

        @pytest.mark.energy(n_in=256, n_out=64, requests=4, tolerance=0.02)
        def test_tight(joules):
            joules()
        """)
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=2)
    # stated without drift: two tests alone cannot tell a 3% change from the sim's session offsets
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.03", "--joules-json", "out.json", "--joules-drift", "0")
    result.assert_outcomes(passed=1, failed=1)
    verdicts = {r["name"].split("::")[-1]: r["verdict"] for r in json.loads((proj.path / "out.json").read_text())["results"]}
    assert verdicts["test_default_tolerance"]["status"] == "pass" and verdicts["test_default_tolerance"]["tolerance"] == 0.05
    assert verdicts["test_tight"]["status"] == "regression" and verdicts["test_tight"]["tolerance"] == 0.02
    assert 0.02 < verdicts["test_tight"]["delta"] < 0.04
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance 2%): test_tight:*"])


# -- meter options -------------------------------------------------------------------------------
def test_meter_options_reach_the_meter(proj):
    proj.runpytest("--joules", "--joules-json", "plain.json").assert_outcomes(passed=3)
    proj.runpytest("--joules", "--joules-meter-option", "min_window_s=0.02", "--joules-json", "long.json").assert_outcomes(passed=3)
    reps = lambda name: [rd["reps"] for r in json.loads((proj.path / name).read_text())["results"] for rd in r["rounds"]]  # noqa: E731
    assert set(reps("plain.json")) == {1}
    long = reps("long.json")
    assert min(long) > 1  # each window repeated the workload to last 20 ms
    # the ini linelist does the same
    proj.runpytest("--joules", "-o", "joules_meter_options=min_window_s=0.02", "--joules-json", "ini.json").assert_outcomes(passed=3)
    assert reps("ini.json") == long


def test_a_meter_option_without_equals_is_a_usage_error(proj):
    result = proj.runpytest("--joules", "--joules-meter-option", "min_window_s")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-meter-option takes KEY=VALUE (e.g. min_window_s=2), got 'min_window_s'*"])


def test_an_option_the_meter_does_not_know_fails_the_tests_naming_it(proj):
    result = proj.runpytest("--joules", "--joules-meter-option", "interval=5")
    result.assert_outcomes(errors=3)  # the `joules` fixture builds the meter at setup
    result.stdout.fnmatch_lines(["*meter 'fake': unknown option(s) interval; known: min_window_s*"])


# -- the model's batching ------------------------------------------------------------------------
def write_model(proj, batching):
    model = {"name": "memflops", "theta": list(THETA), "mape": 0.001, "loo_mape": 0.002, "n_points": 16,
             "n_in_range": [64, 2048], "n_out_range": [16, 1024]}
    if batching is not None:
        model["batching"] = batching
    path = proj.path / MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": [model]}))


BATCHED = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64, requests=16)
def test_served(joules):
    joules()

@pytest.mark.energy(n_in=256, n_out=64)
def test_single(joules):
    joules()

@pytest.mark.energy(n_in=512, n_out=64, requests=16, max_batch_size=4)
def test_capped(joules):
    joules()
"""


def _model_errors(proj):
    results = json.loads((proj.path / "out.json").read_text())["results"]
    return {r["name"].split("::")[-1]: r["model_error"] for r in results}


def test_a_model_is_compared_only_with_tests_of_its_batching(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_batch=BATCHED)
    write_model(proj, {"requests": 16, "max_batch_size": None})
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=3)
    errors = _model_errors(proj)
    assert errors["test_served"] is not None and errors["test_served"] < 0.01
    assert errors["test_single"] is None and errors["test_capped"] is None
    result.stdout.fnmatch_lines(["*session MAPE *% over 1 measurements*",
                                 "*model fitted at requests=16; 2 tests use other batching and were not compared*"])
    row = [line for line in result.stdout.lines if "test_single" in line and "256" in line]
    assert row and "—" in row[0]


def test_a_model_of_unknown_batching_is_compared_with_every_test(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_batch=BATCHED)
    write_model(proj, None)
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    result.assert_outcomes(passed=3)
    assert all(e is not None for e in _model_errors(proj).values())
    assert "other batching" not in result.stdout.str()


def test_a_model_of_mixed_batching_predicts_no_test(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_batch=BATCHED)
    write_model(proj, {"requests": "mixed"})
    result = proj.runpytest("--joules", "--joules-json", "out.json")
    assert all(e is None for e in _model_errors(proj).values())
    result.stdout.fnmatch_lines(["*model fitted at requests=mixed; 3 tests use other batching and were not compared*"])


def test_model_tolerance_on_a_test_of_other_batching_fails_with_the_fix(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_batch="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64, model_tolerance=0.05)
        def test_single(joules):
            joules()
        """)
    write_model(proj, {"requests": 16})
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*model_tolerance is set but the model was fitted at requests=16, this test runs "
                                 "requests=1; fit a model at this batching*"])


def test_a_bad_batching_in_the_model_file_is_reported(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_batch=BATCHED)
    write_model(proj, {"requests": 0})
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*'batching' requests=0: must be a positive integer or 'mixed'*joules fit*"])


def test_a_limit_the_engine_finds_while_running_is_one_line_not_a_traceback(proj):
    proj.makepyfile(test_limit="""
        import pytest

        @pytest.mark.energy(n_in=999, n_out=8)
        def test_long_prompt(joules):
            joules()
    """)
    result = proj.runpytest("--joules", "test_limit.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_long_prompt: prompt length 999 exceeds the engine's max_input_len 998*"])
    assert "Traceback" not in result.stdout.str() and "raise ConfigError" not in result.stdout.str()
