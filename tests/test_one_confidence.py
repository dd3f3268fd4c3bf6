"""The plugin, `joules compare` and `Measurement.assert_no_regression` judge the same runs at the
same confidence: the row's stored `confidence`, else 95% (issue 21, item 3). Before, the plugin
judged `auto` rounds at 99.5% and the other two at 95%: 27 of 144 verdicts differed."""

from __future__ import annotations

import json

import pytest

from pytest_joules.cli import main
from pytest_joules.engines.workload import Workload
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.store.results import SCHEMA

from .plugin_fake import TWO_TESTS, project

BASE = [1.0, 1.02, 0.98]
NOW = [1.08, 1.11, 1.05]  # +8%: significant at 95%, not at 99.5% (3 rounds a side)


def _rounds(values):
    return [{"joules": v * 64, "seconds": 1.0, "reps": 1, "output_tokens": 64, "input_tokens": 128,
             "valid": True, "problems": [], "phases": {}} for v in values]


def _file(path, values, confidence):
    row = {"name": "t", "n_in": 128, "n_out": 64, "rounds": _rounds(values), "valid": True}
    if confidence is not None:
        row["confidence"] = confidence
    path.write_text(json.dumps({"schema": SCHEMA, "results": [row], "engine": {}, "device": {}}))
    return path


def _compare(capsys, old, new):
    assert main(["compare", str(old), str(new), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["results"][0]


@pytest.mark.parametrize("confidence, status", [(0.995, "noisy"), (0.95, "regression"), (None, "regression")])
def test_compare_judges_at_the_confidence_the_row_was_judged_at(tmp_path, capsys, confidence, status):
    old = _file(tmp_path / "old.json", BASE, None)
    new = _file(tmp_path / "new.json", NOW, confidence)
    result = _compare(capsys, old, new)
    assert result["status"] == status and result["confidence"] == (confidence or 0.95)


def test_a_confidence_that_is_no_level_is_one_line(tmp_path, capsys):
    old = _file(tmp_path / "old.json", BASE, None)
    new = _file(tmp_path / "new.json", NOW, "high")
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'confidence' must be a number in [0.5, 1)" in err


@pytest.mark.parametrize("confidence, fails", [(0.995, False), (0.95, True)])
def test_assert_no_regression_judges_at_the_measurements_confidence(confidence, fails):
    rounds = [Round(joules=v * 64, seconds=1.0, reps=1, output_tokens=64, input_tokens=128) for v in NOW]
    m = Measurement(Workload(128, 64), rounds, {}, {}, "fake", True, confidence=confidence, baseline_rounds=BASE)
    if fails:
        with pytest.raises(AssertionError, match="energy regression"):
            m.assert_no_regression("5%")
    else:
        assert m.assert_no_regression("5%").status == "noisy"


@pytest.mark.xfail(reason="known since issue 25 merged: the plugin's drift model also judges each test against its "
                          "session's other tests, which `joules compare` does not yet do (docs/drift.md, next step)",
                   strict=False)
def test_the_plugin_and_compare_give_the_same_verdict_for_every_row(pytester, monkeypatch, capsys):
    proj = project(pytester, monkeypatch)
    monkeypatch.setenv("FAKE_JITTER", "0.05")
    proj.makepyfile(test_energy=TWO_TESTS.replace("n_in=[256, 512]", "n_in=[192, 256, 320, 384, 448, 512]"))
    budget = ("--joules-max-seconds", "0.0001")  # three rounds, judged at the first look (99.5%)
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-json=old.json", *budget)
    plugin = {}
    for seed in ("1", "2", "3"):
        # --joules-drift 0: `joules compare` does not yet add the between-session spread (docs/drift.md);
        # this test holds the two to one confidence level on the same rounds
        proj.runpytest("--joules", "--joules-sim-slowdown", "1.10", f"--joules-json=new{seed}.json", "--joules-seed", seed,
                       "--joules-drift", "0", *budget)
        for row in json.loads((proj.path / f"new{seed}.json").read_text())["results"]:
            plugin[(seed, row["name"])] = row["verdict"]["status"]
        capsys.readouterr()  # the inner run's output
        assert main(["compare", str(proj.path / "old.json"), str(proj.path / f"new{seed}.json"), "--json"]) == 0
        for row in json.loads(capsys.readouterr().out)["results"]:
            assert row["status"] == plugin[(seed, row["name"])], row
    assert "noisy" in plugin.values()  # the case where 95% and 99.5% part ways was met
