"""Quiet diffs: `--joules-update-baselines` changes only the entries whose energy changed, and
every other entry (its floats, its seed, its date) stays byte for byte as it was."""

import json

import pytest

from .plugin_fake import BASELINE, project

TESTS = """
import pytest

@pytest.mark.energy(n_in=128, n_out=64)
def test_chat(joules):
    joules()

@pytest.mark.energy(n_in=[256, 512], n_out=32)
def test_grid(joules):
    joules()
"""


@pytest.fixture
def proj(pytester, monkeypatch):
    p = project(pytester, monkeypatch)
    p.makepyfile(test_energy=TESTS)
    return p


def entry_text(text: str, key: str) -> str:
    """The exact text of one entry in the written file."""
    start = text.index(json.dumps(key) + ": {")
    return text[start:text.index("\n    }", start)]


def test_rerecording_an_unchanged_suite_changes_no_byte(proj):
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-seed", "1").assert_outcomes(passed=3)
    path = proj.path / BASELINE
    before = path.read_bytes()
    # another seed (another prompt draw, other noise): every test passes against its baseline, so no entry moves
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-seed", "2")
    result.assert_outcomes(passed=3)
    assert path.read_bytes() == before
    result.stdout.fnmatch_lines(["*baselines kept for 3 test(s) whose energy did not change*"])


def test_only_the_changed_entry_is_rewritten(proj):
    proj.runpytest("--joules", "--joules-update-baselines", "--joules-seed", "1").assert_outcomes(passed=3)
    path = proj.path / BASELINE
    before = path.read_text()
    keys = list(json.loads(before)["entries"])
    result = proj.runpytest("--joules", "--joules-update-baselines", "--joules-seed", "2",
                            "--joules-sim-slowdown", "1.2", "-k", "chat")
    result.assert_outcomes(passed=1, deselected=2)
    after = path.read_text()
    changed = [k for k in keys if entry_text(before, k) != entry_text(after, k)]
    assert changed == ["test_energy.py::test_chat"]
    # outside that entry the file is the same text: a diff of the one entry only
    cut = lambda text: text.replace(entry_text(text, "test_energy.py::test_chat"), "")  # noqa: E731
    assert cut(before) == cut(after)
