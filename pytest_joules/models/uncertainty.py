"""How sure a fitted energy model is: a bootstrap over its residuals, sweet-spot intervals and a band.

Method: a residual bootstrap of the relative fit (Davison & Hinkley 1997, §6.2.3). The fit
minimises relative error by non-negative least squares, so the covariance formula of ordinary
least squares does not hold (parameters at their bound of 0, a weighted fit whose weights are
the data) and the bootstrap is the honest choice. Each replicate keeps the fitted values and
draws new relative errors from the fit's own, leverage-adjusted residuals
e_i = (y_i/ŷ_i - 1) / sqrt(1 - h_ii), centred, then refits; y*_i = ŷ_i · (1 + e*). Residuals, not
rounds: with a handful of points the model's misfit is at least as large as the round-to-round
noise (on the simulated H100 the Memory+FLOPs model misses the KV-cache limit by 3%), and
residuals carry both, while resampling 3 rounds sees only the noise. A file of points without
rounds (a CSV) is treated the same way.

Intervals are percentile intervals of the replicates, taken without interpolation (an upper
bound of n_out* may be infinite: a replicate whose θ4 is 0 has no sweet spot, its J/out-token
falls for ever), then widened about the estimate by t_df / z for the few residual degrees of
freedom (see `Uncertainty`). An interval that leaves the measured n_out range says so.

The replicates are saved beside the model (`"uncertainty"` in its entry of the model file), so
every sweet-spot table can compute an interval at any n_in.

numpy is imported at module level: import this module only when models are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import analytical
from .analytical import FittedModel, Point
from ..errors import DataError

METHOD = "residual bootstrap (leverage-adjusted relative residuals, NNLS refits)"
DEFAULT_REPLICATES = 200
DEFAULT_LEVEL = 0.95
#: significant digits kept of each saved replicate parameter
DIGITS = 6


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SpotInterval:
    """The confidence interval of n_out* at one n_in, and how it sits in the fitted range."""

    n_in: int
    n_out: Interval
    #: share of replicates with a sweet spot (θ4 > 0 and a positive numerator)
    defined: float
    #: the interval reaches beyond the fitted n_out range (below or above)
    leaves_range: bool


@dataclass(frozen=True)
class Uncertainty:
    """Bootstrap replicates of a model's parameters, and how to draw intervals from them.

    `df` is the fit's residual degrees of freedom (points minus parameters not held at 0). A
    residual bootstrap takes the residuals' spread at its word, as a z-interval would; with 2 or 3
    degrees of freedom that spread is itself uncertain, and the t-interval of ordinary least
    squares is wider by t_df / z (2.2x at df = 2). Each percentile interval is widened by that
    factor around the estimate, on a log scale (n_out* and J/out-token are positive).
    """

    name: str
    theta: np.ndarray  # the fitted parameters: the centre of every interval
    samples: np.ndarray  # (replicates, parameters)
    df: int
    level: float = DEFAULT_LEVEL
    method: str = METHOD

    @property
    def widening(self) -> float:
        from scipy import stats

        q = 1.0 - (1.0 - self.level) / 2
        return float(stats.t.ppf(q, max(self.df, 1)) / stats.norm.ppf(q))

    # -- intervals ------------------------------------------------------------------------------
    def _interval(self, estimate: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of `values` (replicates along axis 0), widened around `estimate`."""
        alpha = 1.0 - self.level
        low = np.quantile(values, alpha / 2, axis=0, method="lower")
        high = np.quantile(values, 1 - alpha / 2, axis=0, method="higher")
        k = self.widening
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            est = np.clip(estimate, low, high)  # an NNLS estimate on a bound can sit outside
            usable = np.isfinite(est) & (est > 0)  # no sweet spot (0 or inf): nothing to widen around
            wide_low = np.where(usable & (low > 0), est * (low / est) ** k, low)
            wide_high = np.where(usable & np.isfinite(high), est * (high / est) ** k, high)
        return wide_low, wide_high

    def interval(self, estimate: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The band of any figure computed under each replicate (`values`, replicates along axis 0)
        around its value under the fit (`estimate`): how models/mix.py bands a mix."""
        return self._interval(estimate, values)

    def sweet_spots(self, n_in: float, theta: np.ndarray | None = None) -> np.ndarray:
        """n_out* of every replicate at n_in (or of `theta`): inf where J/out-token only falls with
        n_out, 0 where it only grows (the shortest output is cheapest)."""
        t = np.atleast_2d(self.samples if theta is None else theta)
        theta5 = t[:, 5] if self.name == "memflops" else 0.0
        numerator = t[:, 1] * n_in * n_in + t[:, 3] * n_in + theta5
        with np.errstate(divide="ignore", invalid="ignore"):
            spot = np.sqrt(np.maximum(numerator, 0.0) / t[:, 4])
        spot = np.where(t[:, 4] <= 0, np.inf, spot)
        return np.where((t[:, 4] > 0) & (numerator <= 0), 0.0, spot)

    def sweet_spot(self, n_in: int, n_out_range: tuple[int, int]) -> SpotInterval | None:
        """The interval of n_out* at n_in; None for the linear model (no sweet spot)."""
        if self.name == "linear":
            return None
        spots = self.sweet_spots(n_in)
        low, high = self._interval(self.sweet_spots(n_in, self.theta), spots)
        defined = float(np.mean(np.isfinite(spots) & (spots > 0)))
        return SpotInterval(int(n_in), Interval(float(low[0]), float(high[0])), defined,
                            leaves_range=bool(low[0] < n_out_range[0] or high[0] > n_out_range[1]))

    def band(self, n_in: Any, n_out: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise interval of the predicted J/out-token at each (n_in, n_out)."""
        x = analytical.features(self.name, n_in, n_out)
        return self._interval(x @ self.theta, self.samples @ x.T)

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "level": self.level,
            "df": int(self.df),
            "replicates": int(self.samples.shape[0]),
            "theta_samples": [[float(f"{v:.{DIGITS}g}") for v in row] for row in self.samples],
        }

    @classmethod
    def from_dict(cls, model: FittedModel, data: Any, where: str = "") -> "Uncertainty":
        prefix = f"{where}: " if where else ""
        if not isinstance(data, dict):
            raise DataError(f"{prefix}'uncertainty' must be an object, got {type(data).__name__}")
        level = data.get("level", DEFAULT_LEVEL)
        if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0 < level < 1:
            raise DataError(f"{prefix}'uncertainty' level must be a fraction between 0 and 1, got {level!r}")
        df = data.get("df")
        if not isinstance(df, int) or isinstance(df, bool) or df < 1:
            raise DataError(f"{prefix}'uncertainty' df must be a positive integer (residual degrees of freedom), got {df!r}")
        rows = data.get("theta_samples")
        name = model.name
        p = len(analytical.PARAMETERS[name])
        ok = isinstance(rows, list) and len(rows) >= 2 and all(
            isinstance(r, list) and len(r) == p
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in r)
            for r in rows)
        if not ok:
            raise DataError(f"{prefix}'uncertainty' theta_samples must be a list of at least 2 lists of {p} finite numbers")
        return cls(name, np.asarray(model.theta, dtype=float), np.asarray(rows, dtype=float), df, float(level),
                   str(data.get("method") or METHOD))


# -- the bootstrap --------------------------------------------------------------------------------
def _leverage(name: str, model: FittedModel, n: np.ndarray, m: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix of the relative fit, over the parameters not held at 0."""
    a = analytical.features(name, n, m) / y[:, None]
    free = np.asarray(model.theta) > 0
    q = a[:, free]
    if not free.any():
        return np.zeros(len(y))
    q = q / np.linalg.norm(q, axis=0)
    pinv = np.linalg.pinv(q.T @ q)
    return np.asarray(np.clip(np.einsum("ij,jk,ik->i", q, pinv, q), 0.0, 1.0 - 1e-6), dtype=float)


def bootstrap(model: FittedModel, points: Sequence[Point], replicates: int = DEFAULT_REPLICATES,
              seed: int = 0, level: float = DEFAULT_LEVEL) -> Uncertainty:
    """Residual bootstrap of `model`, fitted to `points`: `replicates` refits on resampled errors.

    Needs more distinct points than parameters (with exactly as many the fit passes through
    every point and there is no residual to learn the error from): DataError otherwise.
    """
    name = model.name
    p = len(analytical.PARAMETERS[name])
    distinct = len({(pt.n_in, pt.n_out) for pt in points})
    if distinct <= p:
        raise DataError(
            f"{distinct} distinct point(s) for the {p} parameters of the {name} model: no residual is left to "
            "estimate its uncertainty; measure at least one more point")
    n = np.array([pt.n_in for pt in points], dtype=float)
    m = np.array([pt.n_out for pt in points], dtype=float)
    y = np.array([pt.j_per_out_token for pt in points], dtype=float)
    fitted = np.asarray(model.predict(n, m), dtype=float)
    fitted = np.maximum(fitted, 1e-12 * y)
    h = _leverage(name, model, n, m, y)
    errors = (y / fitted - 1.0) / np.sqrt(1.0 - h)
    errors -= errors.mean()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(replicates, len(y)))
    samples = np.empty((replicates, p))
    x = analytical.features(name, n, m)
    for b in range(replicates):
        y_star = fitted * np.maximum(1.0 + errors[draws[b]], 1e-3)
        samples[b] = _refit(x, y_star)
    df = distinct - int(np.count_nonzero(np.asarray(model.theta) > 0))
    return Uncertainty(name, np.asarray(model.theta, dtype=float), samples, max(df, 1), level)


def for_models(models: Sequence[FittedModel], points: Sequence[Point], replicates: int = DEFAULT_REPLICATES,
               seed: int = 0) -> dict[str, Uncertainty]:
    """The bootstrap of each model with a sweet spot that the points leave residuals for, by name
    (`joules fit` and `joules sweep`: a model without one is shown without intervals)."""
    distinct = len({(pt.n_in, pt.n_out) for pt in points})
    return {m.name: bootstrap(m, points, replicates, seed) for m in models
            if m.name != "linear" and distinct > len(analytical.PARAMETERS[m.name])}


def _refit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NNLS on relative error, as analytical._fit_arrays solves it (without its bookkeeping)."""
    from scipy.optimize import nnls

    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    z, _ = nnls(a / scale, np.ones(len(y)), maxiter=50 * a.shape[1])
    return np.asarray(z / scale, dtype=float)


# -- model files ----------------------------------------------------------------------------------
def model_entry(model: FittedModel, uncertainty: Uncertainty | None) -> dict[str, Any]:
    """The model's entry of a model file, with its replicates when known."""
    entry = model.to_dict()
    if uncertainty is not None:
        entry["uncertainty"] = uncertainty.to_dict()
    return entry


def save(path: Any, pairs: Sequence[tuple[FittedModel, Uncertainty | None]], **extra: Any) -> None:
    """Write a model file (`{"models": [...]}`, atomically) whose entries carry their replicates."""
    from ..store.results import atomic_write_json

    try:
        atomic_write_json(path, {"models": [model_entry(m, u) for m, u in pairs], **extra})
    except OSError as exc:
        raise DataError(f"{path}: cannot write the model file: {exc.strerror or exc}") from None


def from_document(data: Any, source: str) -> dict[str, Uncertainty]:
    """The replicates saved in a model file's entries, by model name (entries without are skipped)."""
    models = analytical.models_from_data(data, source)  # the model each entry's replicates belong to
    items = data["models"] if isinstance(data, dict) and "models" in data else [data] if isinstance(data, dict) else data
    out: dict[str, Uncertainty] = {}
    for i, (model, item) in enumerate(zip(models, items)):
        if item.get("uncertainty") is not None:
            out[model.name] = Uncertainty.from_dict(model, item["uncertainty"], f"{source}: models[{i}]")
    return out


def load(path: Any) -> dict[str, Uncertainty]:
    """The replicates of every model in a model file that has them; {} for a file without."""
    from ..store.results import load_json

    return from_document(load_json(path), str(path))
