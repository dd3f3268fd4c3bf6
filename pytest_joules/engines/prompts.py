"""Random token-id prompts for real engines: exactly n_in ids each, distinct across requests.

Distinct prompts keep a prefix cache from skipping prefill work; avoiding special ids keeps a
model from treating a prompt token as BOS/EOS/padding. Pure stdlib, seeded by the workload.
"""

from __future__ import annotations

import random
from typing import Iterable

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
    rng = random.Random(f"pytest-joules:{workload.seed}:{workload.n_in}")
    seen: set[tuple[int, ...]] = set()
    prompts: list[list[int]] = []
    for _ in range(workload.requests):
        for _ in range(_MAX_TRIES):
            prompt = _one_prompt(rng, workload.n_in, vocab_size, special, allowed)
            key = tuple(prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(prompt)
                break
        else:
            raise ConfigError(
                f"cannot build {workload.requests} distinct prompts of {workload.n_in} tokens from a "
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
