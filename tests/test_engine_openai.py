"""The openai engine against a small local OpenAI-compatible server (tests/openai_fake.py): exact
counts, latencies, and every failure path as one line naming the URL or setting and the fix.
The real vLLM server run is in tests/test_vllm_real.py (CI's vllm step)."""

from __future__ import annotations

import socket
import sys

import pytest

from pytest_joules.engines.base import EngineSpec
from pytest_joules.errors import ConfigError, EngineUnavailable, WorkloadMismatch
from pytest_joules.measure import measure
from pytest_joules.engines.workload import Workload

from .openai_fake import Behaviour, FakeOpenAIServer

pytest.importorskip("httpx")

from pytest_joules.engines import openai as oa  # noqa: E402


@pytest.fixture
def server():
    srv = FakeOpenAIServer()
    yield srv
    srv.stop()


def build(server, model=None, **options):
    return oa.build(EngineSpec(name="openai", model=model, options={"url": server.url, "timeout": 5, **options}))


def test_a_run_sends_exact_lengths_and_checks_the_servers_counts(server):
    engine = build(server)
    try:
        w = Workload(16, 8, requests=4, seed=3)
        run = engine.run(w)
        run.verify(w, "openai")
        assert run.input_tokens == [16] * 4 and run.output_tokens == [8] * 4
        bodies = server.behaviour.bodies[-4:]
        assert all(b["max_tokens"] == b["min_tokens"] == 8 and b["ignore_eos"] is True for b in bodies)
        assert all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in bodies)
        prompts = [tuple(b["prompt"]) for b in bodies]
        assert all(len(p) == 16 for p in prompts) and len(set(prompts)) == 4
        assert len(run.ttft_s) == 4 and len(run.tpot_s) == 4
        assert all(t >= 0 for t in run.ttft_s + run.tpot_s)
        engine.run(w)  # a second run draws new prompts: a prefix cache cannot skip their prefill
        assert not set(prompts) & {tuple(b["prompt"]) for b in server.behaviour.bodies[-4:]}
    finally:
        engine.close()


def test_identity_names_the_server_model_version_and_context(server):
    engine = build(server)
    try:
        assert engine.identity() == {"kind": "openai", "model": "tiny", "server": "vllm", "version": "0.0-fake",
                                     "prompt": "tokens", "max_model_len": "1024"}
    finally:
        engine.close()


def test_measure_reports_latency_beside_the_counts(server):
    from pytest_joules.meters.none import NoneMeter

    server.behaviour.token_delay_s = 0.002
    engine = build(server)
    try:
        m = measure(engine, NoneMeter(), Workload(8, 5, requests=2), rounds=2, warmup=1)
        lat = m.latency
        assert lat is not None and lat["ttft_s"] > 0 and lat["tpot_s"] >= 0.0015 and lat["out_tok_per_s"] > 0
    finally:
        engine.close()


def test_max_batch_size_caps_the_requests_in_flight(server):
    server.behaviour.token_delay_s = 0.005
    engine = build(server)
    try:
        run = engine.run(Workload(4, 2, requests=6, max_batch_size=2))
        assert run.info["in_flight_limit"] == 2 and run.output_tokens == [2] * 6
        assert server.behaviour.most_in_flight <= 2
    finally:
        engine.close()


def test_text_prompts_are_confirmed_by_the_tokenize_endpoint(server):
    server.behaviour.token_ids = False  # like a server that takes text only
    engine = build(server)
    try:
        assert engine.prompt_mode == "text"
        w = Workload(12, 4, requests=3)
        engine.prepare(w)
        run = engine.run(w)
        assert run.input_tokens == [12] * 3  # the fake counts words + BOS, as /tokenize said
        texts = [b["prompt"] for b in server.behaviour.bodies[-3:]]
        assert all(isinstance(t, str) and len(t.split()) == 11 for t in texts) and len(set(texts)) == 3
    finally:
        engine.close()


def test_prefix_cache_hits_invalidate_the_round(server):
    server.behaviour.cached_tokens = 16
    engine = build(server)
    try:
        run = engine.run(Workload(32, 2))
        assert run.problems and "prefix cache" in run.problems[0] and "--no-enable-prefix-caching" in run.problems[0]
    finally:
        engine.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- failure paths: (setup, what is raised, words the one line must hold) ----------------------------
def _run(server, w=Workload(16, 8, requests=2), **options):
    engine = build(server, **options)
    try:
        engine.prepare(w)
        return engine.run(w)
    finally:
        engine.close()


FAILURES = {
    "server down": (lambda s: oa.build(EngineSpec(name="openai", options={"url": f"http://127.0.0.1:{_free_port()}/v1"})),
                    ConfigError, ["no OpenAI-compatible server answers at http://127.0.0.1:", "start it", "url="]),
    "wrong URL": (lambda s: oa.build(EngineSpec(name="openai", options={"url": s.url[:-3] + "/api"})),
                  ConfigError, ["answered 404", "give the URL up to /v1"]),
    "server error 500": (lambda s: (setattr(s.behaviour, "status", 500), _run(s)),
                         ConfigError, ["failed a one-token completion", "answered 500", "fake failure", "see its log"]),
    "server error 500 during a run": (lambda s: (setattr(s.behaviour, "status", 503), setattr(s.behaviour, "misbehave_after", 1),
                                                 _run(s)),
                                      WorkloadMismatch, ["did not run the workload", "answered 503", "see its log"]),
    "4xx refusal": (lambda s: (setattr(s.behaviour, "token_ids", False), _run(s, prompt="tokens")),
                    ConfigError, ["answered 400", "prompt must be a string"]),
    "timeout": (lambda s: (setattr(s.behaviour, "delay_s", 1.5), _run(s, timeout=0.5)),
                ConfigError, ["no answer from", "within 0.5 s", "timeout=SECONDS"]),
    "timeout during a run": (lambda s: (setattr(s.behaviour, "delay_s", 1.5), setattr(s.behaviour, "misbehave_after", 1),
                                        _run(s, timeout=0.5)),
                             WorkloadMismatch, ["did not run the workload", "within 0.5 s", "timeout=SECONDS"]),
    "unknown model": (lambda s: build(s, model="llama-70b"),
                      ConfigError, ["does not serve model 'llama-70b'", "it serves 'tiny'", "--joules-model tiny"]),
    "stream cut short": (lambda s: (setattr(s.behaviour, "cut_after", 3), _run(s)),
                         WorkloadMismatch, ["stream of request 0 was cut short after 3 chunk(s)", "see its log"]),
    "usage mismatch (prompt)": (lambda s: (setattr(s.behaviour, "extra_prompt_tokens", 1), _run(s)),
                                WorkloadMismatch, ["counted 17 prompt tokens for request 0, asked for 16"]),
    "usage mismatch (stopped early)": (lambda s: (setattr(s.behaviour, "stop_after", 5), _run(s)),
                                       WorkloadMismatch, ["generated 5 tokens", "finish_reason 'stop'", "min_tokens/ignore_eos"]),
    "no usage in the stream": (lambda s: (setattr(s.behaviour, "usage", False), _run(s)),
                               WorkloadMismatch, ["sent no usage", "stream_options.include_usage", "stream=false"]),
    "n_in + n_out over max_model_len": (lambda s: _run(s, w=Workload(1000, 100)),
                                        ConfigError, ["= 1100 exceeds the max_model_len of 1024", "--max-model-len"]),
    "server died mid-session": (lambda s: _died(s), WorkloadMismatch, ["cannot connect to", "still running?"]),
}


def _died(server):
    engine = build(server)
    try:
        server.stop()
        engine.run(Workload(4, 2))
    finally:
        engine.close()


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_failure_is_one_line_naming_the_url_or_setting(server, case):
    setup, error, words = FAILURES[case]
    with pytest.raises(error) as info:
        setup(server)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"


def test_several_models_need_a_choice():
    srv = FakeOpenAIServer(Behaviour(models=["a", "b"]))
    try:
        with pytest.raises(ConfigError, match="serves 2 models .*name one with --joules-model"):
            build(srv)
        assert build(srv, model="b").server.model == "b"
    finally:
        srv.stop()


def test_bad_options_are_refused_before_any_request():
    with pytest.raises(ConfigError, match="unknown openai engine option"):
        oa.build(EngineSpec(name="openai", options={"ur": "x"}))
    with pytest.raises(ConfigError, match="not an http"):
        oa.build(EngineSpec(name="openai", options={"url": "127.0.0.1:8000"}))
    with pytest.raises(ConfigError, match="prompt must be auto, tokens or text"):
        oa.build(EngineSpec(name="openai", options={"prompt": "ids"}))


def test_without_httpx_the_engine_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(EngineUnavailable, match=r"httpx is not installed; pip install 'pytest-joules\[openai\]'"):
        oa.build(EngineSpec(name="openai", options={}))


PLUGIN_TESTS = """
import pytest

@pytest.mark.energy(n_in=32, n_out=8, requests=4)
def test_reply(joules):
    joules()
"""


@pytest.fixture
def plugin_project(pytester, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # this checkout's plugin
    monkeypatch.setenv("COLUMNS", "100")
    pytester.makeini("[pytest]\naddopts = -p no:benchmark -p no:hypothesispytest -p no:cacheprovider -p no:xdist\n")
    pytester.makepyfile(test_served=PLUGIN_TESTS)
    return pytester


def test_the_plugin_measures_a_server_and_reports_its_latency(plugin_project, server):
    result = plugin_project.runpytest_subprocess("--joules", "--joules-engine", "openai", "--joules-engine-option",
                                                 f"url={server.url}", "--joules-meter", "none", "--joules-rounds", "2")
    result.assert_outcomes(skipped=1)  # a dry run skips after checking the counts
    result.stdout.fnmatch_lines(["*J/tok*TTFT/TPOT*", "*test_reply*32*8*—*/*dry-run*"])
    assert len(server.behaviour.bodies) == 1 + 3 * 4  # the probe, a warm-up and two rounds of 4 requests


def test_a_server_that_is_down_fails_each_test_in_one_line(plugin_project):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    result = plugin_project.runpytest_subprocess("--joules", "--joules-engine", "openai", "--joules-engine-option",
                                                 f"url={url}", "--joules-meter", "none")
    result.assert_outcomes(errors=1)  # at the test's setup, where the session builds its engine
    result.stdout.fnmatch_lines([f"*engine 'openai': no OpenAI-compatible server answers at {url} *start it*"])
    assert "Traceback" not in result.stdout.str()
