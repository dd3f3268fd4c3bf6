"""Prompts from real text: a JSONL file of prompts, cut or padded to exactly n_in tokens.

Request i starts at prompt i of the file (wrapping around) and, when that prompt is shorter than
its n_in, goes on with the next prompts of the file until it has n_in tokens; then it is cut.
The tokens come from the engine's own tokenizer (`encode`), so "exactly n_in" holds for the model
that runs it. A file with fewer tokens than n_in in all has to be repeated within one prompt;
repeated text is what n-gram speculative decoding and a prefix cache feed on, so past
MAX_REPEATS repetitions it is no longer real text and the file is refused.

The simulator has no tokenizer: `sim_encode` counts one token per CHARS_PER_TOKEN characters
(the usual rule of thumb for English with a BPE vocabulary), and its energy does not depend on
the text (it models no prefix cache or speculative decoding): text prompts there check lengths.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError

#: the most times a request may repeat the whole file to reach its n_in
MAX_REPEATS = 8
#: the simulator's tokenizer rule: one token per 4 characters
CHARS_PER_TOKEN = 4
MAX_FILE_BYTES = 200 * 1024 * 1024
RANDOM = "random"
KEYS = ("prompt", "text")


@dataclass(frozen=True, eq=False)
class PromptFile:
    source: str
    texts: tuple[str, ...]
    digest: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptFile) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def label(self) -> str:
        return f"prompts={Path(self.source).name}#{self.digest[:6]}"


def _text(where: str, line: str) -> str:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg}); give one JSON string or {{\"prompt\": \"...\"}} per line") from None
    if isinstance(item, dict):
        key = next((k for k in KEYS if isinstance(item.get(k), str)), None)
        if key is None:
            raise ConfigError(f"{where}: an object without a \"prompt\" or \"text\" string; add one or drop the line")
        item = item[key]
    if not isinstance(item, str):
        raise ConfigError(f"{where}: expected a string or {{\"prompt\": \"...\"}}, got {type(item).__name__}")
    return item


def load(value: Any, base: str | os.PathLike[str] | None = None) -> PromptFile | None:
    """The marker's `prompts=`: None or "random" (random token ids), or a JSONL file of prompts."""
    if value is None or isinstance(value, PromptFile):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"prompts={value!r}: give 'random' or a JSONL file of text prompts")
    if str(value).strip().lower() == RANDOM:
        return None
    path = Path(value)
    if not path.is_absolute() and base is not None and not path.exists():
        path = Path(base) / path
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise ConfigError(f"prompts file {value}: more than {MAX_FILE_BYTES / 1e6:,.0f} MB; keep a sample of it")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"prompts file {value}: cannot read it ({exc.strerror or exc}); check the path (relative to the test file)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"prompts file {value}: not UTF-8 text; give JSONL, one prompt per line") from None
    texts = tuple(_text(f"prompts file {value} line {i}", line) for i, line in enumerate(lines, 1) if line.strip())
    if not any(t.strip() for t in texts):
        raise ConfigError(f"prompts file {value}: has no text; give one JSON string or {{\"prompt\": \"...\"}} per line")
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]
    return PromptFile(str(value), texts, digest)


def sim_encode(text: str, vocab: int = 32000) -> list[int]:
    """The simulator's tokenizer: one id per CHARS_PER_TOKEN characters (a stable hash of them)."""
    step = CHARS_PER_TOKEN
    return [zlib.crc32(text[i:i + step].encode()) % vocab for i in range(0, len(text), step)]


def token_prompts(prompts: PromptFile, lengths: Sequence[int], encode: Callable[[str], list[int]]) -> list[list[int]]:
    """One prompt of exactly lengths[i] tokens per request (see the module's docstring)."""
    encoded = [encode(t) for t in prompts.texts]
    total = sum(len(e) for e in encoded)
    longest = max(lengths, default=0)
    if total == 0 or longest > total * MAX_REPEATS:
        raise ConfigError(
            f"prompts file {prompts.source}: {total:,} tokens in all, so n_in={longest} would repeat it "
            f"{'without end' if total == 0 else f'{-(-longest // total)} times'} (at most {MAX_REPEATS}): "
            "use a file with more (or longer) prompts, or shorter inputs"
        )
    out = []
    for i, n in enumerate(lengths):
        ids: list[int] = []
        j = i % len(encoded)
        while len(ids) < n:
            ids.extend(encoded[j])
            j = (j + 1) % len(encoded)
        out.append(ids[:n])
    return out
