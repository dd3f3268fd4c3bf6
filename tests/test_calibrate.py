"""The calibration design (calibrate.py): candidates, pilot, sequential choice, cost model, budget."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_joules.models import analytical, design as calibrate
from pytest_joules.models.analytical import FittedModel
from pytest_joules.models.design import Measured, Plan
from pytest_joules.errors import ConfigError

LEVELS = [64, 128, 256, 512, 1024, 2048, 4096]
GRID = [(n, m) for n in LEVELS for m in LEVELS]
ENERGY = FittedModel("memflops", (0.03, 4e-7, 2e-5, 0.013, 1e-5, 0.3), 0.0, None, 49, (64, 4096), (64, 4096))
#: seconds per output token, in the same form: decode grows with m, prefill with n and n²; no 1/m
#: term, so that the 5-point pilot's FLOPs-form time model can be exact
TIME = FittedModel("memflops", (4e-4, 3e-9, 2e-7, 1e-4, 2e-8, 0.0), 0.0, None, 49, (64, 4096), (64, 4096))
REQUESTS, WARMUP, ROUNDS, WINDOW, OVERHEAD = 10, 1, 3, 1.0, 0.2


def exact_source(log: list | None = None, time: FittedModel = TIME):
    """A device that is exactly the models above, measured 3 rounds with the measure path's structure."""

    def source(n_in: int, n_out: int) -> Measured:
        run = time.predict(n_in, n_out) * REQUESTS * n_out
        reps = max(1, int(np.ceil(WINDOW / run)))
        cost = (WARMUP + ROUNDS * reps) * run + ROUNDS * OVERHEAD
        if log is not None:
            log.append((n_in, n_out))
        j = ENERGY.predict(n_in, n_out)
        return Measured(n_in, n_out, j, (j,) * ROUNDS, run, WARMUP + ROUNDS * reps, ROUNDS, cost)

    return source


def plan(**kw) -> Plan:
    return Plan("memflops", GRID, REQUESTS, warmup=WARMUP, min_window_s=WINDOW, rounds=ROUNDS, **kw)


def grid_variance(name: str, points: list[tuple[int, int]]) -> float:
    """Summed relative prediction variance over GRID of a fit to `points` (the design's criterion)."""
    n, m = np.asarray(GRID, dtype=float).T
    rows = analytical.features(name, n, m) / ENERGY.predict(n, m)[:, None]
    pn, pm = np.asarray(points, dtype=float).T
    a = analytical.features(name, pn, pm) / ENERGY.predict(pn, pm)[:, None]
    return float(np.trace(rows @ np.linalg.inv(a.T @ a) @ rows.T))


def test_levels_are_the_papers_grid_and_a_range_can_be_one_length():
    assert calibrate.levels(64, 4096) == LEVELS
    assert calibrate.levels(100, 100) == [100]
    assert calibrate.levels(16, 256, 5) == [16, 32, 64, 128, 256]
    with pytest.raises(ConfigError, match="LOW:HIGH"):
        calibrate.levels(512, 64)


def test_candidates_leave_out_points_beyond_the_context():
    grid = calibrate.candidate_grid(LEVELS, LEVELS, max_positions=2048)
    assert (1024, 1024) in grid and (1024, 2048) not in grid and all(n + m <= 2048 for n, m in grid)
    with pytest.raises(ConfigError, match="no .n_in, n_out. of the range fits the model's 100 positions"):
        calibrate.candidate_grid([64], [64], max_positions=100)


def flops_rank(points: list[tuple[int, int]]) -> int:
    x = analytical.features("flops", *np.asarray(points, dtype=float).T)
    return int(np.linalg.matrix_rank(x / np.linalg.norm(x, axis=0), tol=1e-10))


def test_the_pilot_is_the_corners_the_centre_and_a_point_that_determines_the_flops_model():
    first = calibrate.pilot(GRID)
    assert first[:5] == [(64, 64), (64, 4096), (4096, 64), (4096, 4096), (512, 512)]
    # on a square log grid the corners and the centre cannot tell the FLOPs terms apart
    assert flops_rank(first[:5]) == 4 and flops_rank(first) == 5
    # a corner beyond the context is replaced by the nearest candidate
    grid = calibrate.candidate_grid(LEVELS, LEVELS, max_positions=4096)
    assert calibrate.pilot(grid)[3] in {(2048, 2048), (2048, 1024), (1024, 2048)}


def test_on_an_exact_device_the_design_recovers_the_model_with_eight_points():
    cal = calibrate.run(plan(points=8), exact_source())
    assert len(cal.steps) == 8 and len({(m.n_in, m.n_out) for m in cal.measured}) == 8
    assert [s.reason for s in cal.steps] == ["pilot"] * 6 + ["design"] * 2
    fitted = analytical.fit("memflops", cal.points)
    n, m = np.asarray(GRID, dtype=float).T
    assert np.max(np.abs(fitted.predict(n, m) / ENERGY.predict(n, m) - 1)) < 1e-6
    assert all(0 < s.gain <= 1 for s in cal.steps[6:])  # each pick's predicted share of the variance


def test_the_design_is_repeatable():
    first, second = calibrate.run(plan(points=9), exact_source()), calibrate.run(plan(points=9), exact_source())
    assert [(m.n_in, m.n_out) for m in first.measured] == [(m.n_in, m.n_out) for m in second.measured]


def test_the_design_leaves_less_prediction_variance_than_a_naive_3x3():
    chosen = [(m.n_in, m.n_out) for m in calibrate.run(plan(points=8), exact_source()).measured]
    naive = [(n, m) for n in (64, 512, 4096) for m in (64, 512, 4096) if (n, m) != (512, 512)]
    assert grid_variance("memflops", chosen) < grid_variance("memflops", naive)


def test_the_gain_of_each_candidate_is_the_drop_in_summed_variance_it_would_bring():
    measured = [(64, 64), (64, 4096), (4096, 64), (4096, 4096), (512, 512), (2048, 64), (1024, 128)]
    n, m = np.asarray(GRID, dtype=float).T
    gains = calibrate.gains("memflops", GRID, ENERGY.predict(n, m), measured, [ENERGY.predict(*p) for p in measured])
    before = grid_variance("memflops", measured)
    for c in [(128, 256), (2048, 1024), (64, 512)]:
        after = grid_variance("memflops", measured + [c])
        assert gains[GRID.index(c)] == pytest.approx((before - after) / before, rel=1e-3)


def test_the_cost_model_predicts_what_points_cost_from_the_pilot():
    log: list = []
    source = exact_source(log)
    pilot = [source(*p) for p in calibrate.pilot(GRID)]
    costs = calibrate.cost_model(pilot, REQUESTS, WARMUP, WINDOW, ROUNDS)
    assert costs.overhead_s == pytest.approx(OVERHEAD, rel=1e-6)
    for n, m in [(128, 64), (1024, 1024), (64, 2048), (4096, 256)]:
        assert costs.cost(n, m) == pytest.approx(source(n, m).cost_s, rel=1e-4)
    # a point at n_out 4096 costs tens of times one at 64: the budget must see that
    assert costs.cost(64, 4096) > 10 * costs.cost(64, 64)


def test_with_more_points_the_time_model_takes_the_memflops_form():
    time = FittedModel("memflops", TIME.theta[:5] + (2e-3,), 0.0, None, 49, (64, 4096), (64, 4096))
    source = exact_source(time=time)
    pilot = [source(*p) for p in calibrate.pilot(GRID)]
    five = calibrate.cost_model(pilot[:5] + pilot[6:], REQUESTS, WARMUP, WINDOW, ROUNDS)
    six = calibrate.cost_model(pilot + [source(1024, 128)], REQUESTS, WARMUP, WINDOW, ROUNDS)
    assert five.time_model.name == "flops" and six.time_model.name == "memflops"
    assert six.cost(128, 64) == pytest.approx(source(128, 64).cost_s, rel=1e-4)
    assert abs(five.cost(128, 64) / source(128, 64).cost_s - 1) > 0.01  # what the 5-point form misses


def test_a_budget_buys_points_by_information_per_second_and_stays_within_it():
    budget = 1.25 * sum(exact_source()(*p).cost_s for p in calibrate.pilot(GRID))
    cal = calibrate.run(plan(budget_s=budget), exact_source())
    assert cal.cost_s <= budget and cal.stopped.startswith("no candidate fits")
    spent = 0.0
    for step in cal.steps:
        if step.reason == "design":  # each pick was predicted to fit in what was left, and its prediction held
            assert step.predicted_cost_s <= budget - spent
            assert step.predicted_cost_s == pytest.approx(step.measured.cost_s, rel=1e-4)
        spent += step.measured.cost_s
    # per second, cheap points win: the same number of points chosen per point costs more
    per_point = calibrate.run(plan(points=len(cal.steps)), exact_source())
    assert per_point.cost_s > cal.cost_s


def test_a_budget_the_pilot_exhausts_is_an_error_naming_the_fix():
    with pytest.raises(ConfigError, match="needs at least 7: give a larger --budget-minutes"):
        calibrate.run(plan(budget_s=1.0), exact_source())


@pytest.mark.parametrize("kw, message", [
    (dict(points=6), "--points 6: the memflops model has 6 parameters; it needs at least 7"),
    (dict(points=8, budget_s=60.0), "either a number of points or a time budget"),
    (dict(), "either a number of points or a time budget"),
])
def test_plans_that_cannot_work_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        plan(**kw)


def test_a_range_with_too_few_candidates_is_refused():
    with pytest.raises(ConfigError, match="holds 4 candidate point.s.; the memflops model needs at least 7"):
        Plan("memflops", [(64, 64), (64, 128), (128, 64), (128, 128)], 1, points=7)
