"""Length mixes, arrival schedules and text prompts (engines/mix.py, engines/prompt_text.py):
parsing, deterministic sampling, content hashes, per-request verification, and bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pytest_joules.engines import mix as M
from pytest_joules.engines import prompt_text as P
from pytest_joules.engines.workload import EngineRun, Workload
from pytest_joules.errors import ConfigError, WorkloadMismatch

CHAT = [(128, 256, 3), (512, 512, 2), (1024, 128, 1)]


def test_a_sample_gives_each_length_its_share_and_is_the_same_every_time():
    mix = M.from_list(CHAT)
    sample = mix.sample(60)
    assert Counter(sample) == {(128, 256): 30, (512, 512): 20, (1024, 128): 10}
    assert sample == M.from_list(CHAT).sample(60)  # no seed: the same requests on every run and machine
    assert sample != tuple(sorted(sample))  # shuffled: the lengths interleave as traffic does
    # a share that is no whole number of requests is met to within one request
    small = Counter(mix.sample(7))
    assert sum(small.values()) == 7
    assert all(abs(small[(n, m)] - 7 * w / 6) < 1 for n, m, w in CHAT)


def test_the_digest_is_the_distribution_not_the_spelling(tmp_path):
    rows = [(128, 256), (128, 256), (128, 256), (512, 512), (512, 512), (1024, 128)]
    csv = tmp_path / "log.csv"
    csv.write_text("timestamp,prompt_tokens,completion_tokens\n" + "".join(f"t,{n},{m}\n" for n, m in reversed(rows)))
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text("".join(json.dumps({"n_in": n, "n_out": m}) + "\n\n" for n, m in rows))
    weighted = M.from_list(CHAT)
    assert M.from_file(csv).digest == M.from_file(jsonl).digest == weighted.digest
    assert M.from_file(csv).rows == 6 and weighted.rows == 3
    assert M.from_list([(128, 256, 3), (512, 512, 2), (1024, 129, 1)]).digest != weighted.digest
    assert M.from_file(csv).name == "log" and weighted.label() == f"mix=inline#{weighted.digest[:6]}"


def test_a_mix_workload_has_the_samples_lengths_and_means():
    mix = M.from_list(CHAT)
    w = Workload.of_mix(mix, 6, max_batch_size=4)
    assert sorted(w.lengths()) == sorted([(128, 256)] * 3 + [(512, 512)] * 2 + [(1024, 128)])
    assert (w.n_in, w.n_out) == (405, 320)  # rounded means
    assert w.output_tokens == 3 * 256 + 2 * 512 + 128 and w.input_tokens == 3 * 128 + 2 * 512 + 1024
    assert not w.uniform and Workload(8, 4).uniform


def test_the_longest_request_is_checked_against_the_context():
    w = Workload.of_mix(M.from_list(CHAT), 6)
    w.check_positions(1152, "sim")
    with pytest.raises(ConfigError, match=r"its longest request: n_in \+ n_out = 1024 \+ 128 = 1152 "
                                          r"exceeds sim's maximum of 1000 positions; drop or truncate"):
        w.check_positions(1000, "sim")


def test_verify_checks_every_requests_counts_in_order():
    w = Workload.of_mix(M.from_list([(8, 4, 1), (16, 2, 1)]), 4)
    want = w.lengths()
    EngineRun([n for n, _ in want], [m for _, m in want], 1.0).verify(w, "e")
    swapped = EngineRun([n for n, _ in want][::-1], [m for _, m in want][::-1], 1.0)
    with pytest.raises(WorkloadMismatch, match=r"did not run mix=inline#\w+: request 0: prompt of \d+ tokens, asked for"):
        swapped.verify(w, "e")
    with pytest.raises(WorkloadMismatch, match="ran 3 requests, asked for 4"):
        EngineRun([8, 8, 8], [4, 4, 4], 1.0).verify(w, "e")


@pytest.mark.parametrize("items, words", [
    ([], "has no requests"),
    ([(128,)], r"must be \(n_in, n_out\) or \(n_in, n_out, weight\)"),
    ([(128, 0)], "n_out 0 must be a positive whole number"),
    ([(128, 64, 0)], "weight 0 must be a positive number"),
    ([(128, 64, -1.5)], "weight -1.5 must be a positive number"),
    ([(128, 64, float("nan"))], "weight nan must be a positive number"),
    ([(12.5, 64)], "n_in 12.5 must be a positive whole number"),
])
def test_bad_lists_are_one_line_naming_the_item(items, words):
    with pytest.raises(ConfigError, match=words):
        M.from_list(items)


@pytest.mark.parametrize("name, text, words", [
    ("empty.csv", "", r"mix file \S+: is empty; give a header n_in,n_out\[,weight\]"),
    ("blank.jsonl", "\n\n", "is empty"),
    ("header.csv", "n_in,n_out\n", "has no requests"),
    ("cols.csv", "a,b\n1,2\n", "no column n_in or input_tokens or prompt_tokens"),
    ("short.csv", "n_in,n_out\n128\n", "line 2: has 1 fields, the header 2; fix the row"),
    ("neg.csv", "n_in,n_out,weight\n128,64,-2\n", "line 2: weight '-2' must be a positive number"),
    ("text.csv", "n_in,n_out\n128,lots\n", "line 2: n_out 'lots' must be a positive whole number of tokens"),
    ("bad.jsonl", '{"n_in": 1, "n_out": 2}\n{nope\n', "line 2: not JSON"),
    ("list.jsonl", "[1, 2]\n", "line 1: expected an object with n_in and n_out, got list"),
    ("mix.txt", "n_in,n_out\n1,2\n", r"unknown format '.txt'; use .csv"),
    ("binary.csv", b"\xff\xfe\x00", "not UTF-8 text"),
])
def test_bad_files_are_one_line_naming_the_file_line_and_fix(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=words) as info:
        M.from_file(path)
    assert "\n" not in str(info.value)


def test_huge_and_missing_files_are_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("n_in,n_out\n" + "1,1\n" * 50)
    monkeypatch.setattr(M, "MAX_FILE_BYTES", 100)
    with pytest.raises(ConfigError, match=r"more than 0 MB; sample it first"):
        M.from_file(path)
    monkeypatch.setattr(M, "MAX_FILE_BYTES", 10**9)
    monkeypatch.setattr(M, "MAX_ROWS", 10)
    with pytest.raises(ConfigError, match="more than 10 rows; sample it first"):
        M.from_file(path)
    with pytest.raises(ConfigError, match=r"mix file nowhere.csv: cannot read it .*relative to the test file"):
        M.load("nowhere.csv", tmp_path)


def test_a_path_is_found_relative_to_the_tests_folder(tmp_path):
    (tmp_path / "mixes").mkdir()
    (tmp_path / "mixes/chat.csv").write_text("n_in,n_out\n128,64\n")
    assert M.load("mixes/chat.csv", tmp_path).entries == ((128, 64, 1.0),)


@pytest.mark.parametrize("rate, concurrency, words", [
    (0, None, "rate=0: must be a positive number"),
    (-2, None, "rate=-2: must be a positive number"),
    (float("inf"), None, "rate=inf"),
    ("4", None, "rate='4'"),
    (None, 0, "concurrency=0: must be a positive number of users"),
    (None, 2.5, "concurrency=2.5"),
    (4, 8, "give one"),
])
def test_bad_arrivals_are_one_line(rate, concurrency, words):
    with pytest.raises(ConfigError, match=words):
        M.arrival(rate, concurrency)


def test_poisson_times_are_fixed_by_the_mix_and_average_the_rate():
    times = M.Arrival(rate=4.0).times(2000, "abc")
    assert times[0] == 0 and times == sorted(times) and times == M.Arrival(rate=4.0).times(2000, "abc")
    assert times[-1] / 1999 == pytest.approx(0.25, rel=0.1)
    assert times != M.Arrival(rate=4.0).times(2000, "another mix")


def test_an_engine_that_cannot_serve_over_time_refuses_in_one_line():
    class Batch:
        kind = "batchy"

    w = Workload(64, 8, requests=4, arrival=M.Arrival(rate=2.0))
    with pytest.raises(ConfigError, match=r"rate=2/s: engine 'batchy' cannot serve requests over time \(it runs a "
                                          r"workload's requests all at once\); use --joules-engine sim"):
        M.check_serves(Batch(), w)
    M.check_serves(Batch(), Workload(64, 8))  # all at once: any engine


# -- text prompts -----------------------------------------------------------------------------------
def test_text_prompts_are_cut_and_padded_to_exactly_n_in(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('"abcdefgh"\n{"prompt": "ijkl"}\n{"text": "mnopqrstuvwx"}\n')
    prompts = P.load("prompts.jsonl", tmp_path)
    ids = P.token_prompts(prompts, [1, 3, 5], P.sim_encode)
    assert [len(p) for p in ids] == [1, 3, 5]
    words = {t: P.sim_encode(t)[0] for t in ("abcd", "efgh", "ijkl", "mnop", "qrst", "uvwx")}
    assert ids[0] == [words["abcd"]]  # request 0 starts at prompt 0, cut
    assert ids[1] == [words["ijkl"], words["mnop"], words["qrst"]]  # request 1 starts at prompt 1, padded by the next
    assert ids[2] == [words["mnop"], words["qrst"], words["uvwx"], words["abcd"], words["efgh"]]  # wraps around
    assert P.load("random") is None and P.load(None) is None


def test_a_prompt_file_too_short_even_when_repeated_names_the_fix(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text('"abcdefgh"\n')  # 2 tokens by the sim's rule
    prompts = P.load(path)
    assert len(P.token_prompts(prompts, [16], P.sim_encode)[0]) == 16  # repeated 8 times: allowed
    with pytest.raises(ConfigError, match=r"2 tokens in all, so n_in=17 would repeat it 9 times \(at most 8\): "
                                          "use a file with more"):
        P.token_prompts(prompts, [17], P.sim_encode)


@pytest.mark.parametrize("text, words", [
    ("", "has no text"),
    ('"   "\n', "has no text"),
    ('{"question": "hi"}\n', r"line 1: an object without a \"prompt\" or \"text\" string"),
    ("not json\n", "line 1: not JSON"),
    ("[1]\n", "expected a string"),
])
def test_bad_prompt_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        P.load(path)
