import json
import math
import numbers
import random
import xml.etree.ElementTree as ET

import pytest

from pytest_joules.report import exporters
from pytest_joules.cli import main
from pytest_joules.errors import DataError
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import read_results, write_results
from pytest_joules.judge.verdict import judge
from pytest_joules.engines.workload import Workload


def make(name, center, *, n=5, noise=0.02, seed=0, n_in=256, n_out=64, simulated=True, valid=True, baseline=None):
    rng = random.Random(seed)
    rounds = [
        Round(joules=center * math.exp(rng.gauss(0, noise)) * n_out, seconds=2.0, reps=1,
              output_tokens=n_out, input_tokens=n_in, valid=valid, problems=[] if valid else ["zero delta"])
        for _ in range(n)
    ]
    m = Measurement(workload=Workload(n_in, n_out), rounds=rounds, engine={"kind": "sim"},
                    device={"gpu": "H100-SXM", "simulated": simulated}, meter="sim", simulated=simulated, name=name)
    if baseline is not None:
        m.baseline_rounds = baseline
        m.verdict = judge(m.round_values, baseline, 0.05)
    return m


@pytest.fixture
def measurements():
    return [
        make("test_short", 0.5, seed=1, baseline=[0.5, 0.5, 0.5]),
        make("test_long[n_in=2048-n_out=64]", 1.5, seed=2, n_in=2048),
        make("test_broken", 1.0, valid=False),
    ]


# -- github-action-benchmark ---------------------------------------------------------------------
def _check_gab_schema(data):
    """The BenchmarkResult interface of github-action-benchmark's src/extract.ts."""
    assert isinstance(data, list)
    for entry in data:
        assert set(entry) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str)
        assert isinstance(entry["value"], numbers.Real) and not isinstance(entry["value"], bool)
        assert isinstance(entry.get("range", ""), str) and isinstance(entry.get("extra", ""), str)


def test_gab_is_custom_smaller_is_better_json(measurements):
    data = exporters.gab_json(measurements)
    _check_gab_schema(json.loads(json.dumps(data)))
    assert [e["name"] for e in data] == ["test_short", "test_long[n_in=2048-n_out=64]"]  # invalid left out
    short = data[0]
    assert short["unit"] == "J/output-token"
    assert short["value"] == pytest.approx(measurements[0].j_per_out_token)
    assert short["range"].startswith("± ")
    assert "n_in=256 n_out=64" in short["extra"] and "rounds: 5" in short["extra"]
    assert "verdict: pass" in short["extra"] and "SIMULATED" in short["extra"]
    assert exporters.unexported(measurements) == ["test_broken"]


def test_gab_range_is_the_median_interval(measurements):
    m = measurements[0]
    values = sorted(m.round_values)
    entry = exporters.gab_json([m])[0]
    half = max(values[-1] - m.j_per_out_token, m.j_per_out_token - values[0])  # 5 rounds: [min, max]
    assert entry["range"] == f"± {half:.4g}"
    single = exporters.gab_json([make("one", 1.0, n=1)])[0]
    assert "range" not in single  # one round has no interval


def test_repeated_names_do_not_overwrite_each_other():
    ms = [make("test_x", 1.0, seed=1), make("test_x", 2.0, seed=2)]
    assert [e["name"] for e in exporters.gab_json(ms)] == ["test_x", "test_x #2"]
    assert list(exporters.bmf_json(ms)) == ["test_x", "test_x #2"]


# -- Bencher -------------------------------------------------------------------------------------
def _check_bmf_schema(data):
    """The BMF JSON schema published at https://bencher.dev/docs/reference/bencher-metric-format."""
    assert isinstance(data, dict)
    for benchmark, measures in data.items():
        assert isinstance(benchmark, str) and benchmark and len(benchmark) <= 1024
        assert isinstance(measures, dict) and measures
        for slug, metric in measures.items():
            assert isinstance(slug, str) and 0 < len(slug) <= 64
            assert set(metric) <= {"value", "lower_value", "upper_value"} and "value" in metric
            assert all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in metric.values())


def test_bmf_has_energy_measures_with_bounds(measurements):
    data = exporters.bmf_json(measurements)
    _check_bmf_schema(json.loads(json.dumps(data)))
    assert list(data) == ["test_short", "test_long[n_in=2048-n_out=64]"]
    short = data["test_short"]
    j = short["j-per-output-token"]
    values = measurements[0].round_values
    assert j["value"] == pytest.approx(measurements[0].j_per_out_token)
    assert (j["lower_value"], j["upper_value"]) == (min(values), max(values))
    tpj = short["tokens-per-joule"]
    assert tpj["value"] == pytest.approx(1 / j["value"])
    assert tpj["lower_value"] == pytest.approx(1 / j["upper_value"]) and tpj["upper_value"] == pytest.approx(1 / j["lower_value"])
    assert tpj["lower_value"] <= tpj["value"] <= tpj["upper_value"]
    assert short["average-watts"]["value"] == pytest.approx(measurements[0].avg_watts)


def test_bmf_single_round_has_no_bounds():
    data = exporters.bmf_json([make("one", 1.0, n=1, noise=0.0)])
    assert data["one"]["j-per-output-token"] == {"value": pytest.approx(1.0)}


def test_a_results_file_exports_the_same_as_its_measurements(measurements, tmp_path):
    path = tmp_path / "results.json"
    write_results(path, measurements)
    results = read_results(path)
    assert exporters.bmf_json(results) == exporters.bmf_json(measurements)
    assert exporters.gab_json(results) == exporters.gab_json(measurements)
    assert exporters.markdown_summary(results) == exporters.markdown_summary(measurements)


def test_exporters_refuse_what_they_cannot_read():
    with pytest.raises(TypeError, match="cannot export a dict"):
        exporters.gab_json([{"name": "x"}])


# -- JUnit XML -----------------------------------------------------------------------------------
def test_junit_properties_are_prefixed_pairs(measurements):
    props = dict(exporters.junit_properties(measurements[0]))
    assert props["joules_j_per_out_token"] == pytest.approx(measurements[0].j_per_out_token)
    assert props["joules_n_in"] == 256 and props["joules_n_out"] == 64 and props["joules_rounds"] == 5
    assert props["joules_verdict"] == "pass" and props["joules_simulated"] == "true"
    assert "joules_baseline_delta" in props
    broken = dict(exporters.junit_properties(measurements[2]))
    assert "joules_j_per_out_token" not in broken  # no value, no property: never a fake 0


def test_junit_properties_land_in_the_xml_report(pytester):
    pytester.makepyfile(
        """
        from pytest_joules.report.exporters import junit_properties
        from pytest_joules.measure.measurement import Measurement, Round
        from pytest_joules.engines.workload import Workload

        def test_energy(record_property):
            m = Measurement(
                workload=Workload(128, 32),
                rounds=[Round(joules=j, seconds=1.0, reps=1, output_tokens=32, input_tokens=128) for j in (32.0, 33.6, 32.8)],
                engine={}, device={}, meter="fake", simulated=True, name="test_energy",
            )
            for name, value in junit_properties(m):
                record_property(name, value)
        """
    )
    # -p no:joules: this checks junitxml, independently of the plugin being built beside it.
    # Per-test <properties> belong to the xunit1 schema; under pytest's default xunit2 they are
    # still written, with a PytestWarning (pytest's own rule for record_property).
    result = pytester.runpytest("-p", "no:joules", "-o", "junit_family=xunit1", "--junitxml=report.xml")
    result.assert_outcomes(passed=1)
    assert "incompatible with junit_family" not in result.stdout.str()
    case = ET.parse(pytester.path / "report.xml").getroot().find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert float(props["joules_j_per_out_token"]) == pytest.approx(32.8 / 32)  # the median round
    assert props["joules_n_in"] == "128" and props["joules_rounds"] == "3" and props["joules_simulated"] == "true"


# -- Markdown and the GitHub step summary ----------------------------------------------------------
def test_markdown_summary_is_a_table(measurements):
    text = exporters.markdown_summary(measurements)
    lines = text.splitlines()
    assert lines[0] == "### pytest-joules energy (SIMULATED)"
    header = next(i for i, line in enumerate(lines) if line.startswith("| test |"))
    assert lines[header + 1].startswith("|---|")
    rows = [line for line in lines[header + 2:] if line.startswith("|")]
    assert len(rows) == 3
    assert all(row.count("|") - row.count("\\|") == 10 for row in rows)  # 9 cells each
    assert "| test_short | 256 | 64 |" in rows[0] and rows[0].endswith("| pass |")
    assert "| test_broken |" in rows[2] and "| - |" in rows[2]
    assert "3 result(s): 1 pass" in text


def test_markdown_escapes_pipes_in_names():
    text = exporters.markdown_summary([make("test_a|b", 1.0)])
    assert "| test_a\\|b |" in text


def test_real_results_have_no_simulated_title():
    assert exporters.markdown_summary([make("t", 1.0, simulated=False)]).startswith("### pytest-joules energy\n")


def test_step_summary_is_appended_not_overwritten(measurements, tmp_path):
    summary = tmp_path / "step_summary.md"
    summary.write_text("## Unit tests\n\nall green\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert exporters.append_step_summary(measurements[:1], environ=env) == summary
    assert exporters.append_step_summary(measurements[1:], title="second run", environ=env) == summary
    text = summary.read_text()
    assert text.startswith("## Unit tests\n\nall green\n")
    assert text.index("### pytest-joules energy") < text.index("### second run")
    assert "test_short" in text and "test_broken" in text


def test_step_summary_does_nothing_when_unset(measurements, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert exporters.append_step_summary(measurements) is None
    assert exporters.append_step_summary(measurements, environ={"GITHUB_STEP_SUMMARY": ""}) is None
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "from_env.md"))
    assert exporters.append_step_summary(measurements) == tmp_path / "from_env.md"


def test_an_unwritable_step_summary_names_the_variable(measurements, tmp_path):
    with pytest.raises(DataError, match="GITHUB_STEP_SUMMARY=.*cannot append"):
        exporters.append_step_summary(measurements, environ={"GITHUB_STEP_SUMMARY": str(tmp_path)})


# -- joules export ---------------------------------------------------------------------------------
@pytest.fixture
def results_file(measurements, tmp_path):
    path = tmp_path / "results.json"
    write_results(path, measurements)
    return str(path)


def test_export_gab_and_bmf_to_stdout(results_file, capsys):
    assert main(["export", results_file, "--format", "gab"]) == 0
    out, err = capsys.readouterr()
    _check_gab_schema(json.loads(out))
    assert "left out 1 result(s) with no valid measurement: test_broken" in err
    assert main(["export", results_file, "--format", "bmf"]) == 0
    _check_bmf_schema(json.loads(capsys.readouterr().out))


def test_export_to_a_file(results_file, tmp_path, capsys):
    out = tmp_path / "out" / "bmf.json"
    assert main(["export", results_file, "--format", "bmf", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == exporters.bmf_json(read_results(results_file))


def test_export_markdown_appends_on_request(results_file, tmp_path, capsys):
    target = tmp_path / "summary.md"
    target.write_text("before\n")
    assert main(["export", results_file, "--format", "markdown", "--out", str(target), "--append"]) == 0
    text = target.read_text()
    assert text.startswith("before\n") and "### pytest-joules energy: results.json (SIMULATED)" in text
    assert main(["export", results_file, "--format", "markdown", "--out", str(target)]) == 0
    assert not target.read_text().startswith("before")


def test_export_refuses_appending_json(results_file, tmp_path, capsys):
    assert main(["export", results_file, "--format", "gab", "--out", str(tmp_path / "x.json"), "--append"]) == 2
    assert "--append needs --format markdown" in capsys.readouterr().err


def test_export_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.json"), "--format", "gab"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json: no such file" in err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "missing.json"), "--format", "xml"])
    assert exc.value.code == 2
