"""The plugin's switches: off by default, options and ini keys, usage errors, a light import."""

import json
import subprocess
import sys

import pytest

from .plugin_fake import project

ONE_TEST = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    m = joules()
    assert m.j_per_out_token > 0

def test_plain():
    pass
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    return project(pytester, monkeypatch)


def test_marked_tests_are_skipped_without_joules_with_a_reason_that_says_how(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*energy test: run with `pytest --joules`*"])


def test_no_summary_and_no_baselines_without_joules(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest()
    result.assert_outcomes(passed=1, skipped=1)
    assert "== joules" not in result.stdout.str()
    assert not (proj.path / "baselines").exists()


def test_a_pass_with_joules(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*joules (SIMULATED)*", "*test_chat*128*64*new*"])


def test_plugin_can_be_turned_off(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("-p", "no:joules", "--strict-markers")
    # without the plugin the marker is unknown and the `joules` fixture missing: proof it is off
    assert result.ret != 0
    assert "energy" in result.stdout.str()


def test_strict_markers_accepts_the_energy_marker(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--strict-markers", "--joules")
    result.assert_outcomes(passed=2)
    assert "energy(n_in, n_out" in proj.runpytest("--markers").stdout.str()


def test_unknown_engine_is_a_usage_error_listing_the_known_ones(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-engine", "tgi")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown engine 'tgi' (--joules-engine); known engines: fake, hf, openai, sim, trtllm, vllm*"])


def test_unknown_meter_is_a_usage_error(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-meter", "ipmi")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown meter 'ipmi'*known meters:*dcgm*nvml*prometheus*"])


def test_the_dcgm_meter_without_exporters_fails_the_tests_naming_the_option(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-meter", "dcgm")
    result.assert_outcomes(passed=1, errors=1)  # the test without the `joules` fixture runs
    result.stdout.fnmatch_lines(["*meter 'dcgm': the dcgm meter needs the exporters to read: --joules-meter-option "
                                 "exporters=http://HOST:9400/metrics*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--joules-tolerance=-1%"], "--joules-tolerance: invalid value '-1%'*non-negative*"),
        (["--joules-tolerance", "five"], "--joules-tolerance: invalid value 'five'*0.05*5%*"),
        (["--joules-tolerance", "5"], "--joules-tolerance: invalid value '5'*write 5% for 5 percent*"),
        (["--joules-model-tolerance", "nan"], "--joules-model-tolerance: invalid value 'nan'*"),
        (["--joules-rounds", "0"], "--joules-rounds: invalid value '0'*positive integer*"),
        (["--joules-rounds", "2.5"], "--joules-rounds: invalid value '2.5'*positive integer*"),
        (["--joules-warmup=-1"], "--joules-warmup: invalid value '-1'*integer >= 0*"),
        (["--joules-sim-slowdown", "0"], "--joules-sim-slowdown: invalid value '0'*greater than 0*"),
        (["--joules-sim-slowdown", "fast"], "--joules-sim-slowdown: invalid value 'fast'*"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_option_value_and_fix(proj, args, message):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_tolerance_accepts_a_fraction_or_a_percentage(proj):
    proj.makepyfile(ONE_TEST)
    for value in ("0.02", "2%"):
        result = proj.runpytest("--joules", "--joules-tolerance", value)
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(["*tolerance 2.0%*"])


def test_ini_keys_configure_the_run_and_the_command_line_wins(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules="true", joules_tolerance="2%", joules_rounds="2",
                   joules_baselines="energy-baselines")
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules-json", "out.json", "--joules-update-baselines")
    result.assert_outcomes(passed=2)  # `joules = true` in the ini turned it on
    result.stdout.fnmatch_lines(["*engine fake*tolerance 2.0%*energy-baselines*"])
    data = json.loads((proj.path / "out.json").read_text())
    assert len(data["results"][0]["rounds"]) == 2
    assert list((proj.path / "energy-baselines").rglob("*.json"))
    # the command line wins over the ini
    result = proj.runpytest("--joules-rounds", "4", "--joules-tolerance", "7%", "--joules-json", "out.json")
    result.stdout.fnmatch_lines(["*tolerance 7.0%*"])
    assert len(json.loads((proj.path / "out.json").read_text())["results"][0]["rounds"]) == 4


def test_bad_ini_value_is_a_usage_error_naming_the_option(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_rounds="many")
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-rounds: invalid value 'many'*"])
    assert "set by the ini key joules_rounds in " in result.stderr.str()  # where to fix it
    result = proj.runpytest("--joules", "--joules-rounds", "0")  # the command line's own error names no ini key
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "ini key" not in result.stderr.str()


def test_slowdown_on_a_real_engine_is_refused(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(ONE_TEST)
    monkeypatch.setattr("tests.plugin_fake.FakeEngine.simulated", False)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--joules-sim-slowdown only applies to simulated engines, not 'fake'*"])


def test_require_gpu_turns_a_simulated_engine_into_a_failure(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-require-gpu")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--joules-require-gpu: engine 'fake' is SIMULATED, not a real GPU*"])


def test_a_missing_gpu_is_a_skip_with_its_reason_or_a_failure_with_require_gpu(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-model", "unavailable", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*engine 'fake' is not available: no CUDA device found*"])
    result = proj.runpytest("--joules", "--joules-model", "unavailable", "--joules-require-gpu")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*engine 'fake' is not available: no CUDA device found*"])


def test_trtllm_engine_fixture_skips_with_the_reason(proj):
    proj.makepyfile(
        """
        def test_trt(trtllm_engine):
            pass
        """
    )
    result = proj.runpytest("--joules", "--joules-model", "/nonexistent/engine-dir", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*TensorRT-LLM engine is not available*"])


def test_joules_engine_and_meter_fixtures_are_built_once_per_session(proj):
    proj.makepyfile(
        """
        import pytest
        seen = []

        @pytest.mark.parametrize("i", range(3))
        def test_fixtures(joules_engine, joules_meter, i):
            seen.append((id(joules_engine), id(joules_meter)))
            assert joules_engine.kind == "fake" and joules_meter.engine is joules_engine
            assert len(set(seen)) == 1
        """
    )
    proj.runpytest("--joules").assert_outcomes(passed=3)


def test_importing_the_plugin_imports_nothing_heavy():
    code = (
        "import sys, json, pytest_joules.plugin\n"
        "heavy = ['numpy', 'scipy', 'torch', 'transformers', 'pynvml', 'tensorrt_llm', 'rich']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_run_without_joules_imports_nothing_heavy(proj):
    proj.makepyfile(
        ONE_TEST
        + """
def test_modules():
    import sys
    heavy = ['numpy', 'scipy', 'torch', 'transformers', 'pynvml', 'tensorrt_llm', 'rich']
    assert [m for m in heavy if m in sys.modules] == []
"""
    )
    # a subprocess, so the modules this test process already holds do not count; other plugins
    # installed here (hypothesis, benchmark) may import what they like, so they are turned off;
    # and no conftest, since the fake engine's imports are not the plugin's
    proj.makeconftest("")
    result = proj.runpytest_subprocess("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:xdist",
                                       "-p", "no:anyio")
    result.assert_outcomes(passed=2, skipped=1)


# -- engine options -------------------------------------------------------------------------------


def record_baselines(proj, *args):
    proj.runpytest("--joules", "--joules-update-baselines", *args).assert_outcomes(passed=2)


def test_engine_options_reach_the_engine(proj):
    proj.makepyfile(ONE_TEST)
    record_baselines(proj)
    result = proj.runpytest("--joules", "--joules-engine-option", "slowdown=1.1")
    result.assert_outcomes(passed=1, failed=1)  # the fake engine got slowdown=1.1: 10% more energy
    result.stdout.fnmatch_lines(["energy regression +10.*% (tolerance 5%): test_chat:*"])


def test_engine_options_from_the_ini_one_per_line(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_engine_options="\n    slowdown=1.1\n    seed=7", joules_seed="")
    proj.makepyfile(ONE_TEST)
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-engine-option", "slowdown=1").assert_outcomes(passed=2)
    result = proj.runpytest("--joules", "--joules-json", "out.json")  # both ini lines apply
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance 5%): test_chat:*"])  # ~10% (another seed's jitter)
    assert json.loads((proj.path / "out.json").read_text())["results"][0]["seed"] == 7


def test_an_engine_option_seed_is_the_session_seed(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_seed="")  # no seed of the ini's to disagree with
    proj.makepyfile(ONE_TEST)
    proj.runpytest("--joules", "--joules-engine-option", "seed=7", "--joules-json", "out.json").assert_outcomes(passed=2)
    assert json.loads((proj.path / "out.json").read_text())["results"][0]["seed"] == 7  # the prompts follow it too


def test_without_a_seed_each_run_draws_one_and_the_header_says_how_to_repeat_it(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_seed="")
    proj.makepyfile(ONE_TEST)
    seeds = []
    for name in ("a.json", "b.json"):
        result = proj.runpytest("--joules", "--joules-json", name)
        result.stdout.fnmatch_lines(["joules: *, seed * (random; --joules-seed * repeats this run), *"])
        seeds.append(json.loads((proj.path / name).read_text())["results"][0]["seed"])
    assert seeds[0] != seeds[1]
    result = proj.runpytest("--joules", "--joules-seed", str(seeds[0]), "--joules-json", "c.json")
    result.stdout.fnmatch_lines([f"joules: *, seed {seeds[0]}, *"])
    assert json.loads((proj.path / "c.json").read_text())["results"][0]["seed"] == seeds[0]


@pytest.mark.parametrize("item", ["slowdown", "=1.1", ""])
def test_an_engine_option_without_key_and_value_is_a_usage_error(proj, item):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-engine-option", item)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--joules-engine-option takes KEY=VALUE (e.g. slowdown=1.1), got '{item}'*"])


def test_a_bad_engine_option_in_the_ini_names_the_ini_key(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_engine_options="\n    slowdown")
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-engine-option takes KEY=VALUE*got 'slowdown'*set by the ini key joules_engine_options in *"])


def test_an_unknown_engine_option_fails_the_tests_naming_it_and_the_accepted_ones(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-engine", "sim", "--joules-engine-option", "bogus=1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*engine 'sim': unknown sim engine option(s) 'bogus'; the sim*accepts*slowdown*seed*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--joules-sim-slowdown", "1.1", "--joules-engine-option", "slowdown=1.2"],
         "--joules-sim-slowdown 1.1 and --joules-engine-option slowdown=1.2 disagree; set the slowdown once"),
        (["--joules-seed", "3", "--joules-engine-option", "seed=4"],
         "--joules-seed 3 and --joules-engine-option seed=4 disagree; set the seed once"),
    ],
)
def test_a_flag_and_an_engine_option_of_one_setting_must_agree(proj, args, message):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_the_slowdown_flag_and_option_may_say_the_same(proj):
    proj.makepyfile(ONE_TEST)
    record_baselines(proj)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "--joules-engine-option", "slowdown=1.1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["energy regression +10.*% (tolerance 5%): test_chat:*"])


def test_the_slowdown_flag_with_an_ini_option_that_disagrees_names_the_ini_key(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_engine_options="slowdown=1.2")
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--joules-sim-slowdown 1.1 and the ini key joules_engine_options slowdown=1.2 disagree*"])


def test_slowdown_on_a_known_real_engine_is_refused_before_it_is_built(proj):
    proj.makepyfile(ONE_TEST)
    result = proj.runpytest("--joules", "--joules-engine", "hf", "--joules-model", "tiny-llama",
                            "--joules-sim-slowdown", "1.1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--joules-sim-slowdown only applies to simulated engines, not 'hf'*"])
