"""Benchmarks of model fitting, leave-one-out included.

    pytest benchmarks/bench_fit.py --benchmark-only -p no:cacheprovider

Data: J/out-token from known memflops parameters with 3% Gaussian noise, on the paper's 7x7
grid of powers of two (64..4096) and on 1,000 log-uniform random (n_in, n_out) in the same box.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_joules.models.analytical import MODEL_NAMES, FittedModel, Point, fit, fit_all, loo_mape_by_refit

TRUE = FittedModel("memflops", (0.05, 2e-7, 1e-5, 3e-4, 2e-5, 1.5), 0.0, None, 1, (64, 4096), (64, 4096))
GRID = [64, 128, 256, 512, 1024, 2048, 4096]


def _noisy(pairs, seed=0):
    rng = np.random.default_rng(seed)
    return [Point(int(n), int(m), TRUE.predict(int(n), int(m)) * (1 + 0.03 * rng.standard_normal())) for n, m in pairs]


GRID_POINTS = _noisy([(n, m) for n in GRID for m in GRID])
_rng = np.random.default_rng(1)
RANDOM_POINTS = _noisy(zip(np.exp2(_rng.uniform(6, 12, 1000)).round(), np.exp2(_rng.uniform(6, 12, 1000)).round()), seed=2)


def _check(models):
    assert [m.name for m in models] == list(MODEL_NAMES)
    assert all(m.loo_mape is not None for m in models)
    assert models[1].mape < 0.04  # memflops on memflops data: about the noise


def test_fit_all_7x7_grid(benchmark):
    _check(benchmark(fit_all, GRID_POINTS))


def test_fit_all_1000_points(benchmark):
    _check(benchmark(fit_all, RANDOM_POINTS))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fit_one_model_1000_points(benchmark, name):
    assert benchmark(fit, name, RANDOM_POINTS).loo_mape is not None


def test_loo_by_refitting_7x7_grid(benchmark):
    """The definition (one refit per point), to compare with the exact shortcut above."""
    value = benchmark(loo_mape_by_refit, "memflops", GRID_POINTS)
    assert value == pytest.approx(fit("memflops", GRID_POINTS).loo_mape, rel=1e-9)


def test_loo_by_refitting_1000_points(benchmark):
    value = benchmark.pedantic(loo_mape_by_refit, ("memflops", RANDOM_POINTS), rounds=1, iterations=1)
    assert value == pytest.approx(fit("memflops", RANDOM_POINTS).loo_mape, rel=1e-9)
