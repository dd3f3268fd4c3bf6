"""Reading measurement points from CSV and from results JSON."""

from __future__ import annotations

import json

import pytest

from pytest_joules.models.analytical import Point
from pytest_joules.errors import DataError
from pytest_joules.measure.measurement import Measurement, Round
from pytest_joules.models.points import read_points
from pytest_joules.store.results import results_document
from pytest_joules.engines.workload import Workload


def write(tmp_path, text: str, name: str = "data.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def measurement(n_in, n_out, joules, requests=1, simulated=True, max_batch_size=None):
    w = Workload(n_in, n_out, requests=requests, max_batch_size=max_batch_size)
    rounds = [Round(joules=joules, seconds=1.0, reps=1, output_tokens=w.output_tokens, input_tokens=w.input_tokens,
                    valid=joules is not None)]
    return Measurement(w, rounds, engine={"kind": "sim"}, device={"name": "H100"}, meter="sim", simulated=simulated)


# -- CSV -------------------------------------------------------------------------------------------
def test_csv_with_j_per_out_token(tmp_path):
    path = write(tmp_path, "n_in,n_out,j_per_out_token\n64,128,0.5\n512,64,1.25\n")
    data = read_points(path)
    assert data.points == [Point(64, 128, 0.5), Point(512, 64, 1.25)]
    assert data.simulated is False and data.skipped == 0 and data.notes == []


def test_csv_with_energy_and_requests(tmp_path):
    path = write(tmp_path, "n_in,n_out,energy_j,requests\n64,128,640,10\n512,64,64,1\n")
    assert read_points(path).points == [Point(64, 128, 0.5), Point(512, 64, 1.0)]


def test_csv_energy_without_requests_means_one_request(tmp_path):
    path = write(tmp_path, "n_out,n_in,energy_j\n100,64,25\n")
    assert read_points(path).points == [Point(64, 100, 0.25)]


def test_csv_prefers_j_per_out_token_when_both_given(tmp_path):
    path = write(tmp_path, "n_in,n_out,energy_j,j_per_out_token\n64,100,999,0.3\n")
    assert read_points(path).points == [Point(64, 100, 0.3)]


def test_csv_tolerates_bom_case_spaces_comments_blank_lines_and_extra_columns(tmp_path):
    text = "# measured on H100\n N_In , n_out,gpu, J_per_out_token \n\n64, 128 ,h100, 0.5\n# note\n128,1e3,h100,2.0\n256,64.0,h100,1\n"
    path = write(tmp_path, text, encoding="utf-8-sig")
    assert read_points(path).points == [Point(64, 128, 0.5), Point(128, 1000, 2.0), Point(256, 64, 1.0)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("n_in,j_per_out_token\n64,1\n", "line 1: missing column(s) n_out; the header must name"),
        ("n_in,n_out\n64,64\n", "line 1: no energy column; add j_per_out_token, or energy_j"),
        ("n_in,n_out,n_out,energy_j\n64,64,64,1\n", "line 1: column(s) named twice: n_out"),
        ("", "empty file; expected a CSV header"),
        ("\n\n# only a comment\n", "empty file; expected a CSV header"),
        ("n_in,n_out,j_per_out_token\n", "header but no data rows"),
        ("n_in,n_out,j_per_out_token\n64,64,0.1\n64,x,0.1\n", "line 3: n_out is not a number: 'x'"),
        ("n_in,n_out,j_per_out_token\n64,64,\n", "line 2: j_per_out_token is empty"),
        ("n_in,n_out,j_per_out_token\n64,64,nan\n", "line 2: j_per_out_token must be finite, got 'nan'"),
        ("n_in,n_out,j_per_out_token\n64,64,inf\n", "line 2: j_per_out_token must be finite, got 'inf'"),
        ("n_in,n_out,j_per_out_token\n64,64,0\n", "line 2: j_per_out_token must be positive, got '0'"),
        ("n_in,n_out,j_per_out_token\n64,64,-0.5\n", "line 2: j_per_out_token must be positive, got '-0.5'"),
        ("n_in,n_out,energy_j\n64,64,-3\n", "line 2: energy_j must be positive, got '-3'"),
        ("n_in,n_out,energy_j,requests\n64,64,3,0\n", "line 2: requests must be positive, got '0'"),
        ("n_in,n_out,energy_j,requests\n64,64,3,2.5\n", "line 2: requests must be a whole number of tokens"),
        ("n_in,n_out,j_per_out_token\n0,64,1\n", "line 2: n_in must be positive, got '0'"),
        ("n_in,n_out,j_per_out_token\n-64,64,1\n", "line 2: n_in must be positive, got '-64'"),
        ("n_in,n_out,j_per_out_token\n64,64.5,1\n", "line 2: n_out must be a whole number of tokens, got '64.5'"),
        ("n_in,n_out,j_per_out_token\n64,nan,1\n", "line 2: n_out must be finite, got 'nan'"),
        ("# c\nn_in,n_out,j_per_out_token\n\n64,64\n", "line 4: 2 fields, the header has 3"),
    ],
)
def test_csv_bad_input_names_file_line_and_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_points(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_missing_file_directory_and_binary(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file"):
        read_points(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_points(tmp_path)
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="bin.csv: not UTF-8 text"):
        read_points(path)


# -- results JSON ----------------------------------------------------------------------------------
def test_results_json_skips_invalid_rows_and_keeps_simulated_flag(tmp_path):
    doc = results_document([measurement(64, 128, 12.8), measurement(512, 64, None), measurement(256, 256, 51.2)])
    path = write(tmp_path, json.dumps(doc), "results.json")
    data = read_points(path)
    assert data.points == [Point(64, 128, 0.1), Point(256, 256, 0.2)]
    assert data.simulated is True
    assert data.skipped == 1
    assert data.notes == ["skipped 1 result(s) without a valid J/out-token (invalid or dry run)"]


def test_results_json_notes_mixed_batch_settings(tmp_path):
    doc = results_document([measurement(64, 64, 6.4, simulated=False), measurement(64, 128, 128.0, requests=10, simulated=False)])
    data = read_points(write(tmp_path, json.dumps(doc), "r.json"))
    assert data.simulated is False
    assert data.points == [Point(64, 64, 0.1), Point(64, 128, 0.1)]
    assert any("mix batch settings" in n and "requests=10" in n for n in data.notes)


def test_results_json_with_no_valid_rows(tmp_path):
    doc = results_document([measurement(64, 64, None), measurement(128, 64, None)])
    with pytest.raises(DataError, match=r"r.json: none of its 2 result\(s\) has a valid J/out-token"):
        read_points(write(tmp_path, json.dumps(doc), "r.json"))


def test_results_json_bad_row_names_file_and_row(tmp_path):
    doc = results_document([measurement(64, 64, 6.4), measurement(128, 64, 6.4)])
    doc["results"][1]["n_in"] = 0
    with pytest.raises(DataError, match=r"r.json: results\[1\]: n_in must be a positive integer"):
        read_points(write(tmp_path, json.dumps(doc), "r.json"))
    doc["results"][1]["n_in"] = 128
    doc["results"][1]["j_per_out_token"] = -1
    with pytest.raises(DataError, match=r"r.json: results\[1\]: j_per_out_token must be a positive number"):
        read_points(write(tmp_path, json.dumps(doc), "r.json"))


def test_json_that_is_not_a_results_file(tmp_path):
    with pytest.raises(DataError, match="x.json: not a pytest-joules results file"):
        read_points(write(tmp_path, '{"hello": 1}', "x.json"))
    with pytest.raises(DataError, match=r"y.json: not valid JSON \(line 1"):
        read_points(write(tmp_path, '{"hello": ', "y.json"))
