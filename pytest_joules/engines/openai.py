"""The `openai` engine: a running OpenAI-compatible server (vLLM, SGLang, trtllm-serve) on this host.

`--joules-engine openai --joules-engine-option url=http://127.0.0.1:8000/v1` measures the server
behind that URL; `--joules-model` names the served model (default: the server's only one).
Every request goes to `/v1/completions` with exactly n_in prompt tokens and
`max_tokens = min_tokens = n_out`, `ignore_eos: true`, greedy, streamed with
`stream_options.include_usage` so that the time of every token chunk is seen and the server's
own `usage` counts are checked against the workload: a difference fails the test with the server
setting to fix, and nothing of it is stored.

Prompts are token-id lists where the server takes them (vLLM, SGLang and trtllm-serve all do:
docs/serving.md has the sources); with `prompt=text` (or `auto` against a server that refuses
token ids) they are text whose length the server's `/tokenize` endpoint confirms. Token-id
prompts are drawn afresh for every run, so a server's prefix cache cannot skip their prefill;
text prompts repeat, so the docs say to turn the prefix cache off, and a run whose usage reports
cached prompt tokens is invalid. A workload's requests are all in flight at once, or at most
`max_batch_size`. Metering: the server's GPUs are named with the nvml meter option `devices=`
(see meters/nvml.py), which checks that the server's processes are on them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, EngineUnavailable, WorkloadMismatch
from .workload import EngineRun, Workload
from . import openai_server as S
from .openai_client import Settings
from .base import DeviceRef, EngineSpec, reject_unknown_options
from .prompts import random_prompts

DEFAULT_URL = "http://127.0.0.1:8000/v1"
OPTIONS = ("url", "timeout", "prompt", "stream", "vocab_size", "seed")
INSTALL_HINT = "pip install 'pytest-joules[openai]' (the openai engine talks HTTP through httpx)"
#: token ids drawn below this when neither the option nor the served model's config.json says
DEFAULT_VOCAB = 1000


def settings(spec: EngineSpec) -> Settings:
    opts = dict(spec.options or {})
    reject_unknown_options("openai", opts, OPTIONS)
    url = str(opts.get("url", DEFAULT_URL)).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"openai engine option url={url!r} is not an http(s) URL; give the API root, e.g. {DEFAULT_URL}")
    timeout = opts.get("timeout", 600.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ConfigError(f"openai engine option timeout must be a positive number of seconds, got {timeout!r}")
    prompt = str(opts.get("prompt", "auto")).lower()
    if prompt not in ("auto", "tokens", "text"):
        raise ConfigError(f"openai engine option prompt must be auto, tokens or text, got {opts['prompt']!r}")
    stream = str(opts.get("stream", "true")).lower()
    if stream not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"openai engine option stream must be true or false, got {opts['stream']!r}")
    vocab = opts.get("vocab_size")
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
        raise ConfigError(f"openai engine option vocab_size must be an integer of at least 2, got {vocab!r}")
    return Settings(url, float(timeout), prompt, stream in ("true", "1", "yes"), vocab)


class OpenAIEngine:
    kind = "openai"
    simulated = False
    default_meter = "nvml"
    #: the server's limit is checked in prepare(), with a message that names its setting
    max_positions: int | None = None

    def __init__(self, cfg: Settings, client: Any, server: S.ServerInfo, prompt_mode: str,
                 vocab: int, special: list[int], pids: set[int] | None = None) -> None:
        self.cfg = cfg
        self._client = client
        self.server = server
        self.prompt_mode = prompt_mode
        self._vocab = vocab
        self._special = special
        self._pids = set(pids or ())
        self._runs = 0
        self._texts: dict[tuple[int, int, int], list[str]] = {}

    def identity(self) -> dict[str, str]:
        out = {"kind": self.kind, "model": self.server.model, "server": self.server.kind,
               "version": self.server.version or "", "prompt": self.prompt_mode}
        if self.server.max_model_len is not None:
            out["max_model_len"] = str(self.server.max_model_len)
        return {k: v for k, v in out.items() if v}

    def server_pids(self) -> set[int]:
        """The server's processes and their children, where they can be seen (else empty)."""
        if not self._pids:
            return set()
        from .host import with_descendants

        return with_descendants(self._pids)

    # -- limits and prompts -----------------------------------------------------------------------
    def check_limits(self, workload: Workload) -> None:
        limit = self.server.max_model_len
        total = workload.n_in + workload.n_out
        if limit is not None and total > limit:
            raise ConfigError(
                f"n_in + n_out = {workload.n_in} + {workload.n_out} = {total} exceeds the max_model_len of {limit} "
                f"that the server at {self.cfg.url} reports; use shorter lengths, or restart the server with a "
                f"larger one (vLLM --max-model-len, SGLang --context-length, trtllm-serve --max_seq_len)"
            )

    def prepare(self, workload: Workload) -> None:
        """Outside every window: the length check, and text prompts confirmed by /tokenize."""
        self.check_limits(workload)
        if self.prompt_mode == "text":
            self._text_prompts(workload)

    def _text_prompts(self, workload: Workload) -> list[str]:
        key = (workload.n_in, workload.requests, workload.seed)
        if key not in self._texts:
            try:
                self._texts = {key: S.text_prompts(self._client, self.server.model, workload)}
            except S.ServerError as exc:
                raise ConfigError(f"openai engine: could not build text prompts: {exc}") from None
        return self._texts[key]

    def prompts(self, workload: Workload) -> list[Any]:
        if self.prompt_mode == "text":
            return self._text_prompts(workload)
        # fresh ids every run: a prefix cache on the server must not skip the prefill of a repeat
        self._runs += 1
        fresh = dataclasses.replace(workload, seed=workload.seed * 1_000_003 + self._runs)
        return random_prompts(fresh, self._vocab, self._special)

    def body(self, prompt: Any, n_out: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.server.model, "prompt": prompt, "max_tokens": n_out,
                                "min_tokens": n_out, "ignore_eos": True, "temperature": 0.0,
                                "stream": self.cfg.stream}
        if self.cfg.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    # -- running ------------------------------------------------------------------------------------
    def run(self, workload: Workload) -> EngineRun:
        self.check_limits(workload)
        bodies = [self.body(p, workload.n_out) for p in self.prompts(workload)]
        limit = min(workload.max_batch_size or workload.requests, workload.requests)
        try:
            t0, done = self._client.complete_all(bodies, limit)
        except S.ServerError as exc:
            raise WorkloadMismatch(f"engine 'openai' did not run the workload: {exc}; {S.hint(exc, self.cfg.url)}") from None
        seconds = time.perf_counter() - t0
        return S.account(workload, done, t0, seconds, self.cfg.url, self.server, info={"in_flight_limit": limit})

    def sync(self) -> None:
        """Every request has been answered when run() returns: nothing is in flight."""

    def devices(self) -> list[DeviceRef]:
        """The server's GPUs are not known from its API: name them with the nvml meter option devices=."""
        return []

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _model_config(root: str | None) -> dict[str, Any]:
    """The served model's config.json when the server names a local directory (vLLM's `root`)."""
    import json

    if not root or not os.path.isfile(os.path.join(root, "config.json")):
        return {}
    try:
        with open(os.path.join(root, "config.json")) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _vocab_and_special(cfg: Settings, server: S.ServerInfo) -> tuple[int, list[int]]:
    config = _model_config(server.root)
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    special: list[int] = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = text.get(key)
        special += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]
    vocab = cfg.vocab_size or (text.get("vocab_size") if isinstance(text.get("vocab_size"), int) else None)
    return int(vocab or DEFAULT_VOCAB), special


def build(spec: EngineSpec, transport: Any = None) -> OpenAIEngine:
    """`create` with the HTTP transport open (tests pass an httpx.MockTransport)."""
    cfg = settings(spec)
    try:
        import httpx  # noqa: F401  (lazily: installing the plugin must not import it)
    except ImportError:
        raise EngineUnavailable(f"httpx is not installed; {INSTALL_HINT}") from None
    from .openai_client import Client

    client = Client(cfg.url, cfg.timeout_s, transport=transport)
    try:
        server = S.discover(client, cfg.url, spec.model)
        mode = S.choose_prompt_mode(client, cfg, server)
        vocab, special = _vocab_and_special(cfg, server)
        pids = None
        parts = urlsplit(cfg.url)
        from .host import is_local, listening_pids

        if is_local(parts.hostname):
            pids = listening_pids(parts.port or (443 if parts.scheme == "https" else 80))
    except BaseException:
        client.close()
        raise
    return OpenAIEngine(cfg, client, server, mode, vocab, special, pids)


def create(spec: EngineSpec) -> OpenAIEngine:
    return build(spec)


def probe() -> tuple[bool, str]:
    """For `joules doctor` (no import)."""
    import importlib.util

    if importlib.util.find_spec("httpx") is None:
        return False, f"httpx is not installed; {INSTALL_HINT}"
    return True, f"measures a running OpenAI-compatible server (engine option url=, default {DEFAULT_URL})"

