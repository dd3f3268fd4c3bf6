"""Careless and hostile inputs outside the baseline store (issue 15): rich markup in ids and file
names, deeply nested JSON for every command, writes to links, pipes and devices, numbers beyond
double precision, stacked markers and reused measurement names, endless workloads, and
hand-edited flags and figures. Each is one line naming the thing and the fix, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from pytest_joules.models.analytical import FittedModel
from pytest_joules.cli import main
from pytest_joules.errors import DataError
from pytest_joules.measure import measure
from pytest_joules.store.results import SCHEMA, atomic_write_json, read_results, write_results
from pytest_joules.engines.workload import Workload

from .fakes import FakeEngine, FakeMeter
from .plugin_fake import BASELINE, project

THETA = [0.05, 2e-7, 1e-5, 3e-4, 2e-5, 1.5]


@pytest.fixture
def proj(pytester, monkeypatch):
    return project(pytester, monkeypatch)


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, command):
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith(f"joules {command}: error: "), err


def results_file(tmp_path, name="r.json", **row_changes):
    engine = FakeEngine()
    rows = []
    for n_in, n_out in ((64, 64), (128, 64), (64, 128), (128, 128), (256, 64), (64, 256), (256, 256)):
        m = measure(engine, FakeMeter(engine), Workload(n_in, n_out), rounds=2, name=f"t[{n_in}-{n_out}]")
        rows.append(m)
    path = tmp_path / name
    write_results(path, rows)
    if row_changes:
        data = json.loads(path.read_text())
        data["results"][0].update(row_changes)
        path.write_text(json.dumps(data))
    return path


# -- 1. rich markup in ids, names and paths ----------------------------------------------------------
def test_ids_with_rich_markup_are_shown_verbatim_and_the_run_passes(proj, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    proj.makepyfile(test_tags="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        @pytest.mark.parametrize("tag", ["[/]", "[/bold]", "[bold]x"])
        def test_tag(joules, tag):
            joules()
        """)
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert "MarkupError" not in out
    for tag in ("test_tag[[/]]", "test_tag[[/bold]]", "test_tag[[bold]x]"):
        assert tag in out  # in the table, and in the "new" list below it


def test_fit_and_sweetspot_show_a_file_name_with_markup_verbatim(capsys, tmp_path):
    path = tmp_path / "[bold]grid.csv"
    rows = ["n_in,n_out,j_per_out_token"]
    model = FittedModel("memflops", tuple(THETA), 0.0, None, 1, (64, 512), (64, 512))
    rows += [f"{n},{m},{model.predict(n, m)!r}" for n in (64, 128, 256, 512) for m in (64, 128, 256, 512)]
    path.write_text("\n".join(rows) + "\n")
    saved = tmp_path / "[bold]m.json"
    code, out, err = cli(capsys, "fit", path, "--fit", "memflops", "--save", saved)
    assert code == 0, err
    assert "[bold]grid.csv" in out and f"saved 1 model(s) to {saved}" in out.replace("\n", "")
    code, out, err = cli(capsys, "sweetspot", saved, "--n-in", 128)
    assert code == 0, err
    assert "[bold]m.json" in out


# -- 2. deeply nested JSON in every command ----------------------------------------------------------
DEEP = "[" * 100000 + "]" * 100000


@pytest.mark.parametrize("command, argv", [
    ("fit", ["FILE"]),
    ("compare", ["FILE", "OTHER"]),
    ("compare", ["OTHER", "FILE"]),
    ("export", ["FILE", "--format", "gab"]),
    ("sweetspot", ["FILE", "--n-in", "64"]),
])
def test_deeply_nested_json_is_one_line_in_every_command(capsys, tmp_path, command, argv):
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    other = results_file(tmp_path)
    args = [str(deep) if a == "FILE" else str(other) if a == "OTHER" else a for a in argv]
    code, out, err = cli(capsys, command, *args)
    one_line_error(code, out, err, command)
    assert f"{deep}: JSON nested more than 100 levels deep" in err


def test_json_nested_below_the_parsers_limit_is_refused_too(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": SCHEMA, "results": [], "models": json.loads("[" * 800 + "]" * 800)}))
    with pytest.raises(DataError, match="nested more than 100 levels deep"):
        read_results(path)


# -- 5. writes to links, pipes and devices -----------------------------------------------------------
def test_a_json_write_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "shared" / "out.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    atomic_write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    dangling = tmp_path / "new.json"
    dangling.symlink_to(target.parent / "new-target.json")
    atomic_write_json(dangling, {"b": 2})  # like open(..., "w"): creates the target
    assert dangling.is_symlink() and json.loads((target.parent / "new-target.json").read_text()) == {"b": 2}


def test_a_json_write_to_a_named_pipe_streams_and_keeps_the_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_json(fifo, {"a": 1})
    reader.join(10)
    assert got and json.loads(got[0]) == {"a": 1}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root (the outside test ran as root)")
def test_a_json_write_to_a_character_device_writes_to_it_and_never_replaces_it(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
    atomic_write_json(null, {"a": 1})
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # /dev/full: every write fails
    with pytest.raises(OSError) as info:
        atomic_write_json(full, {"a": 1})
    assert "No space left" in str(info.value)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_json_write_to_a_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory; refusing to replace it"):
        atomic_write_json(tmp_path, {"a": 1})


def test_joules_json_to_a_pipe_streams_into_it(proj, tmp_path):
    proj.makepyfile(test_one="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        def test_one(joules):
            joules()
        """)
    fifo = tmp_path / "results.pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    proj.runpytest("--joules", f"--joules-json={fifo}").assert_outcomes(passed=1)
    reader.join(10)
    assert got and json.loads(got[0])["results"][0]["n_in"] == 16 and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_to_stdout_by_path_writes_to_the_stream(capfd, tmp_path):
    # /dev/stdout is a link to /proc/self/fd/1, as this one is: with stdout redirected to a file
    # (as capfd does) it resolves to a regular file, which must be written to, not replaced
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    results = results_file(tmp_path)
    capfd.readouterr()
    assert main(["export", str(results), "--format", "bmf", "--out", str(stdout)]) == 0
    assert "t[64-64]" in json.loads(capfd.readouterr().out)
    assert stdout.is_symlink()


# -- 6. numbers beyond double precision --------------------------------------------------------------
@pytest.mark.parametrize("value, line", [("1e-320", 3), ("1e300", 3), ("1" + "0" * 400, 3)])
def test_fit_refuses_energies_it_cannot_represent_naming_the_line(capsys, tmp_path, value, line):
    path = tmp_path / "pts.csv"
    rows = ["n_in,n_out,j_per_out_token", "64,64,0.5", f"128,64,{value}", "64,128,0.4", "128,128,0.45"]
    path.write_text("\n".join(rows) + "\n")
    code, out, err = cli(capsys, "fit", path, "--fit", "linear")
    one_line_error(code, out, err, "fit")
    assert f"line {line}: j_per_out_token" in err


@pytest.mark.parametrize("field, value, message", [
    ("j_per_out_token", 10**400, "j_per_out_token must be a positive number"),
    ("n_in", 10**400, "n_in (401 digits) is more than 1e+09 tokens"),
    ("j_per_out_token", 1e300, "outside 1e-15..1e+15 J"),
])
def test_fit_refuses_results_it_cannot_represent_naming_the_row(capsys, tmp_path, field, value, message):
    path = results_file(tmp_path)
    data = json.loads(path.read_text())
    data["results"][0][field] = value
    data["results"][0]["rounds"] = []  # the figure alone, as a hand-edited file may have it
    path.write_text(json.dumps(data))
    code, out, err = cli(capsys, "fit", path)
    one_line_error(code, out, err, "fit")
    assert "results[0]" in err and message in err


def test_sweetspot_never_answers_inf(capsys, tmp_path):
    path = tmp_path / "m.json"
    huge = FittedModel("memflops", (1e300, 1e300, 1e300, 1e300, 1e-300, 1e300), 0.0, None, 9, (64, 512), (64, 512))
    huge.save(path)
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 512, "--json")
    assert code == 0, err
    spot = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in {out}"))["sweet_spots"][0]
    assert spot["n_out_opt"] is None and "overflow double precision" in spot["reason"]
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 512)
    assert code == 0 and "none" in out and "overflow" in out and "inf" not in out
    tiny = FittedModel("flops", (1e-320, 1e-320, 0.0, 0.0, 1e-320), 0.0, None, 9, (64, 512), (64, 512))
    tiny.save(path)  # J/token 1e-320: tokens per joule would be inf
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 512, "--json")
    assert code == 0 and json.loads(out)["sweet_spots"][0]["tokens_per_joule_max"] is None


@pytest.mark.parametrize("theta, message", [
    ([0.05, -2e-7, 1e-5, 3e-4, 2e-5, 1.5], "'theta' must be a list of 6 finite numbers, none negative"),
    ([10**400, 2e-7, 1e-5, 3e-4, 2e-5, 1.5], "'theta' must be a list of 6 finite numbers, none negative"),
])
def test_a_model_file_with_negative_or_unrepresentable_theta_is_refused(capsys, tmp_path, theta, message):
    path = tmp_path / "m.json"
    doc = FittedModel("memflops", tuple(THETA), 0.0, None, 9, (64, 512), (64, 512)).to_dict()
    path.write_text(json.dumps({"models": [{**doc, "theta": theta}]}))
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 128, "--json")
    one_line_error(code, out, err, "sweetspot")
    assert message in err


def test_a_model_file_with_an_integer_beyond_double_precision_is_refused(capsys, tmp_path):
    path = tmp_path / "m.json"
    doc = FittedModel("memflops", tuple(THETA), 0.0, None, 9, (64, 512), (64, 512)).to_dict()
    path.write_text(json.dumps({"models": [{**doc, "mape": 10**400}]}))
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 128)
    one_line_error(code, out, err, "sweetspot")
    assert "'mape' must be a non-negative number" in err


@pytest.mark.parametrize("value", ["1" + "0" * 400, "1" + "0" * 10])
def test_sweetspot_n_in_beyond_any_workload_is_a_usage_error(capsys, tmp_path, value):
    with pytest.raises(SystemExit) as info:
        main(["sweetspot", str(tmp_path / "m.json"), "--n-in", value])
    assert info.value.code == 2
    assert "argument --n-in: expected a positive whole number of tokens" in capsys.readouterr().err


# -- 8. stacked markers, a measurement name used twice ----------------------------------------------
def test_two_energy_markers_on_one_test_are_an_error_naming_it(proj):
    proj.makepyfile(
        test_stacked="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        @pytest.mark.energy(n_in=512, n_out=256)
        def test_stacked(joules):
            joules()
        """,
        test_class="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        class TestBoth:
            @pytest.mark.energy(n_in=32, n_out=8)
            def test_method(self, joules):
                joules()
        """,
        test_param="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        @pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.energy(n_in=64, n_out=8))])
        def test_param(joules, x):
            joules()
        """,
    )
    result = proj.runpytest("--joules", "--continue-on-collection-errors")
    result.assert_outcomes(errors=3)  # two at collection, one at the setup of the parametrized item
    out = result.stdout.str()
    assert ("test_stacked.py::test_stacked: @pytest.mark.energy is applied 2 times (energy(n_in=512, n_out=256); "
            "energy(n_in=16, n_out=8)), stacked or on the test and its class, module or parameter; only the "
            "nearest would count: keep one") in out
    assert "test_class.py::TestBoth::test_method: @pytest.mark.energy is applied 2 times" in out
    assert "test_param.py::test_param[1]: @pytest.mark.energy is applied 2 times" in out
    assert "INTERNALERROR" not in out
    # a typo in a marker is found without --joules too
    assert "test_stacked.py::test_stacked: @pytest.mark.energy is applied 2 times" in proj.runpytest().stdout.str()


def test_one_measurement_name_used_twice_fails_the_test_and_overwrites_nothing(proj):
    proj.makepyfile(test_names="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        def test_twice(joules):
            joules(name="q")
            joules(name="q", n_in=32)

        @pytest.mark.energy(n_in=16, n_out=8)
        def test_auto(joules):
            joules(name="#2")
            joules()
            joules()
        """)
    result = proj.runpytest("--joules", "--joules-update-baselines")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*test_names.py::test_twice: joules(name='q') measures a second time under a key this test already used*",
        "*test_names.py::test_auto: joules(the automatic name '#2') measures a second time*"])
    # a failing test saves no baseline (issue 13), so neither measurement can overwrite the other
    assert not (proj.path / BASELINE).exists()
    result.stdout.fnmatch_lines(["*baselines not saved: the test failed*", "*test_names.py::test_twice::q"])


# -- 9. workloads that would run for hours -----------------------------------------------------------
def test_a_marker_with_too_many_requests_is_a_collection_error_with_the_reason(proj):
    proj.makepyfile(
        test_big="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8, requests=100_000)
        def test_big(joules):
            joules()
        """,
        test_override="""
        import pytest

        @pytest.mark.energy(n_in=16, n_out=8)
        def test_override(joules):
            joules(requests=100_000)
        """,
    )
    result = proj.runpytest("--joules", "--continue-on-collection-errors")
    result.assert_outcomes(failed=1, errors=1)
    out = result.stdout.str()
    assert ("test_big.py::test_big: @pytest.mark.energy requests=100000 is more than 10,000: one workload "
            "runs once per round and cannot be cut short") in out
    assert "test_override.py::test_override: joules() requests=100000 is more than 10,000" in out


def test_sweep_refuses_too_many_requests_up_front(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--n-in", "16", "--n-out", "8", "--requests", "100000000"])
    assert info.value.code == 2
    assert "argument --requests: requests=100000000 is more than 10,000" in capsys.readouterr().err


# -- 10. hand-edited flags and figures ---------------------------------------------------------------
@pytest.mark.parametrize("where, key", [("row", "valid"), ("top", "simulated"), ("round", "valid"),
                                        ("device", "simulated"), ("row", "simulated")])
def test_a_string_where_a_flag_belongs_is_refused(capsys, tmp_path, where, key):
    path = results_file(tmp_path)
    data = json.loads(path.read_text())
    target = {"row": data["results"][0], "top": data, "round": data["results"][0]["rounds"][0],
              "device": data["device"]}[where]
    target[key] = "false"  # read as true before: a non-empty string is truthy
    path.write_text(json.dumps(data))
    for command, extra in (("fit", []), ("export", ["--format", "gab"]), ("compare", [str(results_file(tmp_path, "o.json"))])):
        code, out, err = cli(capsys, command, path, *extra)
        one_line_error(code, out, err, command)
        assert f"'{key}' must be true or false, got 'false'" in err


def test_an_edited_figure_that_disagrees_with_its_rounds_is_refused_saying_which_counts(capsys, tmp_path):
    path = results_file(tmp_path)
    data = json.loads(path.read_text())
    data["results"][0]["j_per_out_token"] *= 0.5
    path.write_text(json.dumps(data))
    code, out, err = cli(capsys, "fit", path)
    one_line_error(code, out, err, "fit")
    assert "results[0]: j_per_out_token" in err and "the rounds are authoritative" in err


def test_a_model_file_saying_simulated_false_as_a_string_is_refused(capsys, tmp_path):
    path = tmp_path / "m.json"
    doc = FittedModel("memflops", tuple(THETA), 0.0, None, 9, (64, 512), (64, 512)).to_dict()
    path.write_text(json.dumps({"models": [doc], "simulated": "false"}))
    code, out, err = cli(capsys, "sweetspot", path, "--n-in", 128)
    one_line_error(code, out, err, "sweetspot")
    assert "'simulated' must be true or false, got 'false'" in err
