"""Code completion: the file around the cursor in, a handful of tokens out."""

import pytest

CONCURRENT_USERS = 16


@pytest.mark.energy(n_in=1024, n_out=64, requests=CONCURRENT_USERS)
def test_complete_line(joules):
    m = joules()
    assert m.valid and not m.problems


@pytest.mark.energy(n_in=2048, n_out=32, requests=CONCURRENT_USERS)
def test_complete_token_burst(joules):
    # n_out=32 lies below the model's fitted range (64-4096): its model error is shown with a
    # '*' and left out of the session MAPE.
    joules()
