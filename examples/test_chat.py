"""Chat: a system prompt plus a few turns of history in, a reply of a few hundred tokens out.

Each test declares the shape of one request and how many users are served at once; the
`joules` fixture runs it on the configured engine (the SIMULATED H100 unless --joules-engine
says otherwise) and fails the test if it got more than 5% more expensive than its baseline.
"""

import pytest

#: users served at once in production; the fitted model beside the baselines assumes the same
CONCURRENT_USERS = 16


@pytest.mark.energy(n_in=512, n_out=256, requests=CONCURRENT_USERS)
def test_chat_turn(joules):
    m = joules()
    # Our energy budget for a chat reply, independent of any baseline.
    assert m.j_per_out_token < 0.35, f"a chat reply costs {m.j_per_out_token:.3f} J/token, budget 0.35"


@pytest.mark.energy(n_in=128, n_out=128, requests=CONCURRENT_USERS, model_tolerance=0.05)
def test_short_question(joules):
    # model_tolerance: this test also fails if the fitted model is more than 5% off here.
    m = joules()
    assert m.tokens_per_joule > 3
