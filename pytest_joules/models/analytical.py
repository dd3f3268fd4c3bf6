"""The analytical energy models of the sweet-spot paper (arXiv 2602.05695), their fit and sweet spots.

With n = n_in and m = n_out, energy per output token E is modelled as

    flops:     E = θ0 + θ1·n²/m + θ2·n + θ3·n/m + θ4·m
    memflops:  E = θ0 + θ1·n²/m + θ2·n + θ3·n/m + θ4·m + θ5/m
    linear:    E_total = a·n + b·m + c per request, i.e. E = a·n/m + b + c/m

All three are linear in their parameters. They are fitted by non-negative least squares on the
*relative* residual (prediction / observed - 1), because the quality measure is MAPE: an error of
1 mJ matters at 10 mJ/token and not at 1 J/token.

numpy and scipy are imported here at module level: import this module only when models are needed.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import nnls

from ..errors import ConfigError, DataError

MODEL_NAMES = ("flops", "memflops", "linear")

#: parameter labels, in the order of `FittedModel.theta`
PARAMETERS: dict[str, tuple[str, ...]] = {
    "flops": ("θ0", "θ1", "θ2", "θ3", "θ4"),
    "memflops": ("θ0", "θ1", "θ2", "θ3", "θ4", "θ5"),
    "linear": ("a", "b", "c"),
}

#: what each parameter multiplies in J per output token (n = n_in, m = n_out)
TERMS: dict[str, tuple[str, ...]] = {
    "flops": ("1", "n²/m", "n", "n/m", "m"),
    "memflops": ("1", "n²/m", "n", "n/m", "m", "1/m"),
    "linear": ("n/m", "1", "1/m"),
}

#: the workload settings a model records about the points it was fitted on (see FittedModel.batching)
BATCHING_KEYS = ("requests", "max_batch_size")
#: a batching value when the fitted points disagreed
MIXED = "mixed"

#: a LOO shortcut step must clear the bounds by this much (relative) to be trusted; else refit
_KKT_TOL = 1e-9


@dataclass(frozen=True)
class Point:
    """One measured point: J per output token at (n_in, n_out)."""

    n_in: int
    n_out: int
    j_per_out_token: float


@dataclass(frozen=True)
class SweetSpot:
    """The output length that minimizes J per output token at a given input length.

    `n_out_opt` and `j_per_out_token_min` are None when the model has no interior minimum;
    `reason` then says why. `inside_range` says whether n_out_opt lies in the fitted n_out range.
    """

    n_in: int
    n_out_opt: float | None
    j_per_out_token_min: float | None
    reason: str | None
    inside_range: bool | None

    @property
    def tokens_per_joule_max(self) -> float | None:
        j = self.j_per_out_token_min
        return 1.0 / j if j else None


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def features(name: str, n_in: Any, n_out: Any) -> np.ndarray:
    """Design matrix: one row per (n_in, n_out), one column per parameter of model `name`."""
    _check_name(name)
    n = np.atleast_1d(np.asarray(n_in, dtype=float))
    m = np.atleast_1d(np.asarray(n_out, dtype=float))
    n, m = np.broadcast_arrays(n, m)
    if name == "linear":
        cols = [n / m, np.ones_like(n), 1.0 / m]
    else:
        cols = [np.ones_like(n), n * n / m, n, n / m, m]
        if name == "memflops":
            cols.append(1.0 / m)
    return np.stack(cols, axis=-1)


@dataclass(frozen=True)
class FittedModel:
    """A model with its parameters, fit quality and the range of the data it was fitted on."""

    name: str
    theta: tuple[float, ...]
    mape: float
    loo_mape: float | None
    n_points: int
    n_in_range: tuple[int, int]
    n_out_range: tuple[int, int]
    #: requests / max_batch_size of the fitted points: a value, MIXED, or the key absent when
    #: unknown (a CSV without the column, a file from before this field). Batching changes
    #: J/out-token, so the plugin compares a measurement only with a model of its own batching.
    batching: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.theta) != len(PARAMETERS[self.name]):
            raise ConfigError(
                f"the {self.name} model has {len(PARAMETERS[self.name])} parameters, got {len(self.theta)}"
            )

    # -- use --------------------------------------------------------------------------------
    def predict(self, n_in: Any, n_out: Any) -> Any:
        """J per output token at (n_in, n_out); a float for scalars, an array for arrays."""
        values = features(self.name, n_in, n_out) @ np.asarray(self.theta, dtype=float)
        if np.ndim(n_in) == 0 and np.ndim(n_out) == 0:
            return float(values[0])
        return values.reshape(np.broadcast_shapes(np.shape(n_in), np.shape(n_out)))

    def in_range(self, n_in: float, n_out: float) -> bool:
        """Whether (n_in, n_out) lies inside the box of the data the model was fitted on."""
        return (self.n_in_range[0] <= n_in <= self.n_in_range[1]) and (
            self.n_out_range[0] <= n_out <= self.n_out_range[1]
        )

    def sweet_spot(self, n_in: int) -> SweetSpot:
        """Closed form: m* = sqrt((θ1·n² + θ3·n + θ5)/θ4), E* = θ0 + θ2·n + 2·sqrt(θ4·(θ1·n² + θ3·n + θ5))."""
        if not _is_finite_number(n_in) or n_in <= 0:
            raise ConfigError(f"n_in must be a positive number of tokens, got {n_in!r}")
        if self.name == "linear":
            return SweetSpot(
                n_in, None, None,
                "linear model: J/out-token = a·n/m + b + c/m only falls as n_out grows; no interior minimum",
                None,
            )
        t = self.theta
        theta5 = t[5] if self.name == "memflops" else 0.0
        numerator = t[1] * n_in * n_in + t[3] * n_in + theta5
        if t[4] <= 0:
            return SweetSpot(
                n_in, None, None,
                f"θ4 = {t[4]:.3g}: no term grows with n_out, so J/out-token only falls as n_out grows",
                None,
            )
        if numerator <= 0:
            terms = "θ1·n² + θ3·n + θ5" if self.name == "memflops" else "θ1·n² + θ3·n"
            return SweetSpot(
                n_in, None, None,
                f"{terms} = {numerator:.3g} at n_in={n_in}: J/out-token only grows with n_out; the shortest output is cheapest",
                None,
            )
        m_opt = math.sqrt(numerator / t[4])
        e_min = t[0] + t[2] * n_in + 2.0 * math.sqrt(t[4] * numerator)
        if not (math.isfinite(m_opt) and math.isfinite(e_min) and e_min > 0 and math.isfinite(1.0 / e_min)):
            # parameters from a hand-edited file can overflow double precision: no answer, not inf
            return SweetSpot(n_in, None, None, f"the model's parameters overflow double precision at n_in={n_in}: "
                             "no usable sweet spot; fit the model again", None)
        inside = self.n_out_range[0] <= m_opt <= self.n_out_range[1]
        return SweetSpot(n_in, m_opt, e_min, None, inside)

    def batching_label(self) -> str:
        """"requests=16", "requests=16 max_batch_size=8", "requests=mixed"; "" when unknown."""
        b = self.batching
        parts = [f"{k}={b[k]}" for k in BATCHING_KEYS if k in b and not (k == "max_batch_size" and b[k] is None)]
        return " ".join(parts)

    def batching_mismatch(self, requests: int, max_batch_size: int | None) -> str | None:
        """None when a workload of this batching may be compared with the model; else the model's label.

        Unknown keys match anything (as before the field existed); MIXED matches nothing, since a
        fit over several batchings predicts none of them.
        """
        wanted = {"requests": requests, "max_batch_size": max_batch_size}
        for key, value in self.batching.items():
            if value == MIXED or value != wanted[key]:
                return self.batching_label() or f"{key}={value}"
        return None

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        extra = {"batching": dict(self.batching)} if self.batching else {}
        return {
            "name": self.name,
            "theta": [float(v) for v in self.theta],
            "mape": float(self.mape),
            "loo_mape": None if self.loo_mape is None else float(self.loo_mape),
            "n_points": int(self.n_points),
            "n_in_range": [int(v) for v in self.n_in_range],
            "n_out_range": [int(v) for v in self.n_out_range],
            **extra,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> "FittedModel":
        """Build a model from `to_dict()` output; extra keys (e.g. sweet_spots) are ignored."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise DataError(f"{where}a model must be a JSON object, got {type(data).__name__}")
        name = data.get("name")
        if name not in MODEL_NAMES:
            raise DataError(f"{where}unknown model name {name!r}; known models: {', '.join(MODEL_NAMES)}")
        where = f"{where}model {name!r}: "
        for key in ("theta", "mape", "n_points", "n_in_range", "n_out_range"):
            if key not in data:
                raise DataError(f"{where}missing field {key!r}")
        theta = data["theta"]
        want = len(PARAMETERS[name])
        if not isinstance(theta, list) or len(theta) != want or not all(_is_finite_number(v) and v >= 0 for v in theta):
            # fits are non-negative least squares: a negative θ is an edit, and breaks the sweet spot's closed form
            raise DataError(f"{where}'theta' must be a list of {want} finite numbers, none negative, got {theta!r}")
        mape = _fraction(data["mape"], "mape", where)
        loo = None if data.get("loo_mape") is None else _fraction(data["loo_mape"], "loo_mape", where)
        n_points = data["n_points"]
        if not _is_int(n_points) or n_points < 1:
            raise DataError(f"{where}'n_points' must be a positive integer, got {n_points!r}")
        return cls(
            name=name,
            theta=tuple(float(v) for v in theta),
            mape=mape,
            loo_mape=loo,
            n_points=int(n_points),
            n_in_range=_range(data["n_in_range"], "n_in_range", where),
            n_out_range=_range(data["n_out_range"], "n_out_range", where),
            batching=_batching(data.get("batching"), where),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this model alone, in the `{"models": [...]}` form every reader accepts."""
        save_models(path, [self])

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> "FittedModel":
        """Read one model from a single-model file or a `{"models": [...]}` file.

        A file holding several models needs `name` to say which one.
        """
        models = load_models(path)
        if name is not None:
            _check_name(name)
            chosen = [m for m in models if m.name == name]
            if not chosen:
                raise DataError(
                    f"{path}: has no {name!r} model; it holds: {', '.join(m.name for m in models)}"
                )
            return chosen[0]
        if len(models) > 1:
            raise DataError(
                f"{path}: holds {len(models)} models ({', '.join(m.name for m in models)}); "
                "pick one by name (joules sweetspot --model NAME)"
            )
        return models[0]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    try:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an integer beyond any float (10**400 in JSON)
        return False


def _fraction(value: Any, key: str, where: str) -> float:
    if not _is_finite_number(value) or value < 0:
        raise DataError(f"{where}{key!r} must be a non-negative number (a fraction), got {value!r}")
    return float(value)


def _batching(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{where}'batching' must be an object like {{\"requests\": 16}}, got {value!r}")
    unknown = sorted(set(value) - set(BATCHING_KEYS))
    if unknown:
        raise DataError(f"{where}'batching' has unknown key(s) {', '.join(unknown)}; known: {', '.join(BATCHING_KEYS)}")
    for key, v in value.items():
        ok = v == MIXED or (_is_int(v) and v > 0) or (v is None and key == "max_batch_size")
        if not ok:
            allowed = "a positive integer" + (", null" if key == "max_batch_size" else "") + f" or {MIXED!r}"
            raise DataError(f"{where}'batching' {key}={v!r}: must be {allowed}")
    return dict(value)


def _range(value: Any, key: str, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_int(v) and v > 0 for v in value)
        or value[0] > value[1]
    ):
        raise DataError(f"{where}{key!r} must be [low, high] with positive integers low <= high, got {value!r}")
    return int(value[0]), int(value[1])


# -- files holding models ------------------------------------------------------------------------
def models_document(models: Iterable[FittedModel], **extra: Any) -> dict[str, Any]:
    return {"models": [m.to_dict() for m in models], **extra}


def save_models(path: str | os.PathLike[str], models: Iterable[FittedModel], **extra: Any) -> None:
    """Write `{"models": [...], **extra}` atomically (extra: e.g. simulated=True, source=...)."""
    from ..store.results import atomic_write_json

    try:
        atomic_write_json(path, models_document(models, **extra))
    except OSError as exc:
        raise DataError(f"{path}: cannot write the model file: {exc.strerror or exc}") from None


def models_from_data(data: Any, source: str) -> list[FittedModel]:
    """Models from parsed JSON: one model object, a list of them, or an object with "models"."""
    if isinstance(data, dict) and "models" in data:
        items = data["models"]
        if not isinstance(items, list):
            raise DataError(f"{source}: 'models' must be a list")
    elif isinstance(data, dict) and "theta" in data:
        items = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise DataError(f"{source}: not a model file: expected a model object or {{\"models\": [...]}}")
    if not items:
        raise DataError(f"{source}: holds no models; fit some with `joules fit DATA --save {source}`")
    return [FittedModel.from_dict(item, f"{source}: models[{i}]") for i, item in enumerate(items)]


def best_model(models: Sequence[FittedModel]) -> FittedModel | None:
    """The lowest leave-one-out MAPE (in-sample where none), the paper's models before the linear
    one, which has no sweet spot; None for no models. The plugin and `joules sweetspot` share it."""
    if not models:
        return None
    paper = [m for m in models if m.name != "linear"] or list(models)
    return min(paper, key=lambda m: (m.loo_mape if m.loo_mape is not None else m.mape))


def load_models(path: str | os.PathLike[str]) -> list[FittedModel]:
    """Every model in a file written by `save_models`, `joules fit --json/--save`, or a results JSON."""
    from ..store.results import load_json

    return models_from_data(load_json(path), str(path))


# -- fitting -------------------------------------------------------------------------------------
def _arrays(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the points and return n_in, n_out, J/out-token arrays."""
    ns = [p.n_in for p in points]
    ms = [p.n_out for p in points]
    ys = [p.j_per_out_token for p in points]
    inf = math.inf
    # Fast path for plain Python numbers; the slow path finds the first bad point to name it.
    if not (
        all(type(v) is int and v > 0 for v in ns)
        and all(type(v) is int and v > 0 for v in ms)
        and all(type(v) is float and 0 < v < inf for v in ys)
    ):
        for i, p in enumerate(points):
            for key in ("n_in", "n_out"):
                v = getattr(p, key)
                if not _is_int(v) or v <= 0:
                    raise DataError(f"point {i}: {key} must be a positive integer, got {v!r}")
            v = p.j_per_out_token
            if not _is_finite_number(v) or v <= 0:
                raise DataError(f"point {i}: j_per_out_token must be a positive finite number, got {v!r}")
    return np.array(ns, dtype=float), np.array(ms, dtype=float), np.array(ys, dtype=float)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares; `a`'s columns are already scaled to unit norm."""
    z, _ = nnls(a, b, maxiter=50 * a.shape[1])
    return np.asarray(z, dtype=float)


def _loo_residuals(a: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, int]:
    """Relative residual of each point when the model is fitted without it; and how many refits.

    Exact. Where the full fit's active set stays optimal without point i (every free θ stays
    positive and every θ held at 0 keeps a gradient pushing it below 0: the KKT conditions), the
    leave-one-out fit is the unconstrained least squares on the free columns, whose residual is
    r_i / (1 - h_ii) (the hat-matrix identity). Every other point is refitted from scratch.
    Where leaving point i out makes the model unidentifiable (the other lengths cannot tell two
    θ apart), least squares has many minimisers and the held-out prediction is whichever NNLS
    returns: such a LOO figure says "too few distinct lengths", not how well the model predicts.
    """
    k = a.shape[0]
    b = np.ones(k)
    r = b - a @ z
    free = z > 0
    shortcut = np.zeros(k, dtype=bool)
    loo = np.empty(k)
    q = a[:, free]
    if free.any() and np.linalg.matrix_rank(q) == q.shape[1]:
        gram_inv = np.linalg.inv(q.T @ q)
        qg = q @ gram_inv  # row i: q_i^T G
        h = np.einsum("ij,ij->i", qg, q)
        ok = h < 1.0 - 1e-9
        step = np.where(ok, r / np.where(ok, 1.0 - h, 1.0), 0.0)  # r_i / (1 - h_ii)
        # θ_F without i = θ_F - G q_i step_i: must stay positive.
        z_free = z[free][None, :] - qg * step[:, None]
        ok &= (z_free > _KKT_TOL * max(z[free].max(), 1e-300)).all(axis=1)
        bound = ~free
        if bound.any():
            # With θ fitted without i the residuals are r + Q G q_i step_i, and point i's own is
            # step_i; the bound columns' gradient A_B^T r over the other points, O(k·p²) in all:
            a_b = a[:, bound]
            grad = (a_b.T @ r)[:, None] + (a_b.T @ q) @ (qg.T * step[None, :]) - a_b.T * step[None, :]
            ok &= (grad < -_KKT_TOL).all(axis=0)
        loo[ok] = step[ok]
        shortcut = ok
    refits = 0
    for i in np.flatnonzero(~shortcut):
        keep = np.arange(k) != i
        z_i = _solve(a[keep], b[keep])
        loo[i] = 1.0 - a[i] @ z_i
        refits += 1
    return loo, refits


def _check_enough(name: str, n: np.ndarray, m: np.ndarray) -> int:
    """Number of distinct (n_in, n_out); DataError when model `name` has more parameters."""
    p = len(PARAMETERS[name])
    distinct = len(set(zip(n.tolist(), m.tolist())))
    if distinct < p:
        raise DataError(
            f"{distinct} distinct (n_in, n_out) points; the {name} model has {p} parameters and needs "
            f"at least {p} (measure more lengths, or fit a model with fewer parameters)"
        )
    return distinct


def fit(name: str, points: Sequence[Point], loo: bool = True) -> FittedModel:
    """Fit model `name` to the points by non-negative least squares on relative error."""
    _check_name(name)
    return _fit_arrays(name, *_arrays(list(points)), loo=loo)


def _fit_arrays(name: str, n: np.ndarray, m: np.ndarray, y: np.ndarray, loo: bool = True) -> FittedModel:
    p = len(PARAMETERS[name])
    distinct = _check_enough(name, n, m)
    a = features(name, n, m) / y[:, None]  # relative: row i predicts 1 when the model is exact
    scale = np.linalg.norm(a, axis=0)  # unit columns: n²/m and 1/m differ by ~10^7
    a_s = a / scale
    z = _solve(a_s, np.ones(len(y)))
    theta = z / scale
    mape = float(np.mean(np.abs(1.0 - a @ theta)))
    if not (np.all(np.isfinite(theta)) and math.isfinite(mape)):
        raise DataError(f"the {name} model's fit overflows double precision on these points; "
                        "check the points' units (J per output token, token counts)")
    loo_mape = None
    if loo and distinct > p:  # without one point a fit still has as many points as parameters
        residuals, _ = _loo_residuals(a_s, z)
        loo_mape = float(np.mean(np.abs(residuals)))
    return FittedModel(
        name=name,
        theta=tuple(float(v) for v in theta),
        mape=mape,
        loo_mape=loo_mape,
        n_points=len(y),
        n_in_range=(int(n.min()), int(n.max())),
        n_out_range=(int(m.min()), int(m.max())),
    )


def fit_all(points: Sequence[Point], names: Sequence[str] = MODEL_NAMES) -> list[FittedModel]:
    """Fit each named model to the same points."""
    for name in names:
        _check_name(name)
    n, m, y = _arrays(list(points))
    if names:  # name the most demanding model up front, not the first one to fail
        _check_enough(max(names, key=lambda k: len(PARAMETERS[k])), n, m)
    return [_fit_arrays(name, n, m, y) for name in names]


def fit_possible(points: Sequence[Point], names: Sequence[str] = MODEL_NAMES) -> tuple[list[FittedModel], dict[str, str]]:
    """Fit each named model the points can determine; the others map to why not (fewer distinct
    points than parameters). `joules fit --model all` and `joules sweep` fit what they can."""
    for name in names:
        _check_name(name)
    n, m, y = _arrays(list(points))
    models: list[FittedModel] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            _check_enough(name, n, m)
        except DataError as exc:
            skipped[name] = str(exc)
            continue
        models.append(_fit_arrays(name, n, m, y))
    return models, skipped


def loo_mape_by_refit(name: str, points: Sequence[Point]) -> float:
    """Leave-one-out MAPE by refitting without each point in turn: the definition, kept for checks."""
    points = list(points)
    errors = []
    for i, held in enumerate(points):
        model = fit(name, points[:i] + points[i + 1 :], loo=False)
        errors.append(abs(model.predict(held.n_in, held.n_out) - held.j_per_out_token) / held.j_per_out_token)
    return float(np.mean(errors))


# -- grids ---------------------------------------------------------------------------------------
def tokens_per_joule_grid(points: Sequence[Point]) -> tuple[list[int], list[int], np.ndarray]:
    """Distinct n_in (rows), distinct n_out (columns) and tokens per joule, NaN where unmeasured.

    Repeated measurements of one (n_in, n_out) are summarized by their median J/out-token.
    """
    by_cell: dict[tuple[int, int], list[float]] = {}
    for p in points:
        by_cell.setdefault((int(p.n_in), int(p.n_out)), []).append(float(p.j_per_out_token))
    n_in_values = sorted({k[0] for k in by_cell})
    n_out_values = sorted({k[1] for k in by_cell})
    grid = np.full((len(n_in_values), len(n_out_values)), np.nan)
    rows = {v: i for i, v in enumerate(n_in_values)}
    cols = {v: j for j, v in enumerate(n_out_values)}
    for (n, m), values in by_cell.items():
        j = float(np.median(values))
        grid[rows[n], cols[m]] = 1.0 / j if j > 0 else np.nan
    return n_in_values, n_out_values, grid
