"""Which (n_in, n_out) to measure for a fitted energy model: a sequential design (`joules calibrate`).

The fit (analytical.py) minimises relative error: row i of its least squares is x_i / E_i, where x_i
are the model's terms at the point and E_i its J/out-token. So the precision of the fitted model,
and hence which points are worth measuring, depends on the energies themselves, unknown before
measuring. The design therefore runs in two stages:

1. A pilot: the four corners of the range and its centre (on a log scale), and the candidate
   that best determines the FLOPs model with them (see `pilot`): enough to fit it, for an
   estimate Ê of J/out-token everywhere and a model of each point's cost.
2. Then, one point at a time, the candidate that most reduces the prediction uncertainty over the
   whole range (per point, or per second it costs under a budget). With relative rows a = x/Ê and the information matrix
   M = Σ a_i a_iᵀ of the points measured so far, the relative variance of the prediction at z is
   proportional to a_zᵀ M⁻¹ a_z; adding point c lowers its sum over the grid by
   ‖A M⁻¹ a_c‖² / (1 + a_cᵀ M⁻¹ a_c) (Sherman-Morrison): the sequential I-optimal design. While M
   is singular (fewer points than parameters), a weak ridge prior stands in, so the first picks
   are the points that pin the unidentified terms.
   With a number of points (--points) each pick is the largest cut; with a budget
   (--budget-minutes) the largest cut per predicted second, the greedy rule for a knapsack: a
   point at n_out = 4096 costs 64 times one at 64 and must be worth it. Per point, not per second,
   with a fixed count: 8 points chosen per second are cheap points at short outputs, and on the
   simulated H200 (Llama-3.1-8B, 16 seeds) their sweet-spot intervals held the true optimum in 87%
   of rows against 98% for 8 chosen per point, for 2% less device time.

The candidates are the grid a sweep would measure: GRID_LEVELS lengths per axis, spaced
geometrically over the range (7 powers of two for 64:4096, the paper's grid), without points
beyond the model's context.

A point's cost is predicted by a model of time fitted like the energy one: seconds per output
token in the FLOPs/Memory+FLOPs form (prefill grows with n and n², decode with m·(1, n, m): the
same terms divided by m), then the measurement's structure on top: warm-up runs, rounds of at
least the meter's window, and a fixed overhead per window (waiting for counter ticks), the last
two taken from the pilot's own measurements.

numpy is imported at module level: import this module only to calibrate.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import analytical
from .analytical import Point
from ..errors import ConfigError, DataError

#: lengths per axis of the candidate grid (the paper's 7x7)
GRID_LEVELS = 7
#: strength of the ridge prior that stands in while the points cannot determine every parameter,
#: relative to a unit-norm column of the candidates' relative rows
RIDGE = 1e-6


# -- the candidate grid ---------------------------------------------------------------------------
def levels(low: int, high: int, count: int = GRID_LEVELS) -> list[int]:
    """`count` lengths from low to high, spaced geometrically and rounded (64:4096 -> 64, 128, ..., 4096)."""
    if low <= 0 or high < low:
        raise ConfigError(f"a length range must be LOW:HIGH with 0 < LOW <= HIGH, got {low}:{high}")
    if low == high:
        return [low]
    values = np.geomspace(low, high, count)
    out: list[int] = []
    for v in values:
        r = int(round(float(v)))
        if r not in out:
            out.append(r)
    return out


def candidate_grid(n_in_levels: Sequence[int], n_out_levels: Sequence[int],
                   max_positions: int | None = None) -> list[tuple[int, int]]:
    """Every (n_in, n_out) of the levels that fits the model's context."""
    grid = [(n, m) for n in n_in_levels for m in n_out_levels if max_positions is None or n + m <= max_positions]
    if not grid:
        raise ConfigError(f"no (n_in, n_out) of the range fits the model's {max_positions} positions; use shorter lengths")
    return grid


def pilot(grid: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The four corners of the grid and its centre (the candidate nearest each, log scale), then
    the candidate that makes the FLOPs model best determined (largest det XᵀX, unit columns).

    The centre is there to see the model's misfit: a design of edge points only, which the
    variance criterion alone would choose, fits a misspecified model closely at its points and
    reports a narrow interval around a biased sweet spot (on the simulated H100 the KV-cache
    limit bends the interior). The sixth point because the corners and the centre leave the
    FLOPs model singular on a square log grid (at n = m its terms n²/m, n and m coincide), and
    the pilot's fit must predict energies and costs.
    """
    logs = np.log(np.asarray(grid, dtype=float))
    lo, hi = logs.min(axis=0), logs.max(axis=0)
    targets = [(lo[0], lo[1]), (lo[0], hi[1]), (hi[0], lo[1]), (hi[0], hi[1]), ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2)]
    out: list[tuple[int, int]] = []
    for t in targets:
        nearest = grid[int(np.argmin(((logs - np.asarray(t)) ** 2).sum(axis=1)))]
        if nearest not in out:
            out.append(nearest)
    x = analytical.features("flops", *np.asarray(grid, dtype=float).T)
    x = x / np.linalg.norm(x, axis=0)
    index = {c: i for i, c in enumerate(grid)}

    def determinant(c: tuple[int, int]) -> float:
        rows = x[[index[p] for p in out] + [index[c]]]
        return float(np.linalg.det(rows.T @ rows + RIDGE * np.eye(x.shape[1])))

    left = [c for c in grid if c not in out]
    if left:
        out.append(max(left, key=determinant))
    return out


# -- what was measured ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """One measured point as the design needs it."""

    n_in: int
    n_out: int
    j_per_out_token: float
    #: J/out-token of each valid round (the bootstrap over rounds resamples these)
    round_values: tuple[float, ...]
    #: seconds of one execution of the workload (median over rounds)
    run_seconds: float
    #: executions of the workload: warm-up runs plus the repetitions of every round
    executions: int
    #: measured rounds (windows)
    rounds: int
    #: what measuring the point took on the clock that matters (the simulated clock for the sim)
    cost_s: float

    @property
    def point(self) -> Point:
        return Point(self.n_in, self.n_out, self.j_per_out_token)


#: measures one point: (n_in, n_out) -> Measured
Source = Callable[[int, int], Measured]


# -- the time model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """Predicts what measuring a point costs, from the points measured so far.

    seconds per output token ~ the FLOPs-form model (fitted by the energy fit's own code), then
    cost = (warm-up + rounds · reps) · run seconds + rounds · window overhead, with
    reps = ceil(min window / run seconds) as measure.run_round repeats short workloads.
    """

    time_model: analytical.FittedModel
    requests: int
    warmup: int
    rounds: float
    min_window_s: float
    overhead_s: float

    def run_seconds(self, n_in: int, n_out: int) -> float:
        return max(float(self.time_model.predict(n_in, n_out)), 1e-12) * self.requests * n_out

    def cost(self, n_in: int, n_out: int) -> float:
        run = self.run_seconds(n_in, n_out)
        reps = max(1, math.ceil(self.min_window_s / run)) if self.min_window_s > 0 else 1
        return (self.warmup + self.rounds * reps) * run + self.rounds * self.overhead_s


def fit_time_model(measured: Sequence[Measured], requests: int) -> analytical.FittedModel:
    """Seconds per output token in the richest paper form the points determine."""
    points = [Point(m.n_in, m.n_out, m.run_seconds / (requests * m.n_out)) for m in measured if m.run_seconds > 0]
    return richest_fit(points, what="time")


def cost_model(measured: Sequence[Measured], requests: int, warmup: int, min_window_s: float,
               rounds: int | None) -> CostModel:
    """The cost model of the points measured so far; `rounds` None: as many as they took (auto)."""
    model = fit_time_model(measured, requests)
    expected_rounds = float(rounds) if rounds is not None else float(statistics.median(m.rounds for m in measured))
    overheads = []
    for m in measured:
        if m.rounds:
            overheads.append(max(0.0, (m.cost_s - m.executions * m.run_seconds) / m.rounds))
    overhead = float(statistics.median(overheads)) if overheads else 0.0
    return CostModel(model, requests, warmup, expected_rounds, min_window_s, overhead)


def richest_fit(points: Sequence[Point], what: str = "energy") -> analytical.FittedModel:
    """The paper model with the most parameters these points determine (memflops, flops, linear)."""
    for name in ("memflops", "flops", "linear"):
        try:
            return analytical.fit(name, points, loo=False)
        except DataError:
            continue
    raise DataError(f"{len(points)} {what} point(s) determine no model; measure at least 3 distinct points")


# -- the sequential design ------------------------------------------------------------------------
def gains(name: str, grid: Sequence[tuple[int, int]], estimate: np.ndarray,
          measured: Sequence[tuple[int, int]], measured_j: Sequence[float]) -> np.ndarray:
    """For each grid point, how much measuring it lowers the summed relative prediction variance
    of model `name` over the grid, as a share of that sum (Sherman-Morrison; see the module)."""
    n, m = np.asarray(grid, dtype=float).T
    rows = analytical.features(name, n, m) / estimate[:, None]  # relative rows a = x / Ê
    scale = np.linalg.norm(rows, axis=0)
    scale[scale == 0] = 1.0
    rows = rows / scale  # unit columns: n²/m and 1/m differ by ~10^7
    if measured:
        mn, mm = np.asarray(measured, dtype=float).T
        a = analytical.features(name, mn, mm) / np.asarray(measured_j, dtype=float)[:, None] / scale
    else:
        a = np.zeros((0, rows.shape[1]))
    inv = np.linalg.inv(a.T @ a + RIDGE * np.eye(rows.shape[1]))
    cross = rows @ inv @ rows.T  # a_zᵀ M⁻¹ a_c
    reduction = (cross ** 2).sum(axis=0) / (1.0 + np.diag(cross))
    return np.asarray(reduction / np.trace(cross), dtype=float)


def check_points(name: str, points: int | None) -> None:
    """ConfigError when `points` cannot determine model `name` and leave a residual to learn its error."""
    p = len(analytical.PARAMETERS[name])
    if points is not None and points < p + 1:
        raise ConfigError(
            f"--points {points}: the {name} model has {p} parameters; it needs at least {p + 1} points "
            "(one more than its parameters, so that its uncertainty can be estimated)")


@dataclass
class Plan:
    """What to calibrate: the model, the candidates, and the stopping rule (points or budget)."""

    name: str
    grid: list[tuple[int, int]]
    requests: int
    warmup: int = 1
    min_window_s: float = 1.0
    #: fixed rounds per point, or None for adaptive (`rounds.Precise`)
    rounds: int | None = 3
    points: int | None = None
    budget_s: float | None = None

    def __post_init__(self) -> None:
        p = len(analytical.PARAMETERS[self.name])
        if (self.points is None) == (self.budget_s is None):
            raise ConfigError("give either a number of points or a time budget, not both and not neither")
        check_points(self.name, self.points)
        if len(self.grid) < p + 1:
            raise ConfigError(
                f"the range holds {len(self.grid)} candidate point(s); the {self.name} model needs at least {p + 1}: "
                "widen --n-in-range / --n-out-range")


@dataclass
class Step:
    """One measured point of a calibration, and why it was chosen."""

    measured: Measured
    reason: str  # "pilot" or "design"
    predicted_cost_s: float | None = None
    gain: float | None = None


@dataclass
class Calibration:
    """The outcome of `run`: the points in order and what they cost."""

    plan: Plan
    steps: list[Step] = field(default_factory=list)
    stopped: str = ""

    @property
    def measured(self) -> list[Measured]:
        return [s.measured for s in self.steps]

    @property
    def points(self) -> list[Point]:
        return [m.point for m in self.measured]

    @property
    def cost_s(self) -> float:
        return sum(m.cost_s for m in self.measured)


def run(plan: Plan, source: Source, on_step: Callable[[Step], None] | None = None) -> Calibration:
    """Measure the pilot, then the design's picks until the points or the budget are spent."""
    out = Calibration(plan)
    p = len(analytical.PARAMETERS[plan.name])

    def take(point: tuple[int, int], reason: str, cost: float | None = None, gain: float | None = None) -> None:
        step = Step(source(*point), reason, cost, gain)
        out.steps.append(step)
        if on_step is not None:
            on_step(step)

    for point in pilot(plan.grid):
        if plan.points is not None and len(out.steps) >= plan.points:
            break
        take(point, "pilot")
    if plan.budget_s is not None and out.cost_s > plan.budget_s:
        out.stopped = f"the pilot alone took {out.cost_s:.0f} s of the {plan.budget_s:.0f} s budget"
    while not out.stopped:
        if plan.points is not None and len(out.steps) >= plan.points:
            out.stopped = f"{plan.points} points measured"
            break
        done = {(m.n_in, m.n_out) for m in out.measured}
        left = [c for c in plan.grid if c not in done]
        if not left:
            out.stopped = "every candidate measured"
            break
        costs = cost_model(out.measured, plan.requests, plan.warmup, plan.min_window_s, plan.rounds)
        energy = richest_fit(out.points)
        estimate = np.maximum(np.asarray(energy.predict(*np.asarray(plan.grid, dtype=float).T)), 1e-12)
        g = gains(plan.name, plan.grid, estimate, [(m.n_in, m.n_out) for m in out.measured],
                  [m.j_per_out_token for m in out.measured])
        index = {c: i for i, c in enumerate(plan.grid)}
        predicted = {c: costs.cost(*c) for c in left}
        if plan.budget_s is not None:
            remaining = plan.budget_s - out.cost_s
            left = [c for c in left if predicted[c] <= remaining]
            if not left:
                out.stopped = f"no candidate fits the {remaining:.0f} s left of the budget"
                break
        # a number of points: the most informative one; a budget: the most information per second
        by_time = plan.budget_s is not None
        best = max(left, key=lambda c: g[index[c]] / (predicted[c] if by_time else 1.0))
        take(best, "design", predicted[best], float(g[index[best]]))
    if len({(m.n_in, m.n_out) for m in out.measured}) < p + 1:
        raise ConfigError(
            f"{out.stopped or 'stopped'} after {len(out.steps)} point(s); the {plan.name} model needs at least "
            f"{p + 1}: give a larger --budget-minutes or fewer parameters (--fit flops)")
    return out
