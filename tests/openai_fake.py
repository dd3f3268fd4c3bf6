"""A small OpenAI-compatible server (stdlib http.server in a thread) for the openai engine's fast tests.

It answers /v1/models, /version, /tokenize and /v1/completions like vLLM's (streamed server-sent
events, one chunk per token, a usage chunk when stream_options.include_usage is set), and can be
told to misbehave the ways real servers do: refuse token ids, fail with a status, answer slowly,
cut a stream short, count other usage, stop early, serve another model. Bound to 127.0.0.1 on a
free port; `stop()` shuts it down (the fixture does, always).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    models: list[str] = field(default_factory=lambda: ["tiny"])
    max_model_len: int | None = 1024
    owned_by: str = "vllm"
    version: str | None = "0.0-fake"
    token_ids: bool = True  # takes a list of token ids as the prompt
    tokenize: bool = True
    status: int | None = None  # answer every completion with this HTTP status
    delay_s: float = 0.0  # before answering a completion
    misbehave_after: int = 0  # status and delay_s apply after this many completions (1: the engine's probe passes)
    cut_after: int | None = None  # close a stream after this many tokens
    extra_prompt_tokens: int = 0  # usage counts this many more prompt tokens (a BOS added)
    stop_after: int | None = None  # stop with finish_reason "stop" after this many tokens
    usage: bool = True
    cached_tokens: int = 0
    token_delay_s: float = 0.0
    #: every completion request body received
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # a stopped server leaves no kept-alive connection behind
        self.end_headers()
        self.close_connection = True
        self.wfile.write(data)

    def do_GET(self) -> None:
        b = self.server.behaviour
        if self.path == "/v1/models":
            cards = [{"id": m, "object": "model", "owned_by": b.owned_by, "root": m,
                      **({"max_model_len": b.max_model_len} if b.max_model_len else {})} for m in b.models]
            self._json(200, {"object": "list", "data": cards})
        elif self.path == "/version" and b.version:
            self._json(200, {"version": b.version})
        elif self.path == "/health":
            self._json(200, {})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        b = self.server.behaviour
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/tokenize" and b.tokenize:
            words = str(body.get("prompt", "")).split()
            self._json(200, {"count": len(words) + 1, "tokens": list(range(len(words) + 1)), "max_model_len": 1024})
        elif self.path == "/v1/completions":
            with b.lock:
                b.in_flight += 1
                b.most_in_flight = max(b.most_in_flight, b.in_flight)
            try:
                self._complete(b, body)
            finally:
                with b.lock:
                    b.in_flight -= 1
        else:
            self._json(404, {"detail": "Not Found"})

    def _complete(self, b: Behaviour, body: dict[str, Any]) -> None:
        b.bodies.append(body)
        if body.get("model") not in b.models:
            self._json(404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.", "code": 404})
            return
        prompt = body.get("prompt")
        if isinstance(prompt, list) and not b.token_ids:
            self._json(400, {"error": {"message": "prompt must be a string", "type": "BadRequestError", "code": 400}})
            return
        late = len(b.bodies) > b.misbehave_after
        if b.status is not None and late:
            self._json(b.status, {"object": "error", "message": "fake failure", "type": "InternalServerError", "code": b.status})
            return
        if late:
            time.sleep(b.delay_s)
        n_in = len(prompt) if isinstance(prompt, list) else len(str(prompt).split()) + 1
        n_out = int(body.get("max_tokens") or 16)
        made = n_out if b.stop_after is None else min(n_out, b.stop_after)
        usage = {"prompt_tokens": n_in + b.extra_prompt_tokens, "completion_tokens": made,
                 "total_tokens": n_in + made, "prompt_tokens_details": {"cached_tokens": b.cached_tokens}}
        reason = "length" if made == n_out else "stop"
        if not body.get("stream"):
            self._json(200, {"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                             "choices": [{"index": 0, "text": " w" * made, "finish_reason": reason}],
                             **({"usage": usage} if b.usage else {})})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for k in range(made):
            if b.cut_after is not None and k >= b.cut_after:
                self.wfile.flush()
                self.close_connection = True
                return
            choice = {"index": 0, "text": " w", "finish_reason": reason if k == made - 1 else None}
            self._event({"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": [choice]})
            time.sleep(b.token_delay_s)
        if b.usage and (body.get("stream_options") or {}).get("include_usage"):
            self._event({"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, chunk: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) leaves a broken pipe: expected here


class FakeOpenAIServer:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.behaviour = self.behaviour
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
