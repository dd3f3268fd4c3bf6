"""The HTTP side of the `openai` engine: one httpx.AsyncClient on an event loop of its own.

The loop runs in a daemon thread for the whole session, so its connection pool (keep-alive) is
made once, outside every measurement window, and each run only submits coroutines to it. The
requests of a run are in flight together, at most `concurrency` at once (an asyncio semaphore).
Streaming completions are read line by line as server-sent events; the arrival time of each
token chunk gives the request's time to first token and its decode time.

Every way a request can go wrong becomes a `ServerError` with one line that names the URL and
what to fix; the engine turns it into the error the measurement path reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

#: how long to wait for a connection (the whole request has the engine option `timeout`)
CONNECT_TIMEOUT_S = 10.0
#: idle connections kept between runs
KEEPALIVE = 1024


class ServerError(Exception):
    """A request failed; `status` is the HTTP status (None: no answer, a cut stream, bad JSON)."""

    def __init__(self, message: str, status: int | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # "connect", "timeout", "http", "stream", "json"


@dataclass
class Completion:
    """One streamed (or plain) completion as the client saw it."""

    index: int
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    #: perf_counter times of the chunks that carried output (one or more tokens each)
    token_times: list[float] = field(default_factory=list)
    done: bool = False  # the stream ended with [DONE] (or the plain response was complete)
    start: float = 0.0


def error_message(response: Any) -> str:
    """The server's own words from an error body: OpenAI's {"error": {"message"}}, vLLM's and
    SGLang's {"message"}, FastAPI's {"detail"}; else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            text = err.get("message")
        elif isinstance(err, str):
            text = err
        text = text or body.get("message") or body.get("detail")
    if not isinstance(text, str):
        text = str(text) if text else (response.text or "").strip()
    text = " ".join(text.split())
    return text[:300] + ("…" if len(text) > 300 else "")


class Client:
    """An httpx.AsyncClient for `base_url` (the API root, ending in /v1), used from sync code."""

    def __init__(self, base_url: str, timeout_s: float, transport: Any = None) -> None:
        import httpx

        self.httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pytest-joules-http", daemon=True)
        self._thread.start()
        # no cap on connections: the semaphore of each run is the only limit on requests in flight (a
        # pool cap would silently queue the rest); idle ones are kept for the next run
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=KEEPALIVE)
        timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))

        async def make() -> Any:
            return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits, transport=transport)

        self._client = self._call(make())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    # -- plain requests ----------------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        return self._call(self._request("GET", path, None))

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        return self._call(self._request("POST", path, body))

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        try:
            response = await self._client.request(method, path, json=body)
        except self.httpx.HTTPError as exc:
            raise self._transport_error(exc, path) from None
        if response.status_code >= 400:
            raise ServerError(f"{self.url(path)} answered {response.status_code} {response.reason_phrase}: "
                              f"{error_message(response)}", response.status_code, "http")
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{self.url(path)} answered {response.status_code} with something that is not JSON: "
                              f"{response.text[:120]!r}", response.status_code, "json") from None

    def _transport_error(self, exc: Exception, path: str) -> ServerError:
        httpx = self.httpx
        where = self.url(path)
        if isinstance(exc, httpx.TimeoutException):
            return ServerError(f"no answer from {where} within {self.timeout_s:g} s ({type(exc).__name__})", None, "timeout")
        if isinstance(exc, httpx.ConnectError):
            return ServerError(f"cannot connect to {where}: {exc or type(exc).__name__}", None, "connect")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return ServerError(f"{where}: the server closed the connection mid-answer ({exc or type(exc).__name__})",
                               None, "stream")
        return ServerError(f"{where}: {type(exc).__name__}: {exc}", None, "connect")

    # -- completions -------------------------------------------------------------------------------
    def complete_all(self, bodies: Sequence[dict[str, Any]], concurrency: int) -> tuple[float, list[Completion]]:
        """Send every body to /completions, at most `concurrency` in flight; returns the start time
        (perf_counter, taken just before the first request) and the completions in order."""
        return self._call(self._complete_all(list(bodies), concurrency))

    async def _complete_all(self, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, list[Completion]]:
        gate = asyncio.Semaphore(max(concurrency, 1))
        t0 = time.perf_counter()

        async def one(i: int, body: dict[str, Any]) -> Completion:
            async with gate:
                return await self._complete(i, body)

        tasks = [asyncio.ensure_future(one(i, b)) for i, b in enumerate(bodies)]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed: the rest are abandoned, not left running on the server
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return t0, list(done)

    async def _complete(self, index: int, body: dict[str, Any]) -> Completion:
        out = Completion(index=index, start=time.perf_counter())
        path = "completions"
        try:
            if body.get("stream"):
                async with self._client.stream("POST", path, json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise ServerError(f"{self.url(path)} answered {response.status_code} "
                                          f"{response.reason_phrase}: {error_message(response)}",
                                          response.status_code, "http")
                    async with contextlib.aclosing(response.aiter_lines()) as lines:
                        async for line in lines:
                            if _event(line, out):
                                break
            else:
                response = await self._client.post(path, json=body)
                if response.status_code >= 400:
                    raise ServerError(f"{self.url(path)} answered {response.status_code} {response.reason_phrase}: "
                                      f"{error_message(response)}", response.status_code, "http")
                _whole(response, out)
        except self.httpx.HTTPError as exc:
            raise self._transport_error(exc, path) from None
        return out

    def close(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._call(self._client.aclose())
            self._call(self._loop.shutdown_asyncgens())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


def _event(line: str, out: Completion) -> bool:
    """Take one server-sent-event line into `out`; True at the end of the stream ([DONE])."""
    line = line.strip()
    if not line.startswith("data:"):
        return False  # blank separators, comments (": ping"), event names
    data = line[5:].strip()
    if data == "[DONE]":
        out.done = True
        return True
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ServerError(f"request {out.index}: the stream sent a line that is not JSON: {data[:80]!r}",
                          None, "json") from None
    if not isinstance(chunk, dict):
        return False
    if isinstance(chunk.get("error"), (dict, str)):  # vLLM reports a failure inside the stream
        err = chunk["error"]
        text = err.get("message") if isinstance(err, dict) else err
        raise ServerError(f"request {out.index}: the server failed it mid-stream: {text}", None, "stream")
    choices = chunk.get("choices") or []
    if choices:
        out.token_times.append(time.perf_counter())
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        if reason:
            out.finish_reason = reason
    if isinstance(chunk.get("usage"), dict):
        out.usage = chunk["usage"]
    return False


def _whole(response: Any, out: Completion) -> None:
    try:
        body = response.json()
    except ValueError:
        raise ServerError(f"request {out.index}: the answer is not JSON: {response.text[:80]!r}", None, "json") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if choices:
        out.token_times.append(time.perf_counter())
        out.finish_reason = choices[0].get("finish_reason")
    out.usage = body.get("usage") if isinstance(body, dict) and isinstance(body.get("usage"), dict) else None
    out.done = True


@dataclass(frozen=True)
class Settings:
    """The openai engine's options, as `openai.settings` checked them."""

    url: str
    timeout_s: float = 600.0
    prompt: str = "auto"  # auto | tokens | text
    stream: bool = True
    vocab_size: int | None = None
