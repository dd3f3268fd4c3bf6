"""The real measurements under data/: each set documented, indexed, and still readable by the
project's commands with the figures its README states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_joules.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"
SETS = sorted(p for p in DATA.iterdir() if p.is_dir())


def test_there_is_real_data():
    assert [p.name for p in SETS] and (DATA / "h200-hf-llama") in SETS


@pytest.mark.parametrize("folder", SETS, ids=lambda p: p.name)
def test_every_set_has_a_readme_with_card_driver_software_and_commands_and_is_indexed(folder):
    text = (folder / "README.md").read_text()
    for words in ("driver", "torch", "transformers", "joules "):
        assert words in text, f"{folder.name}/README.md does not say {words!r}"
    assert f"]({folder.name}/README.md)" in (DATA / "README.md").read_text()


def test_joules_fit_on_the_h200_sweep_gives_the_figures_its_readme_states(capsys):
    """data/h200-hf-llama/README.md: Memory+FLOPs MAPE 8.3% (LOO 18.2%), FLOPs 8.5% (LOO 14.9%),
    linear 13.8% (LOO 16.1%) over the 12-point Llama-3.2-1B sweep."""
    assert main(["fit", str(DATA / "h200-hf-llama" / "sweep-llama-3.2-1b.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["simulated"] is False
    got = {m["name"]: (round(100 * m["mape"], 1), round(100 * m["loo_mape"], 1)) for m in doc["models"]}
    assert got == {"memflops": (8.3, 18.2), "flops": (8.5, 14.9), "linear": (13.8, 16.1)}
    readme = (DATA / "h200-hf-llama" / "README.md").read_text()
    assert "Memory+FLOPs MAPE 8.3% (LOO 18.2%), FLOPs 8.5%\n  (LOO 14.9%), linear 13.8% (LOO 16.1%)" in readme


def test_joules_fit_refuses_the_two_point_8b_sweep_in_one_line(capsys):
    assert main(["fit", str(DATA / "h200-hf-llama" / "sweep-llama-3.1-8b.json")]) == 2
    err = capsys.readouterr().err
    assert "2 distinct (n_in, n_out) points" in err and "Traceback" not in err and err.count("\n") == 1
