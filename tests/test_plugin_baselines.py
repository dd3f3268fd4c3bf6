"""Baselines through the plugin: record, gate, update, refuse corrupted or foreign files."""

import json

import pytest

from pytest_joules.numbers import sig

from .plugin_fake import BASELINE, project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    joules()

@pytest.mark.energy(n_in=[256, 512], n_out=32, tolerance="12%")
def test_grid(joules):
    joules()
"""



@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def record(proj):
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(passed=3)
    return json.loads((proj.path / BASELINE).read_text())


def test_update_writes_a_reviewable_file_per_device_and_engine(proj):
    data = record(proj)
    assert data["schema"] == "pytest-joules/baselines/1"
    assert data["fingerprint"] == {
        "device": {"gpu": "FakeGPU 80GB", "power_limit_w": 700.0, "driver": "999.1", "simulated": True},
        "engine": {"kind": "fake", "model": "fake-1", "dtype": "fp16", "version": "1.0"},
    }
    entry = data["entries"]["test_energy.py::test_chat"]
    assert entry["workload"] == {"n_in": 128, "n_out": 64, "requests": 1, "max_batch_size": None, "seed": 0}
    assert len(entry["rounds"]) == 3 and entry["j_per_out_token"] == sorted(entry["rounds"])[1]
    # latency beside the rounds (shown, and gated by --joules-latency-tolerance only) and the session that measured them
    assert set(entry) == {"workload", "rounds", "j_per_out_token", "spread", "recorded", "latency", "session"}
    assert set(data["entries"]) == {"test_energy.py::test_chat", "test_energy.py::test_grid[n_in=256-n_out=32]",
                                    "test_energy.py::test_grid[n_in=512-n_out=32]"}
    text = (proj.path / BASELINE).read_text()
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"  # sorted and indented: small diffs
    # recording the same figures again changes nothing, not even the dates
    record(proj)
    assert (proj.path / BASELINE).read_text() == text


def test_without_a_baseline_the_verdict_is_new_and_nothing_is_written(proj):
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*new (no baseline yet; record with --joules-update-baselines) (3):*"])
    assert not (proj.path / "baselines").exists()


def test_regression_fails_with_baseline_now_delta_and_tolerance_then_update_then_pass(proj):
    data = record(proj)
    base = data["entries"]["test_energy.py::test_chat"]["j_per_out_token"]
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10")
    # 10% slower: the 5% gate fails; the grid's marker allows 12% and passes
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(
        [f"energy regression +10.*% (tolerance 5%): test_chat: J/output-token baseline {sig(base)}, now *"]
    )
    # accept the new figures
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "--joules-update-baselines")
    result.assert_outcomes(passed=3)
    # the regression is recorded; the grid, 10% up within its 12% tolerance, passes: its entries stay
    result.stdout.fnmatch_lines(["*baselines saved to*(1):*", "*baselines kept for 2 test(s) whose energy did not change*"])
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10")
    result.assert_outcomes(passed=3)
    new_base = json.loads((proj.path / BASELINE).read_text())["entries"]["test_energy.py::test_chat"]["j_per_out_token"]
    assert new_base == pytest.approx(base * 1.10, rel=0.01)


def test_an_improvement_passes_and_is_reported(proj):
    record(proj)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "0.8")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*improvements (3):*", "*test_energy.py::test_chat: -20.*% (tolerance 5%): baseline*"])


def test_a_corrupted_baseline_file_is_an_error_naming_it_and_is_left_unchanged(proj):
    path = proj.path / BASELINE
    path.parent.mkdir(parents=True)
    for content in (b'{"schema": "pytest-joules/baselines/1", "entries": {', b'["not", "a", "baseline"]',
                    b'{"schema": "pytest-joules/baselines/1", "fingerprint": {}, "entries": {"t": {"rounds": []}}}'):
        path.write_bytes(content)
        for args in (["--joules"], ["--joules", "--joules-update-baselines"]):
            result = proj.runpytest(*args)
            result.assert_outcomes(failed=3)
            result.stdout.fnmatch_lines([f"*baseline store: {path}: *restore it from version control or delete it*"])
            assert path.read_bytes() == content  # never overwritten, not even by an update
    assert "INTERNALERROR" not in result.stdout.str()


def test_an_unwritable_baselines_directory_fails_naming_it_without_a_traceback(proj):
    (proj.path / "blocked").write_text("a file where a directory above the baselines should be\n")
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-baselines", "blocked/store")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*baseline store: cannot write baseline file *blocked*fake-fake-1-fp16.json: *"
                                 "point --joules-baselines at a writable directory*"])
    out = result.stdout.str()
    assert "Traceback" not in out and "pathlib.py" not in out and "never called joules()" not in out


def test_a_baseline_from_another_device_is_refused_with_how_to_record_one(proj, monkeypatch):
    record(proj)
    before = (proj.path / BASELINE).read_bytes()
    monkeypatch.setenv("FAKE_POWER_LIMIT", "500")  # same GPU model, power-capped
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        ["*fake-fake-1-fp16.json was recorded on a different device or engine "
         "(device.power_limit_w: 700.0 (baseline) vs 500.0 (now)); it is not used. To record baselines "
         "for this one, run with --joules-update-baselines (replaces the file's entries; the old file is kept "
         "as .bak) or point --joules-baselines at a separate directory*"]
    )
    assert (proj.path / BASELINE).read_bytes() == before
    # a separate directory for this device works at once
    proj.runpytest("--joules", "--joules-baselines", "capped").assert_outcomes(passed=3)
    # --joules-update-baselines replaces the foreign file
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=3)
    data = json.loads((proj.path / BASELINE).read_text())
    assert data["fingerprint"]["device"]["power_limit_w"] == 500.0 and len(data["entries"]) == 3
    proj.runpytest("--joules").assert_outcomes(passed=3)


def test_another_model_gets_its_own_file(proj):
    record(proj)
    proj.runpytest("--joules", "--joules-model", "fake-2").assert_outcomes(passed=3)  # new: no baseline
    proj.runpytest("--joules", "--joules-model", "fake-2", "--joules-update-baselines").assert_outcomes(passed=3)
    assert (proj.path / "baselines/fakegpu-80gb-simulated/fake-fake-2-fp16.json").exists()


def test_a_changed_workload_is_new_not_compared(proj):
    record(proj)
    proj.makepyfile(test_energy=TESTS.replace("n_in=128, n_out=64", "n_in=128, n_out=16"))
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.5")
    result.assert_outcomes(passed=1, failed=2)  # the grid regressed; test_chat is new
    result.stdout.fnmatch_lines(["*test_chat: baseline was recorded for another workload (n_in=128-n_out=64); record it again*"])


def test_a_second_measurement_in_one_test_has_its_own_key(proj):
    proj.makepyfile(
        test_energy="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64)
        def test_two(joules):
            joules()
            joules(n_in=256)
            joules(n_in=512, name="long")
        """
    )
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=1)
    entries = json.loads((proj.path / BASELINE).read_text())["entries"]
    assert set(entries) == {"test_energy.py::test_two", "test_energy.py::test_two::#2", "test_energy.py::test_two::long"}
    assert entries["test_energy.py::test_two::long"]["workload"]["n_in"] == 512


@pytest.mark.slow  # starts worker processes: a few seconds on 2 cores
def test_concurrent_xdist_workers_lose_no_baseline(pytester, monkeypatch):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(
        test_many="""
        import json
        import os

        import pytest

        @pytest.mark.energy(n_in=[16, 32, 64, 128], n_out=[8, 16, 32])
        def test_point(joules, request):
            joules()
            seen = request.config.rootpath / "seen"
            seen.mkdir(exist_ok=True)
            worker = os.environ["PYTEST_XDIST_WORKER"]
            (seen / f"{worker}-{request.node.callspec.id}").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        """
    )
    # a simulated engine needs no GPU of its own: 2 workers with 1 visible GPU are fine
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    summary = proj.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = proj.runpytest_subprocess("--joules", "--joules-update-baselines", "-n", "2",
                                       "--joules-json", "out.json", "--joules-export-gab", "gab.json",
                                       "--junitxml", "junit.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=12)
    seen = list((proj.path / "seen").iterdir())
    assert {p.name.split("-")[0] for p in seen} == {"gw0", "gw1"}  # really two workers
    assert {p.read_text() for p in seen} == {"3"}  # left alone for a simulated engine
    entries = json.loads((proj.path / BASELINE).read_text())["entries"]
    assert len(entries) == 12
    # the controller got every worker's measurements for the summary, the JSON and the exports
    results = json.loads((proj.path / "out.json").read_text())["results"]
    assert len(results) == 12
    assert sorted(e["name"] for e in json.loads((proj.path / "gab.json").read_text())) == sorted(entries)
    assert summary.read_text().count("### pytest-joules energy") == 1  # written once, by the controller
    assert (proj.path / "junit.xml").read_text().count('name="joules_j_per_out_token"') == 12
    result.stdout.fnmatch_lines(["*baselines saved to baselines (12):*"])


def test_another_seed_is_judged_against_baselines_recorded_with_seed_0(proj):
    data = record(proj)  # entries written as before this change: "seed": 0 in each workload
    assert {e["workload"]["seed"] for e in data["entries"].values()} == {0}
    result = proj.runpytest("--joules", "--joules-seed", "21")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "new (no baseline yet" not in out and "another workload" not in out
    result.stdout.fnmatch_lines(["*test_chat*128*64*pass*"])
    # judged, not waved through: a regression at seed 21 still fails
    result = proj.runpytest("--joules", "--joules-seed", "21", "--joules-sim-slowdown", "1.10")
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(["energy regression +*% (tolerance 5%): test_chat: *"])


def test_joules_compare_matches_the_runs_of_two_seeds(proj, capsys):
    from pytest_joules.cli import main

    proj.runpytest("--joules", "--joules-json", "seed0.json").assert_outcomes(passed=3)
    proj.runpytest("--joules", "--joules-seed", "21", "--joules-json", "seed21.json").assert_outcomes(passed=3)
    assert json.loads((proj.path / "seed21.json").read_text())["results"][0]["seed"] == 21
    capsys.readouterr()  # the inner runs' output
    code = main(["compare", str(proj.path / "seed0.json"), str(proj.path / "seed21.json"), "--fail", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(report["results"]) == 3 and report["only_old"] == [] and report["only_new"] == []
    assert {r["status"] for r in report["results"]} == {"pass"}
