"""`joules report`: the Markdown of a pull-request comment, from a run's own verdicts or judged
against another file (a baseline file too), within GitHub's comment size, behind its marker."""

from __future__ import annotations

import json

from pytest_joules.cli import main
from pytest_joules.report.comment import LIMIT, MARKER, CommentContext, CommentRow, comment_markdown
from pytest_joules.store.results import write_results

from .test_cli_compare import make


def report(capsys, *args):
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_regression_leads_with_its_change_interval_and_tolerance(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    write_results(old, [make("t.py::test_a", 1.0, seed=1), make("t.py::test_b", 2.0, seed=2)])
    write_results(new, [make("t.py::test_a", 1.12, seed=3), make("t.py::test_b", 2.0, seed=4)])
    code, out, _ = report(capsys, str(new), "--against", str(old))
    assert code == 0 and out.startswith(MARKER + "\n")
    lines = out.splitlines()
    assert lines[1] == "### Energy per output token: 1 regression, 1 passed"
    assert "tolerance (5%)" in out
    row = next(line for line in lines if "`t.py::test_a`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["512→128 ×1", "1.12", "1.00", "+12.0%"] and cells[-1] == "**regression**"
    low, high = (float(x.rstrip("%")) for x in cells[5].split(" to "))
    assert low < 12.0 < high  # the range the rounds allow, around the change
    # passes folded under the regressions
    assert out.index("`t.py::test_a`") < out.index("<details>") < out.index("`t.py::test_b`")


def test_a_baseline_file_is_either_side(tmp_path, capsys):
    """The committed baselines as OLD: what CI judges a pull request's run against."""
    store = tmp_path / "base.json"
    store.write_text(json.dumps({
        "schema": "pytest-joules/baselines/1",
        "fingerprint": {"device": {"gpu": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0, "driver": "550.54",
                                   "cuda": "12.4", "simulated": False},
                        "engine": {"kind": "trtllm", "model": "llama-3-8b", "dtype": "bf16", "version": "1.2.0"}},
        "entries": {"t.py::test_a": {"workload": {"n_in": 512, "n_out": 128, "requests": 1, "max_batch_size": None,
                                                  "seed": 0},
                                     "rounds": [1.0, 1.01, 0.99], "j_per_out_token": 1.0, "spread": 0.02,
                                     "recorded": "2026-01-01T00:00:00+00:00"}}}))
    new = tmp_path / "new.json"
    write_results(new, [make("t.py::test_a", 1.12, seed=3)])
    code, out, _ = report(capsys, str(new), "--against", str(store))
    assert code == 0 and "**regression**" in out and f"against {store}" in out
    assert main(["compare", str(store), str(new), "--fail"]) == 1
    assert main(["compare", str(new), str(store)]) == 0  # and as NEW: an improvement, not a failure
    capsys.readouterr()


def test_the_comment_stays_within_githubs_limit():
    rows = [CommentRow(f"tests/test_energy.py::test_case_{i:05d}[some-long-parameter-id-{i}]", 512, 256, 16, 0.17,
                       "pass", baseline=0.17, delta=0.001, ci_low=-0.01, ci_high=0.012, tolerance=0.05)
            for i in range(2000)]
    rows.append(CommentRow("tests/test_energy.py::test_slow", 512, 256, 16, 0.19, "regression", baseline=0.17,
                           delta=0.1, ci_low=0.07, ci_high=0.13, tolerance=0.05))
    text = comment_markdown(rows, CommentContext(simulated=True))
    assert len(text) <= LIMIT + 1 and text.startswith(MARKER)
    assert "test_slow" in text and "left out to fit GitHub's comment size" in text
    assert "SIMULATED" in text.splitlines()[1]


def test_latency_gets_a_column_only_where_measured():
    base = dict(n_in=512, n_out=256, requests=16, j_per_out_token=0.17, status="pass")
    without = comment_markdown([CommentRow("t", **base)], CommentContext())
    assert "latency" not in without
    with_latency = comment_markdown([CommentRow("t", **base, latency="TTFT 41.0 ms · TPOT 12.0 ms")], CommentContext())
    assert "| latency |" in with_latency and "TTFT 41.0 ms · TPOT 12.0 ms" in with_latency


def test_out_writes_the_file_and_a_missing_run_is_one_line(tmp_path, capsys, monkeypatch):
    new = tmp_path / "new.json"
    write_results(new, [make("t.py::test_a", 1.0, seed=3)])
    out_file = tmp_path / "comment.md"
    code, out, err = report(capsys, str(new), "--out", str(out_file))
    assert code == 0 and out == "" and out_file.read_text().startswith(MARKER) and "wrote the comment" in err
    monkeypatch.chdir(tmp_path)
    code, _, err = report(capsys, "last")
    assert code == 2 and err.count("\n") == 1 and "--joules-autosave" in err
