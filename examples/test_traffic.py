"""Traffic like production: the lengths of a chat service's requests, not one (n_in, n_out).

`mix=` takes the requests' lengths from a file as a serving log exports them (mixes/chat.jsonl:
prompt_tokens and completion_tokens per request; CSV works too); the test runs 16 of them,
sampled the same way on every run. Its baseline is keyed by the mix's content, so editing the file
makes it a new test. See docs/mixes.md.
"""

import pytest

CONCURRENT_USERS = 16


@pytest.mark.energy(mix="mixes/chat.jsonl", requests=CONCURRENT_USERS)
def test_chat_traffic(joules):
    m = joules()
    # Sent at once, the short replies finish first and the long ones run on in a shrinking batch:
    # the mix costs about twice what the per-point model predicts from requests of one length
    # ("vs model"). On an engine that serves over time, concurrency=16 keeps the batch full.
    assert m.j_per_out_token < 0.6, f"chat traffic costs {m.j_per_out_token:.3f} J/token, budget 0.6"
