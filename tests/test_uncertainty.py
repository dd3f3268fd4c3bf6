"""The bootstrap of a fitted model (uncertainty.py): intervals of n_out*, the band, the model file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_joules.models import analytical, uncertainty
from pytest_joules.models.analytical import FittedModel, Point
from pytest_joules.errors import DataError

TRUE = FittedModel("memflops", (0.03, 4e-7, 2e-5, 0.013, 1e-5, 0.3), 0.0, None, 49, (64, 4096), (64, 4096))
LEVELS = [64, 256, 1024, 4096]
DESIGN = [(n, m) for n in LEVELS for m in (64, 512, 4096)]  # 12 points: 6 residual degrees of freedom


def points(noise: float = 0.0, seed: int = 0, design=DESIGN) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(n, m, float(TRUE.predict(n, m) * (1 + noise * rng.standard_normal()))) for n, m in design]


def true_spot(n_in: int) -> float:
    return TRUE.sweet_spot(n_in).n_out_opt


def test_exact_points_give_intervals_that_shrink_to_the_true_sweet_spot():
    pts = points()
    fitted = analytical.fit("memflops", pts)
    u = uncertainty.bootstrap(fitted, pts)
    for n in LEVELS:
        iv = u.sweet_spot(n, fitted.n_out_range)
        assert iv.n_out.low == pytest.approx(true_spot(n), rel=1e-6) and iv.n_out.high == pytest.approx(true_spot(n), rel=1e-6)
        assert not iv.leaves_range and iv.defined == 1.0


def test_the_intervals_cover_the_true_sweet_spot_at_their_level():
    """200 noisy data sets (2% relative noise, as a noisy GPU gives): each interval is a 95% one."""
    covered, total = 0, 0
    for seed in range(200):
        pts = points(noise=0.02, seed=seed)
        fitted = analytical.fit("memflops", pts)
        u = uncertainty.bootstrap(fitted, pts, replicates=100, seed=seed)
        for n in (256, 1024):
            covered += u.sweet_spot(n, fitted.n_out_range).n_out.contains(true_spot(n))
            total += 1
    assert covered / total >= 0.9


def test_the_band_covers_the_true_curve_at_its_level():
    """Pointwise: on and between the measured points, over 100 noisy data sets."""
    where = ([64, 700, 4096], [300, 2000, 512])
    covered = 0
    for seed in range(100):
        pts = points(noise=0.02, seed=seed)
        fitted = analytical.fit("memflops", pts)
        low, high = uncertainty.bootstrap(fitted, pts, replicates=100, seed=seed).band(*where)
        truth = TRUE.predict(*where)
        assert np.all(low < high)
        covered += int(np.sum((low <= truth) & (truth <= high)))
    assert covered / 300 >= 0.9


def test_the_widening_is_t_over_z_for_the_residual_degrees_of_freedom():
    u = uncertainty.Uncertainty("memflops", np.ones(6), np.ones((2, 6)), df=2)
    assert u.widening == pytest.approx(4.3027 / 1.9600, rel=1e-3)
    assert uncertainty.Uncertainty("memflops", np.ones(6), np.ones((2, 6)), df=1000).widening == pytest.approx(1.0, abs=0.01)


def test_an_interval_that_leaves_the_range_or_has_no_upper_bound_says_so():
    # replicates whose θ4 is 0 have no sweet spot: J/out-token falls for ever, n_out* is unbounded
    samples = np.array([[0.03, 4e-7, 2e-5, 0.013, 0.0, 0.3]] * 10 + [list(TRUE.theta)] * 90)
    u = uncertainty.Uncertainty("memflops", np.asarray(TRUE.theta), samples, df=5)
    iv = u.sweet_spot(1024, (64, 512))
    assert iv.n_out.high == float("inf") and iv.leaves_range and iv.defined == pytest.approx(0.9)
    assert u.sweet_spot(1024, (64, 4096)).leaves_range  # ∞ leaves any range


def test_no_residual_no_uncertainty():
    pts = points(design=[(n, m) for n in (64, 4096) for m in (64, 512, 4096)])  # 6 points, 6 parameters
    fitted = analytical.fit("memflops", pts)
    with pytest.raises(DataError, match="6 distinct point.s. for the 6 parameters of the memflops model: no residual"):
        uncertainty.bootstrap(fitted, pts)


def test_the_replicates_round_trip_through_the_model_file(tmp_path):
    pts = points(noise=0.02, seed=1)
    fitted = analytical.fit("memflops", pts)
    u = uncertainty.bootstrap(fitted, pts, seed=1)
    path = tmp_path / "m.json"
    uncertainty.save(path, [(fitted, u), (analytical.fit("linear", pts), None)], simulated=True)
    assert [m.name for m in analytical.load_models(path)] == ["memflops", "linear"]  # the plugin still reads it
    back = uncertainty.load(path)
    assert set(back) == {"memflops"} and back["memflops"].df == u.df
    for n in LEVELS:
        a, b = u.sweet_spot(n, fitted.n_out_range).n_out, back["memflops"].sweet_spot(n, fitted.n_out_range).n_out
        assert b.low == pytest.approx(a.low, rel=1e-4) and b.high == pytest.approx(a.high, rel=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"theta_samples": [[1, 2]]}, "theta_samples must be a list of at least 2 lists of 6 finite numbers"),
    ({"df": 0}, "df must be a positive integer"),
    ({"level": 1.5}, "level must be a fraction between 0 and 1"),
])
def test_a_damaged_uncertainty_entry_is_one_line_naming_the_file(tmp_path, change, message):
    pts = points(noise=0.02)
    fitted = analytical.fit("memflops", pts)
    path = tmp_path / "m.json"
    uncertainty.save(path, [(fitted, uncertainty.bootstrap(fitted, pts, replicates=10))])
    doc = json.loads(path.read_text())
    doc["models"][0]["uncertainty"].update(change)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=f"{path}: models.0.: 'uncertainty' {message}"):
        uncertainty.load(path)


def test_models_without_residuals_or_a_sweet_spot_get_no_interval():
    pts = points(design=[(n, m) for n in (64, 4096) for m in (64, 512, 4096)] + [(512, 512)])  # 7 points
    models = [analytical.fit(name, pts) for name in ("flops", "memflops", "linear")]
    assert set(uncertainty.for_models(models, pts, replicates=10)) == {"flops", "memflops"}
    assert set(uncertainty.for_models(models, pts[:6], replicates=10)) == {"flops"}
