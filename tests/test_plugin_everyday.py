"""What a new user meets first (issue 13): dry runs, failure lines, new tests in CI, what an
update saves, and the summary's workload columns."""

import json

import pytest

from .plugin_fake import BASELINE, project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    m = joules()
    assert m.j_per_out_token < 10, "the README's kind of budget assertion"

@pytest.mark.energy(n_in=256, n_out=32, requests=4)
def test_served(joules):
    m = joules()
    assert m.tokens_per_joule > 0
"""



@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def _entries(proj):
    path = proj.path / BASELINE
    return json.loads(path.read_text())["entries"] if path.exists() else {}


# -- 2: a dry run skips after the token check -------------------------------------------------------

def test_a_dry_run_checks_the_tokens_then_skips_instead_of_asserting_on_none(proj):
    result = proj.runpytest("--joules", "--joules-meter", "none", "-rs")
    result.assert_outcomes(skipped=2)  # before: 2 failed with TypeError on None
    out = result.stdout.str()
    assert "TypeError" not in out
    result.stdout.fnmatch_lines([
        "joules: engine fake*, dry run: no energy read (meter none)",
        "*dry run: no energy read (meter none): 2 measurement(s) checked their token counts only; their tests were skipped",
        "SKIPPED*dry run: no energy read (meter 'none'): token counts checked (n_in=128-n_out=64, 1 request(s))*",
    ])


def test_a_dry_run_records_no_baseline(proj):
    proj.runpytest("--joules", "--joules-meter", "none", "--joules-update-baselines").assert_outcomes(skipped=2)
    assert _entries(proj) == {}


# -- 6: a failure's first line is the verdict and the change -----------------------------------------

def test_a_regressions_first_line_leads_with_the_verdict_and_the_change_and_is_printed_once(proj, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the short summary cuts its line to the width
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=2)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", "-q", "-rf")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "FAILED test_energy.py::test_chat - Failed: energy regression +10.*% (tolerance 5%): test_chat: J/output-token *",
    ])
    out = result.stdout.str()
    # once in its failure, once (cut to the width) in the short summary; no third copy in ours
    assert out.count("energy regression +") == 4, out
    assert "regressions (" not in out


def test_the_verdict_failure_text_puts_the_change_first():
    from pytest_joules.judge.verdict import REGRESSION, Verdict

    v = Verdict(REGRESSION, current=0.1102, baseline=0.1, delta=0.102, tolerance=0.05, detail="significant: ...",
                ci_low=0.071, ci_high=0.124)
    assert v.failure("test_chat_turn") == (
        "energy regression +10.2% (tolerance 5%): test_chat_turn: J/output-token baseline 0.100, now 0.110\n"
        "  beyond the noise: the rounds put the change between +7.1% and +12.4%")
    # the statistics at -v; a name that would push the first line past 100 characters goes below it
    long = "test_summarize_email_thread[n_in=2048-n_out=128]::quarter-length-of-the-thread"
    text = v.failure(long, verbose=True)
    first, second, _, stats = text.splitlines()
    assert len(first) <= 100 and first.startswith("energy regression +10.2% (tolerance 5%): J/output-token")
    assert second == f"  test: {long}" and stats == "  statistics: significant: ..."
    # a change that would read as the tolerance itself gets a second decimal
    near = Verdict(REGRESSION, current=1.0504, baseline=1.0, delta=0.0504, tolerance=0.05)
    assert near.failure("t").startswith("energy regression +5.04% (tolerance 5%): t:")


# -- 13: --joules-new-fails --------------------------------------------------------------------------

def test_new_fails_turns_a_test_without_baseline_into_a_failure(proj, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    proj.runpytest("--joules").assert_outcomes(passed=2)  # the default: "new" passes
    result = proj.runpytest("--joules", "--joules-new-fails", "-rf")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "joules: *(tests without a baseline fail)*",
        "FAILED test_energy.py::test_chat - Failed: energy new (--joules-new-fails): test_chat: no baseline recorded yet*",
    ])


def test_new_fails_from_the_ini_key_passes_recorded_tests_and_fails_a_renamed_one(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_new_fails="true")
    proj.makepyfile(test_energy=TESTS)
    # recording is what makes a test known: it never fails for being new
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=2)
    proj.runpytest("--joules").assert_outcomes(passed=2)
    proj.makepyfile(test_energy=TESTS.replace("def test_chat(", "def test_chat_renamed("))
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*energy new (--joules-new-fails): test_chat_renamed: *"])


def test_new_fails_rejects_a_bad_ini_value(pytester, monkeypatch):
    proj = project(pytester, monkeypatch, joules_new_fails="sometimes")
    proj.makepyfile(test_energy=TESTS)
    result = proj.runpytest("--joules")
    result.stderr.fnmatch_lines(["*--joules-new-fails: invalid value 'sometimes': give true or false*joules_new_fails*"])


# -- 12: the requests column; an update saves passing tests only -------------------------------------

def test_the_summary_shows_requests_at_100_columns(proj, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # narrower terminals: summary.py's COLUMNS / DROP_ORDER decide
    result = proj.runpytest("--joules")
    result.stdout.fnmatch_lines(["*test *n_in*n_out*reqs*J/tok*", "*test_chat *128*64*1 *", "*test_served *256*32*4 *"])


def test_an_update_does_not_save_the_baseline_of_a_test_whose_assertion_failed(proj):
    proj.makepyfile(test_energy=TESTS.replace("< 10,", "< 0,"))  # test_chat's own budget fails
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(passed=1, failed=1)
    assert set(_entries(proj)) == {"test_energy.py::test_served"}
    result.stdout.fnmatch_lines([
        "*baselines saved to baselines (1):*", "*test_energy.py::test_served",
        "*baselines not saved: the test failed (fix it, then record again) (1):*", "*test_energy.py::test_chat",
    ])
    assert "✓saved" not in [line for line in result.stdout.lines if "test_chat " in line][0]


def test_a_failing_test_keeps_the_baseline_it_had(proj):
    proj.runpytest("--joules", "--joules-update-baselines").assert_outcomes(passed=2)
    before = _entries(proj)["test_energy.py::test_chat"]
    proj.makepyfile(test_energy=TESTS.replace("< 10,", "< 0,"))
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-sim-slowdown", "1.5").assert_outcomes(passed=1, failed=1)
    after = _entries(proj)
    assert after["test_energy.py::test_chat"] == before
    assert after["test_energy.py::test_served"]["j_per_out_token"] > before["j_per_out_token"]  # recorded at 1.5x


@pytest.mark.slow  # starts worker processes
def test_under_xdist_a_failing_tests_baseline_is_not_saved_either(proj):
    pytest.importorskip("xdist")
    proj.makepyfile(test_energy=TESTS.replace("< 10,", "< 0,"))
    result = proj.runpytest_subprocess("--joules", "--joules-update-baselines", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=1, failed=1)
    assert set(_entries(proj)) == {"test_energy.py::test_served"}
    result.stdout.fnmatch_lines(["*baselines not saved: the test failed*", "*test_energy.py::test_chat"])


# -- 4: one tolerance parser, one rule for a bare 5 ---------------------------------------------------

def _three_parsers(value):
    """What --joules-tolerance, the marker and verdict.parse_tolerance (compare, assertions) make of it."""
    from pytest_joules.plugin import marker, options
    from pytest_joules.errors import ConfigError
    from pytest_joules.judge.verdict import parse_tolerance

    out = []
    for parse, errors in ((lambda v: options.parse_fraction("--joules-tolerance", v), pytest.UsageError),
                          (lambda v: marker._fraction("t", "tolerance", v), marker.MarkerError),
                          (parse_tolerance, ConfigError)):
        try:
            out.append(parse(value))
        except errors as exc:
            out.append(("refused", str(exc)))
    return out


@pytest.mark.parametrize("value, expected", [
    ("5%", 0.05), (" 2.5 %", 0.025), ("0.05", 0.05), (0.05, 0.05), ("0", 0.0), (0, 0.0), ("150%", 1.5),
])
def test_the_tolerance_parsers_agree_on_what_they_accept(value, expected):
    assert _three_parsers(value) == [pytest.approx(expected)] * 3


@pytest.mark.parametrize("value", [5, 5.0, "5", 1, "1.5", "-1%", -0.1, "nan", "inf", "five", True])
def test_the_tolerance_parsers_refuse_the_same_values(value):
    results = _three_parsers(value)
    assert all(isinstance(r, tuple) and r[0] == "refused" for r in results), results


@pytest.mark.parametrize("value", [5, "5"])
def test_a_bare_5_is_refused_everywhere_with_the_fix_write_5_percent(value):
    for _, message in _three_parsers(value):
        assert "write 5% for 5 percent" in message, message


def test_an_assertion_with_a_bare_5_is_refused_not_read_as_500_percent():
    from pytest_joules.errors import ConfigError
    from pytest_joules.measure.measurement import Measurement, Round
    from pytest_joules.engines.workload import Workload

    m = Measurement(workload=Workload(64, 32), rounds=[Round(joules=3.2, seconds=1.0, reps=1, output_tokens=32, input_tokens=64)],
                    engine={"kind": "fake"}, device={}, meter="fake", simulated=True, baseline_rounds=[0.05])
    with pytest.raises(ConfigError, match="write 5% for 5 percent"):
        m.assert_no_regression(5)  # before: a 100% rise passed a "500%" gate


# -- 3: one precision, one rule at the tolerance ------------------------------------------------------

GRID = """
import pytest

@pytest.mark.energy(n_in=[64, 128, 256, 512], n_out=[32, 64, 128])
def test_grid(joules):
    joules()
"""


def test_the_plugin_and_compare_agree_on_a_change_of_exactly_the_tolerance(pytester, monkeypatch, capsys):
    """1.03x slower with the same seed: every round is exactly 3% dearer, which a 3% gate passes.
    Before, baselines kept 6 digits, so about half the tests failed in the plugin and passed in compare."""
    from pytest_joules.cli import main

    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_energy=GRID)
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-json", "old.json").assert_outcomes(passed=12)
    result = proj.runpytest("--joules", "--joules-sim-slowdown", "1.03", "--joules-tolerance", "3%", "--joules-json", "new.json")
    plugin = {r["key"]: r["verdict"]["status"] for r in json.loads((proj.path / "new.json").read_text())["results"]}
    capsys.readouterr()
    main(["compare", str(proj.path / "old.json"), str(proj.path / "new.json"), "--tolerance", "3%", "--json"])
    compare = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)["results"]}
    assert plugin == compare
    assert set(plugin.values()) == {"pass"}
    result.assert_outcomes(passed=12)


def test_the_store_keeps_the_rounds_it_was_given_exactly(tmp_path):
    from pytest_joules.store.baselines import BaselineStore
    from pytest_joules.engines.workload import Workload

    fp = {"device": {"gpu": "FakeGPU", "simulated": True}, "engine": {"kind": "fake", "model": "m"}}
    rounds = [0.1234567891234, 0.12345678, 1 / 3]
    store = BaselineStore(tmp_path)
    store.record(fp, "t::a", Workload(64, 32), rounds, 0.01)
    found = BaselineStore(tmp_path).lookup(fp, "t::a", Workload(64, 32))
    assert found.entry.rounds == rounds and found.entry.j_per_out_token == sorted(rounds)[1]


# -- 7: rows under -n 2 in the order of a run without it ----------------------------------------------

ORDER = """
import pytest

@pytest.mark.energy(n_in=[128, 1024], n_out=[64, 256, 1024])
def test_grid(joules):
    joules()

@pytest.mark.energy(n_in=64, n_out=32)
def test_after(joules):
    joules()
    joules(name="second")
"""


def _rows(result):
    return [line.split()[:3] for line in result.stdout.lines if line.startswith(" test_")]  # the table's rows


@pytest.mark.slow  # starts worker processes
def test_under_xdist_the_summary_lists_tests_as_a_run_without_it(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("COLUMNS", "120")
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_energy=ORDER)
    alone = proj.runpytest_subprocess("--joules", "-p", "no:xdist")
    alone.assert_outcomes(passed=7)
    expected = _rows(alone)
    assert [r[1:] for r in expected[:6]] == [["128", "64"], ["128", "256"], ["128", "1024"],
                                             ["1024", "64"], ["1024", "256"], ["1024", "1024"]]
    assert len(expected) == 8 and all(r[0].startswith("test_after") for r in expected[6:])
    parallel = proj.runpytest_subprocess("--joules", "-n", "2")
    parallel.assert_outcomes(passed=7)
    assert _rows(parallel) == expected  # before: 128/1024 before 128/256, as text sorts


def test_without_collection_order_node_ids_sort_with_numbers_as_numbers():
    from pytest_joules.plugin.options import JoulesOptions
    from pytest_joules.plugin.session import JoulesSession

    from pytest_joules.store.record import ResultRecord

    recording = JoulesSession(JoulesOptions()).recording
    ids = ["t.py::g[n_in=128-n_out=1024]", "t.py::g[n_in=128-n_out=256]", "t.py::g[n_in=16-n_out=64]"]
    records = [ResultRecord(name=i, n_in=1, n_out=1, nodeid=i) for i in ids]
    assert [r.nodeid for r in sorted(records, key=recording.record_order)] == [ids[2], ids[1], ids[0]]
