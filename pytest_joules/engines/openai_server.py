"""What the `openai` engine learns from and checks against a server: its identity, whether it takes
token-id prompts, text prompts of an exact length, and the accounting of every completion.

Messages name the URL and the setting to fix; the docs (docs/serving.md) cite where each server
documents what is relied on here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit

from ..errors import ConfigError, WorkloadMismatch
from .workload import EngineRun, Workload
from .openai_client import Completion, ServerError

if TYPE_CHECKING:
    from .openai_client import Settings

__all__ = ["ServerError", "ServerInfo", "discover", "choose_prompt_mode", "text_prompts", "account", "hint"]

START_HINT = ("start it (e.g. python -m vllm.entrypoints.openai.api_server --model DIR --port 8000) or point "
              "--joules-engine-option url=... at it")


@dataclass(frozen=True)
class ServerInfo:
    model: str
    kind: str = ""  # the model card's owned_by: "vllm", "sglang", ...
    version: str | None = None
    max_model_len: int | None = None
    root: str | None = None  # where the server loaded the model from (vLLM's model card)


def root_url(url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /version, /tokenize and /health live)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    path = path[: -len("/v1")] if path.endswith("/v1") else path
    return f"{parts.scheme}://{parts.netloc}{path}"


def hint(exc: ServerError, url: str) -> str:
    """What to do about a failed request."""
    if exc.kind == "connect":
        return f"is the server at {url} still running? {START_HINT}"
    if exc.kind == "timeout":
        return "raise --joules-engine-option timeout=SECONDS, or check the server's log for a stuck request"
    if exc.kind == "stream":
        return "the server stopped answering mid-request (crashed or restarted?); see its log"
    if exc.status is not None and exc.status >= 500:
        return "the server failed the request; see its log"
    if exc.status is not None:
        return "the server refused the request; it may not take token-id prompts, min_tokens or ignore_eos (docs/serving.md)"
    return "see the server's log"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def discover(client: Any, url: str, wanted: str | None) -> ServerInfo:
    """The served model (the one asked for, or the only one), its max_model_len and the server's version."""
    try:
        listing = client.get_json("models")
    except ServerError as exc:
        if exc.kind in ("connect", "timeout"):
            raise ConfigError(f"no OpenAI-compatible server answers at {url} ({exc}); {START_HINT}") from None
        if exc.status == 404:
            raise ConfigError(f"{url}/models answered 404: {url} is not the API root of an OpenAI-compatible server; "
                              "give the URL up to /v1 (--joules-engine-option url=http://127.0.0.1:8000/v1)") from None
        raise ConfigError(f"{url}/models failed: {exc}") from None
    cards = [c for c in (listing.get("data") if isinstance(listing, dict) else None) or [] if isinstance(c, dict) and c.get("id")]
    if not cards:
        raise ConfigError(f"{url}/models lists no model; is this an OpenAI-compatible server?")
    ids = [str(c["id"]) for c in cards]
    if wanted:
        found = [c for c in cards if str(c["id"]) == wanted or str(c.get("root") or "") == wanted]
        if not found:
            fix = f"pass --joules-model {ids[0]}, or leave it out" if len(ids) == 1 else "pass one of them to --joules-model"
            raise ConfigError(f"the server at {url} does not serve model {wanted!r}; it serves "
                              f"{', '.join(map(repr, ids))}: {fix}")
        card = found[0]
    elif len(cards) > 1:
        raise ConfigError(f"the server at {url} serves {len(cards)} models ({', '.join(map(repr, ids))}); "
                          "name one with --joules-model")
    else:
        card = cards[0]
    version = None
    for path in ("version", "server_info", "get_server_info"):  # vLLM, SGLang (newer, older)
        try:
            answer = client.get_json(f"{root_url(url)}/{path}")
        except ServerError:
            continue
        if isinstance(answer, dict) and answer.get("version"):
            version = str(answer["version"])
            break
    root = card.get("root") if isinstance(card.get("root"), str) else None
    return ServerInfo(model=str(card["id"]), kind=str(card.get("owned_by") or ""), version=version,
                      max_model_len=_int(card.get("max_model_len")), root=root)


def choose_prompt_mode(client: Any, cfg: Settings, server: ServerInfo) -> str:
    """tokens, or text when asked for or when the server refuses a token-id prompt (a one-token probe)."""
    if cfg.prompt == "text":
        _check_tokenize(client, cfg.url, server.model)
        return "text"
    probe = {"model": server.model, "prompt": [1, 2, 3, 4], "max_tokens": 1, "min_tokens": 1, "ignore_eos": True,
             "temperature": 0.0, "stream": False}
    try:
        client.post_json("completions", probe)
        return "tokens"
    except ServerError as exc:
        if exc.kind in ("connect", "timeout") or exc.status is None or exc.status >= 500 or cfg.prompt == "tokens":
            raise ConfigError(f"the server at {cfg.url} failed a one-token completion with a token-id prompt "
                              f"({exc}); {hint(exc, cfg.url)}") from None
        refused = str(exc)
    try:
        _check_tokenize(client, cfg.url, server.model)
    except ConfigError as exc:
        raise ConfigError(f"the server at {cfg.url} refuses token-id prompts ({refused}) and {exc}") from None
    return "text"


def _tokenize(client: Any, url: str, model: str, text: str) -> int:
    answer = client.post_json(f"{root_url(url)}/tokenize", {"model": model, "prompt": text})
    count = answer.get("count") if isinstance(answer, dict) else None
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if not isinstance(count, int):
        count = len(tokens) if isinstance(tokens, list) else None
    if count is None:
        raise ServerError(f"{root_url(url)}/tokenize gave no token count: {str(answer)[:80]}", None, "json")
    return count


def _check_tokenize(client: Any, url: str, model: str) -> None:
    try:
        _tokenize(client, url, model, "pytest joules")
    except ServerError as exc:
        raise ConfigError(f"it has no working tokenize endpoint to confirm text prompt lengths ({exc}): exact token "
                          "counts are impossible; use a server that takes token-id prompts (vLLM, SGLang, trtllm-serve)") from None


WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name").split()


def text_prompts(client: Any, model: str, workload: Workload, url: str = "", tries: int = 20) -> list[str]:
    """`requests` distinct texts that the server tokenizes to exactly n_in tokens (its /tokenize,
    with the completions endpoint's default add_special_tokens, so BOS counts as it will)."""
    rng = random.Random(f"pytest-joules-text:{workload.seed}:{workload.n_in}")
    base = url or client.base_url
    out: list[str] = []
    for i in range(workload.requests):
        for _ in range(tries):
            words = [rng.choice(WORDS) for _ in range(workload.n_in + 8)]
            words[0] = f"{i}"  # distinct prompts
            lo, hi = 1, len(words)
            while lo < hi:  # the fewest words reaching n_in tokens
                mid = (lo + hi) // 2
                if _tokenize(client, base, model, " ".join(words[:mid])) >= workload.n_in:
                    hi = mid
                else:
                    lo = mid + 1
            text = " ".join(words[:lo])
            if _tokenize(client, base, model, text) == workload.n_in:
                out.append(text)
                break
        else:
            raise ServerError(f"no text of exactly {workload.n_in} tokens found in {tries} tries", None, "json")
    return out


def _usage_problem(i: int, c: Completion, workload: Workload, url: str) -> str | None:
    usage = c.usage
    if not c.done and c.finish_reason is None:
        return (f"the stream of request {i} was cut short after {len(c.token_times)} chunk(s), without a finish reason "
                f"or [DONE]: the server at {url} closed it (crashed or restarted?); see its log")
    if usage is None:
        return (f"the server at {url} sent no usage for request {i}: it must support stream_options.include_usage "
                "(vLLM, SGLang and trtllm-serve do), or set --joules-engine-option stream=false")
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt != workload.n_in:
        return (f"the server at {url} counted {prompt} prompt tokens for request {i}, asked for {workload.n_in}: it "
                "changed the prompt (added special tokens, or a chat template); use a /v1/completions server that "
                "takes token-id prompts as given, or --joules-engine-option prompt=text")
    if completion != workload.n_out:
        if c.finish_reason == "length":
            fix = ("it lowered max_tokens: raise its context (vLLM --max-model-len) above n_in + n_out = "
                   f"{workload.n_in + workload.n_out}")
        else:
            fix = (f"it stopped with finish_reason {c.finish_reason!r}: it ignored min_tokens/ignore_eos (vLLM, SGLang "
                   "and trtllm-serve take both; check for a server-side stop setting such as a generation config)")
        return (f"the server at {url} generated {completion} tokens for request {i}, asked for exactly "
                f"{workload.n_out}: {fix}")
    return None


def account(workload: Workload, done: Sequence[Completion], t0: float, seconds: float, url: str,
            server: ServerInfo, info: dict[str, Any] | None = None) -> EngineRun:
    """Check every completion's usage against the workload and collect the latencies; a mismatch
    raises WorkloadMismatch naming the server setting (the round and the test are not kept)."""
    ins, outs, ttft, tpot, problems = [], [], [], [], []
    cached = 0
    for i, c in enumerate(done):
        problem = _usage_problem(i, c, workload, url)
        if problem:
            raise WorkloadMismatch(f"engine 'openai' did not run the workload: {problem}")
        assert c.usage is not None
        ins.append(int(c.usage["prompt_tokens"]))
        outs.append(int(c.usage["completion_tokens"]))
        details = c.usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            cached += details["cached_tokens"]
        if c.token_times:
            ttft.append(c.token_times[0] - t0)
            if workload.n_out > 1 and len(c.token_times) > 1:
                tpot.append((c.token_times[-1] - c.token_times[0]) / (workload.n_out - 1))
    if cached:
        # the energy of a prefill the server skipped is not the workload's
        problems.append(f"the server at {url} took {cached} prompt tokens from its prefix cache: this round did less "
                        "prefill than asked; turn the prefix cache off (vLLM --no-enable-prefix-caching, SGLang "
                        "--disable-radix-cache)")
    extra = {"server": server.kind or "unknown", "chunks": sum(len(c.token_times) for c in done), **(info or {})}
    return EngineRun(input_tokens=ins, output_tokens=outs, seconds=seconds, info=extra, problems=problems,
                     ttft_s=ttft, tpot_s=tpot)
