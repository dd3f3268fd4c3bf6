"""A grid: lists for n_in / n_out make one test per pair, with ids like [n_in=128-n_out=64].
The summary then shows where this deployment sits on the sweet-spot curve."""

import pytest

CONCURRENT_USERS = 16


@pytest.mark.energy(n_in=[128, 512, 2048], n_out=[64, 256, 1024], requests=CONCURRENT_USERS)
def test_efficiency_grid(joules):
    m = joules()
    assert m.spread is not None and m.spread < 0.05, f"rounds disagree by {m.spread:.1%}"
