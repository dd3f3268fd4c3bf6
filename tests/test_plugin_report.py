"""What a session reports: the summary table, model predictions and the MAPE gate, --joules-json."""

import json

import pytest

from pytest_joules.store.results import SCHEMA, read_results

from .plugin_fake import THETA, j_per_token, project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    joules()

@pytest.mark.energy(n_in=[256, 1024], n_out=[32, 512])
def test_grid(joules):
    joules()

@pytest.mark.energy(n_in=64, n_out=8)
def test_tiny_reply(joules):
    joules()
"""

MODEL = "baselines/fakegpu-80gb-simulated/fake-fake-1-fp16.model.json"


def write_model(proj, scale=1.0, name="memflops"):
    theta = [t * scale for t in THETA] if name == "memflops" else [t * scale for t in THETA[:5]]
    model = {"name": name, "theta": theta, "mape": 0.001, "loo_mape": 0.002, "n_points": 16,
             "n_in_range": [64, 2048], "n_out_range": [16, 1024]}
    path = proj.path / MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": [model]}))


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def test_summary_table_says_simulated_and_shows_every_column(proj):
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*= joules (SIMULATED) =*",
            "pytest-joules: energy per output token — SIMULATED device*",
            # 80 columns: the compact headers (rnd, base, model), every column kept
            "*test*n_in*n_out*J/tok*rnd*base*model*verdict*",
        ]
    )
    # the caption names the device and the engine
    assert "FakeGPU 80GB (SIMULATED), 700.0 W, driver 999.1 · fake fake-1 fp16" in out and "meter fake · 1 request each" in out
    # each row carries the measured figure
    row = next(line for line in result.stdout.lines if line.strip().startswith("test_chat"))
    cells = row.split()
    assert cells[1:3] == ["128", "64"] and cells[-1] == "new"
    assert float(cells[3]) == pytest.approx(j_per_token(128, 64), rel=0.01)


def test_a_wide_terminal_shows_the_derived_columns_and_a_narrow_one_drops_them(proj, monkeypatch):
    monkeypatch.setenv("COLUMNS", "110")
    result = proj.runpytest("--joules")
    result.stdout.fnmatch_lines(["*test*n_in*n_out*J/tok*tok/J*avg W*rounds*spread*vs base*vs model*verdict*"])
    monkeypatch.setenv("COLUMNS", "60")
    result = proj.runpytest("--joules")
    header = next(line for line in result.stdout.lines if "J/tok" in line)
    assert "tok/J" not in header and "avg W" not in header and "verdict" in header
    table = result.stdout.str().split("= joules")[1].split("no fitted model")[0]
    assert all(len(line) <= 60 for line in table.splitlines())


def test_quiet_keeps_the_table_and_very_quiet_leaves_one_line(proj):
    result = proj.runpytest("--joules", "-q")
    assert "J/tok" in result.stdout.str() and "new (no baseline yet" not in result.stdout.str()
    result = proj.runpytest("--joules", "-qq")
    assert "J/tok" not in result.stdout.str()
    result.stdout.fnmatch_lines(["joules: 6 measured: 6 new"])


def test_model_predictions_errors_sweet_spots_and_session_mape(proj):
    write_model(proj)
    result = proj.runpytest("--joules", "--joules-model-tolerance", "2%")
    assert result.ret == 0
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    assert "Sweet spots (memflops model)" in out
    # the fake follows the model's form exactly, so errors are the jitter only (< 1%)
    result.stdout.fnmatch_lines(["*model memflops (*fake-fake-1-fp16.model.json): session MAPE 0.*% over 5 measurements, tolerance 2.00%: ok*"])
    tiny = next(line for line in result.stdout.lines if line.strip().startswith("test_tiny_reply"))
    assert "%*" in tiny  # n_out=8 lies outside the fitted 16-1024: marked, and not in the MAPE


def test_a_model_that_misses_fails_the_session_with_a_clear_line(proj):
    write_model(proj, scale=1.3)
    result = proj.runpytest("--joules", "--joules-model-tolerance", "10%")
    result.assert_outcomes(passed=6)  # each test passed ...
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # ... but the session gate failed
    result.stdout.fnmatch_lines(
        ["*--joules-model-tolerance: the session MAPE 23.*% over 5 measurements exceeds 10.00%*"]
    )
    # without the option the same run passes: the MAPE is only reported
    assert proj.runpytest("--joules").ret == 0


def test_marker_model_tolerance_fails_that_test(proj):
    write_model(proj, scale=1.3)
    proj.makepyfile(
        test_energy="""
        import pytest

        @pytest.mark.energy(n_in=128, n_out=64, model_tolerance=0.1)
        def test_chat(joules):
            joules()
        """
    )
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*J/output-token * is 23.*% from the memflops prediction * (tolerance 10%)*"])


def test_model_tolerance_without_a_model_says_how_to_get_one(proj):
    result = proj.runpytest("--joules", "--joules-model-tolerance", "10%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--joules-model-tolerance 10.00%: no measurement had a model prediction*joules fit*"])


def test_a_corrupted_model_file_is_an_error_naming_it(proj):
    (proj.path / MODEL).parent.mkdir(parents=True)
    (proj.path / MODEL).write_text('{"models": [{"name": "quadratic"}]}')
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(["*fitted model: *fake-fake-1-fp16.model.json: models[[]0[]]: unknown model name 'quadratic'*joules fit*"])


def test_joules_json_holds_every_measurement_in_the_results_schema(proj):
    write_model(proj)
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=6)
    result = proj.runpytest("--joules", "--joules-json", "out/energy.json", "--joules-sim-slowdown", "1.02")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*results written to out/energy.json*"])
    data = json.loads((proj.path / "out/energy.json").read_text())
    assert data["schema"] == SCHEMA and data["simulated"] is True and data["meter"] == "fake"
    assert data["engine"]["kind"] == "fake" and data["device"]["gpu"] == "FakeGPU 80GB"
    assert [m["name"] for m in data["models"]] == ["memflops"]
    assert data["session"]["mape_points"] == 5 and data["session"]["model_check"] is None
    chat = next(r for r in data["results"] if r["nodeid"] == "test_energy.py::test_chat")
    assert (chat["n_in"], chat["n_out"], chat["requests"]) == (128, 64, 1)
    assert chat["verdict"]["status"] == "pass" and chat["verdict"]["delta"] == pytest.approx(0.02, abs=0.005)
    assert chat["baseline"] and len(chat["baseline_rounds"]) == 3 and len(chat["rounds"]) == 3
    assert chat["prediction"] == pytest.approx(j_per_token(128, 64)) and chat["model"] == "memflops"
    assert chat["model_error"] == pytest.approx(0.02, abs=0.005)
    # the file is readable by `joules fit` / `joules compare`
    back = read_results(proj.path / "out/energy.json")
    assert len(back.rows) == 6 and back.simulated


def test_an_unwritable_json_path_is_refused_before_measuring_with_the_reason(proj):
    (proj.path / "taken").write_text("a file, not a directory")
    result = proj.runpytest("--joules", "--joules-json", "taken/energy.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "passed" not in result.stdout.str()
    result.stderr.fnmatch_lines(["ERROR: --joules-json *taken/energy.json: cannot write there: *taken is a file, not a directory"])


def test_a_results_file_that_cannot_be_written_at_the_end_fails_the_session_with_the_reason(proj, monkeypatch):
    import pytest_joules.store.results as results

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "atomic_write_json", full)
    result = proj.runpytest("--joules", "--joules-json", "energy.json")
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--joules-json *energy.json: cannot write: *No space left on device*"])
