"""Tables that fit 80 and 100 columns without losing or cutting a test's name (issue 13, fix 5)."""

import json
import re

import pytest

from pytest_joules.cli import main
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.report.names import break_name
from pytest_joules.store.results import results_document
from pytest_joules.engines.workload import Workload

from .plugin_fake import project
from .test_plugin_report import write_model

NAMES = [
    "examples/test_chat.py::test_chat_turn",
    "examples/test_code_completion.py::test_complete_token_burst",
    "examples/test_grid.py::test_efficiency_grid[n_in=2048-n_out=1024]",
    "examples/test_summarization.py::test_summarize_email_thread::quarter-length",
]


def _results(path, scale):
    ms = []
    for i, name in enumerate(NAMES):
        w = Workload(512 + i, 128)
        rounds = [Round(joules=scale * (20 + 0.1 * k) * w.output_tokens, seconds=1.0, reps=1,
                        output_tokens=w.output_tokens, input_tokens=w.input_tokens) for k in range(3)]
        ms.append(Measurement(w, rounds, engine={"kind": "sim"}, device={}, meter="sim", simulated=True, name=name))
    path.write_text(json.dumps(results_document(ms)))
    return path


def _unbroken(out: str, name: str) -> bool:
    """Every word of the name is on one line (a break only at '::', '[', '/', '_' or '-')."""
    return all(word in out for word in re.split(r"::|[\[\]/]|(?<=_)|(?<=-)", name) if word)


@pytest.mark.parametrize("columns", [80, 100])
def test_compare_fits_the_columns_piped_and_keeps_every_name(capsys, tmp_path, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))  # captured stdout is no terminal: COLUMNS decides
    old, new = _results(tmp_path / "old.json", 1.0), _results(tmp_path / "new.json", 1.01)
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    table = out[:out.index(" compared")]
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()[1:]) <= columns  # the first line is the files' paths
    for name in NAMES:
        assert _unbroken(table, name), name
    if columns == 100:
        assert "test_complete_token_burst" in table and "[n_in=2048-n_out=1024]" in table


def test_break_name_breaks_between_words_only():
    assert break_name("test_efficiency_grid[n_in=2048-n_out=1024]", 30) == "test_efficiency_grid\n[n_in=2048-n_out=1024]"
    assert break_name("test_summarize_email_thread::quarter-length", 30) == "test_summarize_email_thread\n::quarter-length"
    assert "n_\nout" not in break_name("test_efficiency_grid[n_in=2048-n_out=1024]", 12)


TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_complete_token_burst_with_a_long_name(joules):
    joules()

@pytest.mark.energy(n_in=256, n_out=64)
def test_summarize_email_thread(joules):
    joules()
    joules(n_in=128, name="quarter-length")
"""


@pytest.mark.parametrize("columns", [80, 100])
def test_the_plugin_summary_fits_and_breaks_no_name_mid_word(pytester, monkeypatch, columns):
    proj = project(pytester, monkeypatch)
    proj.makepyfile(test_energy=TESTS)
    write_model(proj)
    monkeypatch.setenv("COLUMNS", str(columns))
    # --color=yes: a terminal's output, where the closing sentences wrap between words
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in proj.runpytest("--joules", "--color=yes").stdout.lines]
    start = next(i for i, line in enumerate(lines) if "J/tok" in line)
    table = lines[start:next(i for i in range(start, len(lines)) if not lines[i].strip())]
    text = "\n".join(table)
    assert max(len(line) for line in table) <= columns
    long_name = "test_complete_token_burst_with_a_long_name"
    # whole where it fits (not "test_complete_token_b" / "urst"); else broken between its words only
    assert long_name in text if columns == 100 else _unbroken(text, long_name)
    # the second measurement is a row of its own test, labelled, not an orphan line
    labelled = [i for i, line in enumerate(table) if "quarter-length" in line]
    assert len(labelled) == 1
    row = table[labelled[0]]
    assert "test_summarize_email_thread::quarter-length" in row or (
        row.strip() == "::quarter-length" and "test_summarize_email_thread" in table[labelled[0] - 1])
    mape = [line for line in lines if "session MAPE" in line or "measurements" in line]
    assert any("session MAPE" in line for line in mape)
    assert all(len(line) <= columns for line in mape)
    words = " ".join(lines).split()
    assert "measurements" in words and "MAPE" in words  # wrapped between words, not inside one
