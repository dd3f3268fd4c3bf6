"""Random token-id prompts for real engines: exactly n_in ids each, distinct across requests.

Distinct prompts keep a prefix cache from skipping prefill work; avoiding special ids keeps a
model from treating a prompt token as BOS/EOS/padding. Pure stdlib, seeded by the workload.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

from ..errors import ConfigError
from .workload import Workload

_MAX_TRIES = 100


def random_prompts(workload: Workload, vocab_size: int, special_ids: Iterable[int | None] = ()) -> list[list[int]]:
    """`workload.requests` lists of `workload.n_in` token ids in [0, vocab_size), none special.

    Within a prompt the ids are distinct while the vocabulary allows it; across requests the
    prompts are always distinct. The same workload (with its seed) gives the same prompts.
    """
    special = {int(i) for i in special_ids if i is not None and 0 <= int(i) < vocab_size}
    allowed = vocab_size - len(special)
    if allowed <= 0:
        raise ConfigError(f"a vocabulary of {vocab_size} ids has no non-special token to build prompts from")
    # a mix's requests differ in length (engines/mix.py); each gets a prompt of its own length
    rng = random.Random(f"pytest-joules:{workload.seed}:{workload.mix.digest if workload.mix else workload.n_in}")
    seen: set[tuple[int, ...]] = set()
    prompts: list[list[int]] = []
    for n_in, _ in workload.lengths():
        for _ in range(_MAX_TRIES):
            prompt = _one_prompt(rng, n_in, vocab_size, special, allowed)
            key = tuple(prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(prompt)
                break
        else:
            raise ConfigError(
                f"cannot build {workload.requests} distinct prompts of {n_in} tokens from a "
                f"vocabulary of {allowed} usable ids; use fewer requests or longer prompts"
            )
    return prompts


def _one_prompt(rng: random.Random, n: int, vocab: int, special: set[int], allowed: int) -> list[int]:
    if n <= allowed:
        # sample without replacement over the full range, then drop the special ids
        ids = [i for i in rng.sample(range(vocab), min(vocab, n + len(special))) if i not in special]
        return ids[:n]
    ids = []
    while len(ids) < n:  # longer than the vocabulary: repeats are unavoidable
        i = rng.randrange(vocab)
        if i not in special:
            ids.append(i)
    return ids


def prompt_ids(workload: Workload, vocab_size: int, special_ids: Iterable[int | None] = (),
               encode: Callable[[str], list[int]] | None = None, engine: str = "this engine") -> list[list[int]]:
    """Each request's prompt: random ids, or the workload's text prompts cut to its n_in with the
    engine's tokenizer `encode` (engines/prompt_text.py); ConfigError when there is no tokenizer."""
    if workload.prompts is None:
        return random_prompts(workload, vocab_size, special_ids)
    if encode is None:
        raise ConfigError(f"{workload.prompts.label()}: {engine} has no tokenizer to cut text prompts to n_in "
                          "tokens; point it at a model directory with a tokenizer, or use prompts='random'")
    from .prompt_text import token_prompts

    return token_prompts(workload.prompts, [n for n, _ in workload.lengths()], encode)


def load_tokenizer(path: str | None) -> Callable[[str], list[int]] | None:
    """`encode` of the transformers tokenizer saved in a model directory, or None when it has none."""
    import os

    files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    if not path or not any(os.path.isfile(os.path.join(path, f)) for f in files):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer in {path}: {exc}") from None

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    return encode
