"""Real vLLM, in-process and as an OpenAI-compatible server, on a tiny random Llama made here.

Marked `vllm`: skipped where vLLM is not importable (the main suite), run by .ci/run's vllm step
in a venv of its own. Each run loads the model once (about a minute on 2 cores): the in-process
engine once for its whole pytest session, the server once for its test. Meter `none` checks the
token counts; a fake counter (150 W times the window's wall time, labelled SIMULATED) exercises
the windows, the baselines and the summary's energy and latency columns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed: these tests run in .ci/run's vllm step (its own venv)"),
]

#: the CPU backend reserves this share of the host's memory for the KV cache (its
#: gpu_memory_utilization); vLLM's default 0.92 fails on a shared 24 GB machine
MEMORY = "0.1"
SERVER_START_S = 600  # bounded wait for /health (a cold load on 2 busy cores)

COUNTER_CONFTEST = '''
import time
from pytest_joules import registry
from pytest_joules.hookspecs import hookimpl
from pytest_joules.meters.base import MeterReading


class CounterMeter:
    """A fake energy counter: 150 W times the window's wall time (no real energy is read here)."""
    name = "counter"
    min_window_s = 0.0

    def __init__(self, spec, engine):
        self._t0 = None

    def begin(self):
        self._t0 = time.perf_counter()

    def end(self):
        seconds = time.perf_counter() - self._t0
        return MeterReading({"counter0": 150.0 * seconds}, seconds)

    def device_info(self):
        return {"gpu": "fake 150 W counter", "power_limit_w": 150.0, "simulated": True}

    def close(self):
        pass


class Plugin:
    @hookimpl
    def joules_meters(self):
        return {"counter": CounterMeter}


registry.register(Plugin(), name="counter-meter")
'''

TESTS = '''
import pytest
from pytest_joules.engines.workload import Workload


@pytest.mark.energy(n_in=128, n_out=64, requests=8)
def test_chat_batch(joules):
    joules()


@pytest.mark.energy(n_in=64, n_out=16, requests=6, max_batch_size=2)
def test_two_in_flight(joules):
    joules()


@pytest.mark.energy(n_in=1000, n_out=100)
def test_over_the_context(joules):
    joules()


def test_exact_counts_and_latency(joules_engine):
    w = Workload(128, 64, requests=8)
    run = joules_engine.run(w)
    run.verify(w, joules_engine.kind)
    print(f"EXACT kind={joules_engine.kind} in={run.input_tokens} out={run.output_tokens} "
          f"ttft_ms={[round(t * 1000, 1) for t in run.ttft_s]} tpot_ms={[round(t * 1000, 2) for t in run.tpot_s]}")
    print("IDENTITY " + repr(joules_engine.identity()))
    assert run.input_tokens == [128] * 8 and run.output_tokens == [64] * 8
    assert len(run.ttft_s) == 8 and len(run.tpot_s) == 8
'''


@pytest.fixture(autouse=True)
def _keep_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored after each test


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from .tiny_llama import make

    return make(tmp_path_factory.mktemp("tiny-llama"))


def _project(pytester) -> None:
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's plugin (restored below)
    pytester.makeconftest(COUNTER_CONFTEST)
    pytester.makepyfile(test_serving=TESTS)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:benchmark -p no:hypothesispytest\n")


def _save(name: str, text: str) -> None:
    """Keep the transcript for people reading CI's log or the report (JOULES_TRANSCRIPTS=DIR)."""
    where = os.environ.get("JOULES_TRANSCRIPTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / name).write_text(text)


def _check(result, out_json: Path, engine: str) -> dict:
    text = result.stdout.str()
    # the context check names the engine's setting; the dry-run tests skip after their token check
    assert "exceeds" in text and ("max_model_len" in text)
    assert "EXACT kind=" + engine in text
    doc = json.loads(out_json.read_text())
    results = {r["test"]: r for r in doc["results"]}
    _save(out_json.stem + "-rounds.txt", "".join(
        f"{name}: rounds (reps, input tokens, output tokens, seconds, joules) "
        f"{[(x['reps'], x['input_tokens'], x['output_tokens'], round(x['seconds'], 3), x['joules']) for x in r['rounds']]}; "
        f"latency {r['latency']}\n" for name, r in results.items()))
    chat = results["test_chat_batch"]
    for r in chat["rounds"]:
        assert r["output_tokens"] == 8 * 64 * r["reps"] and r["input_tokens"] == 8 * 128 * r["reps"]
    lat = chat["latency"]
    assert lat["ttft_s"] > 0 and lat["tpot_s"] > 0 and lat["tpot_p90_s"] >= lat["tpot_s"] and lat["out_tok_per_s"] > 0
    capped = results["test_two_in_flight"]
    assert all(r["output_tokens"] == 6 * 16 * r["reps"] for r in capped["rounds"])
    return doc


def test_vllm_in_process_exact_counts_latency_and_a_metered_session(pytester, tiny_model, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the summary's every column, energy and latency
    _project(pytester)
    # path options with '=': written after a space, an existing path is taken for a test path (issue 21)
    common = ["--joules", "--joules-engine", "vllm", f"--joules-model={tiny_model}", "--joules-rounds", "2",
              "--joules-engine-option", "dtype=bf16", "--joules-engine-option", "max_model_len=1024",
              "--joules-engine-option", "max_num_seqs=8", "--joules-engine-option", "enforce_eager=true",
              "--joules-engine-option", f"gpu_memory_utilization={MEMORY}", "--joules-seed", "1", "-s"]
    # one session: the model loads once. Meter none checks the counts (dry runs skip after it).
    out = pytester.path / "dry.json"
    dry = pytester.runpytest_subprocess(*common, "--joules-meter", "none", f"--joules-json={out}", timeout=900)
    _save("vllm-in-process-dry.txt", dry.stdout.str())
    dry.assert_outcomes(passed=1, skipped=2, failed=1)
    _check(dry, out, "vllm")
    # and the windows, with the fake counter: energy and latency side by side, a baseline recorded
    out = pytester.path / "metered.json"
    metered = pytester.runpytest_subprocess(*common, "--joules-meter", "counter", f"--joules-json={out}",
                                            "--joules-update-baselines", timeout=900)
    _save("vllm-in-process-metered.txt", metered.stdout.str())
    metered.assert_outcomes(passed=3, failed=1)
    doc = _check(metered, out, "vllm")
    assert doc["engine"]["kind"] == "vllm" and doc["engine"]["runtime"] == "eager"
    metered.stdout.fnmatch_lines(["*TTFT/TPOT*"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"the vLLM server did not answer /health within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """The server and its engine process: the whole process group, by its id."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_openai_engine_against_a_real_vllm_server(pytester, tiny_model, tmp_path):
    port = _free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny-llama", "--dtype", "bfloat16", "--max-model-len", "1024",
           "--max-num-seqs", "8", "--enforce-eager", "--no-enable-prefix-caching",
           "--gpu-memory-utilization", MEMORY, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(proc, port, log)
        _project(pytester)
        out = pytester.path / "server.json"
        before = _metric(port, "vllm:generation_tokens_total"), _metric(port, "vllm:prompt_tokens_total")
        result = pytester.runpytest_subprocess(
            "--joules", "--joules-engine", "openai", "--joules-engine-option", f"url=http://127.0.0.1:{port}/v1",
            "--joules-meter", "none", "--joules-rounds", "2", f"--joules-json={out}", "--joules-seed", "1", "-s",
            timeout=900)
        _save("vllm-server-dry.txt", result.stdout.str())
        result.assert_outcomes(passed=1, skipped=2, failed=1)
        doc = _check(result, out, "openai")
        assert doc["engine"]["kind"] == "openai" and doc["engine"]["server"] == "vllm"
        assert doc["engine"]["model"] == "tiny-llama" and doc["engine"]["max_model_len"] == "1024"
        # the server's own counters agree with what the plugin counted (warm-ups, rounds, the direct run)
        generated = _metric(port, "vllm:generation_tokens_total") - before[0]
        prompted = _metric(port, "vllm:prompt_tokens_total") - before[1]
        rounds = [r for res in doc["results"] for r in res["rounds"]]
        # + the engine's one-token probe at start (4 prompt ids), the warm-ups and the direct run
        counted_out = sum(r["output_tokens"] for r in rounds) + 1 + (8 * 64 + 6 * 16) + 8 * 64
        counted_in = sum(r["input_tokens"] for r in rounds) + 4 + (8 * 128 + 6 * 64) + 8 * 128
        _save("vllm-server-metrics.txt", f"generation_tokens_total +{generated:.0f} (plugin counted {counted_out}); "
                                         f"prompt_tokens_total +{prompted:.0f} (plugin counted {counted_in})\n")
        assert generated == counted_out and prompted == counted_in
    finally:
        _stop(proc)
        _save("vllm-server-log.txt", log.read_text()[-20000:])
