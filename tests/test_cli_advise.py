"""A fitted model applied to mixes (models/mix.py) and `joules advise` (cli/advise.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_joules.cli import main
from pytest_joules.models import uncertainty
from pytest_joules.models.analytical import best_model, load_models
from pytest_joules.models.mix import Lengths, MixModel, advise, default_levels, percentile, predict

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "baselines/h100-sxm-simulated/sim-llama-3-1-8b-bf16-graphs.model.json"
BATCH4 = ROOT / "examples/mixes/sim-llama-3-1-8b-batch4.model.json"
CHAT = ROOT / "examples/mixes/chat.jsonl"


@pytest.fixture(scope="module")
def mm():
    model = best_model(load_models(MODEL))
    return MixModel(model, uncertainty.load(MODEL)[model.name])


def test_a_mix_of_one_length_is_the_point_and_a_mix_weights_by_output_tokens(mm):
    model = mm.model
    assert predict(model, [(512, 256)] * 5) == pytest.approx(model.predict(512, 256))
    # two requests: the energy of both over their output tokens, not the mean of J/token
    e = model.predict(128, 1024) * 1024 + model.predict(2048, 64) * 64
    assert predict(model, [(128, 1024), (2048, 64)]) == pytest.approx(e / (1024 + 64))
    weighted = Lengths.of([(128, 1024, 3), (2048, 64, 1)])
    assert mm.j_per_output_token(weighted).value == pytest.approx(predict(model, [(128, 1024)] * 3 + [(2048, 64)]))


def test_bands_hold_the_value_and_a_policys_change_is_paired(mm):
    mix = Lengths.of([(128, 256, 3), (512, 512, 2), (3000, 128, 1)])
    j = mm.j_per_output_token(mix)
    assert j.low < j.value < j.high
    cut = mm.change(mix, mix.capped(n_in=512), per_token=True)
    assert cut.value < 0 and cut.low <= cut.value <= cut.high
    same = mm.change(mix, mix, per_token=True)
    assert same.value == 0 and same.low == pytest.approx(0, abs=1e-12) and same.high == pytest.approx(0, abs=1e-12)
    # capping outputs: energy per request falls with the tokens; J per output token need not
    capped = mix.capped(n_out=128)
    assert mm.change(mix, capped, per_token=False).value < mm.change(mix, capped, per_token=True).value


def test_default_levels_are_powers_of_two_that_cut_something():
    values = np.array([100.0, 200, 300, 900, 3000])
    weights = np.ones(5)
    assert percentile(values, weights, 50) == 300 and percentile(values, weights, 90) == 3000
    assert default_levels(values, weights) == [2048, 256]
    assert default_levels(np.array([64.0, 64.0]), np.ones(2)) == []  # nothing above the percentiles to cut


def test_advice_splits_the_energy_by_band_and_flags_extrapolation(mm):
    mix = Lengths.of([(128, 256, 1), (8000, 16, 1)])
    a = advise(mm, mix, truncate=[1024], cap=[128])
    assert sum(r.energy for r in a.bands) == pytest.approx(1.0)
    assert {(r.n_in, r.n_out) for r in a.bands} == {("≤128", "129–512"), (">8192" if False else "2049–8192", "≤128")}
    assert 0 < a.outside < 1  # the 8000/16 request lies outside the fitted 64-4096 box
    assert [p.name for p in a.policies] == ["inputs ≤ 1024", "outputs ≤ 128"]
    assert a.policies[1].tokens_kept == pytest.approx((128 + 16) / (256 + 16))


def run(capsys, *args):
    code = main(["advise", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_advise_on_the_chat_mix(capsys, tmp_path):
    code, out, err = run(capsys, CHAT, "--model", MODEL, "--price", "0.15", "--cap-outputs", "512",
                         "--truncate-inputs", "512", "--batch-model", BATCH4, "--plot", tmp_path / "a.png")
    assert code == 0, err
    assert out.startswith("SIMULATED Energy of the mix chat.jsonl (200 rows, 200 lengths)")
    for words in ("J per output token      0.", "J per request", "kWh", "at 0.15/kWh",
                  "from the 200 bootstrap replicates", "Energy by length band", "inputs ≤ 512", "outputs ≤ 512",
                  "batch ≤ 4", "21% of replies", f"wrote plot to {tmp_path / 'a.png'}"):
        assert words in out
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_advise_json_has_every_figure_with_its_band(capsys):
    code, out, _ = run(capsys, CHAT, "--model", MODEL, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["simulated"] is True and doc["model"] == "flops"
    j = doc["j_per_out_token"]
    assert j["low"] < j["value"] < j["high"] and doc["cost_per_1m_output_tokens"] is None
    assert [p["policy"] for p in doc["policies"]] == ["inputs ≤ 512", "inputs ≤ 128", "outputs ≤ 512", "outputs ≤ 256"]
    assert all(p["change_energy_per_request"]["low"] is not None for p in doc["policies"])
    assert "batch cap: give --batch-model" in doc["notes"][0]


def test_without_replicates_the_band_is_bootstrapped_from_the_models_points_or_said_to_be_missing(capsys, tmp_path):
    data = json.loads(MODEL.read_text())
    for m in data["models"]:
        m.pop("uncertainty", None)
    data["source"] = str(ROOT / data["source"])
    bare = tmp_path / "bare.model.json"
    bare.write_text(json.dumps(data))
    _, out, _ = run(capsys, CHAT, "--model", bare, "--json")
    assert "bootstrapped now from" in json.loads(out)["band"]
    data["source"] = "gone.json"
    bare.write_text(json.dumps(data))
    _, out, _ = run(capsys, CHAT, "--model", bare, "--json")
    doc = json.loads(out)
    assert doc["band"].startswith("none: bare.model.json keeps no bootstrap replicates") and doc["j_per_out_token"]["low"] is None


@pytest.mark.parametrize("setup, args, words", [
    ("empty.csv", (), "mix file {mix}: is empty"),
    ("neg.csv", (), "line 2: weight '0' must be a positive number"),
    ("ok.csv", ("--context", "1000"), r"1 length\(s\) exceed the context of 1000 tokens \(the longest: n_in \+ n_out = 900 \+ 200 = 1100\)"),
    ("missing.csv", (), "cannot read it"),
])
def test_bad_input_is_one_line_naming_the_thing_and_the_fix(capsys, tmp_path, setup, args, words):
    texts = {"empty.csv": "", "neg.csv": "n_in,n_out,weight\n128,64,0\n", "ok.csv": "n_in,n_out\n900,200\n128,64\n"}
    mix = tmp_path / setup
    if setup in texts:
        mix.write_text(texts[setup])
    code, out, err = run(capsys, mix, "--model", MODEL, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("joules advise: error: ")
    import re

    assert re.search(words.format(mix=re.escape(str(mix))), lines[0]), lines[0]


def test_bad_numbers_are_refused_by_the_parser(capsys, tmp_path):
    for flag, value in (("--price", "0"), ("--cap-outputs", "-5"), ("--truncate-inputs", "abc")):
        with pytest.raises(SystemExit) as info:
            main(["advise", str(CHAT), "--model", str(MODEL), flag, value])
        assert info.value.code == 2
        assert "error: argument" in capsys.readouterr().err


def test_a_model_file_that_is_not_one_is_one_line(capsys, tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{}")
    code, _, err = run(capsys, CHAT, "--model", bad)
    assert code == 2 and err.count("\n") == 1 and str(bad) in err
    shutil.copy(MODEL, tmp_path / "ok.json")
    code, _, err = run(capsys, CHAT, "--model", tmp_path / "ok.json", "--fit", "nope")
    assert code == 2 and "has no 'nope' model" in err
