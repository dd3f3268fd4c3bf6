"""What a fitted model says of a length mix: its J per output token, its band, and policies.

The paper's model is per point: E(n_in, n_out) joules per output token of requests of one length.
A mix's J per output token is the energy of its requests over their output tokens,

    E_mix = Σ_i w_i · E(n_i, m_i) · m_i  /  Σ_i w_i · m_i

(each request's energy is E · m; `w` the weights of a distribution, 1 for a list of requests). It
assumes each request costs what it costs among requests of its own length at the model's batching;
how well that carries to mixed batches and arrivals over time is measured, not assumed
(docs/mixes.md). The band: the same sum under every bootstrap replicate of the parameters
(models/uncertainty.py), so a policy's saving and its band use the same replicates (paired).

numpy is imported at module level: import this module only when models are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .analytical import FittedModel, features
from .uncertainty import Uncertainty

#: length bands (tokens): powers of 4 from 128, the paper's grid
BAND_EDGES = (128, 512, 2048, 8192)


@dataclass(frozen=True)
class Lengths:
    """A mix as arrays: n_in, n_out and weights (a distribution's, or 1 per request)."""

    n_in: np.ndarray
    n_out: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Sequence[float]]) -> Lengths:
        """From (n_in, n_out) or (n_in, n_out, weight) rows."""
        a = np.asarray([(r[0], r[1], r[2] if len(r) > 2 else 1.0) for r in rows], dtype=float)
        return cls(a[:, 0], a[:, 1], a[:, 2])

    def where(self, mask: np.ndarray) -> Lengths:
        return Lengths(self.n_in[mask], self.n_out[mask], self.weight[mask])

    def capped(self, n_in: float | None = None, n_out: float | None = None) -> Lengths:
        """The mix under a policy: inputs truncated to `n_in`, outputs capped at `n_out`."""
        return Lengths(self.n_in if n_in is None else np.minimum(self.n_in, n_in),
                       self.n_out if n_out is None else np.minimum(self.n_out, n_out), self.weight)

    @property
    def output_tokens(self) -> float:
        """Output tokens per request, on average."""
        return float(self.weight @ self.n_out / self.weight.sum())


@dataclass(frozen=True)
class Estimate:
    """A figure and its band (None when the model file has no bootstrap replicates)."""

    value: float
    low: float | None = None
    high: float | None = None


def _energies(theta: np.ndarray, name: str, mix: Lengths) -> np.ndarray:
    """Energy per request (J) of each row, under each parameter vector: shape (rows,) or (rows, B)."""
    j_per_token = features(name, mix.n_in, mix.n_out) @ theta
    return np.asarray(j_per_token * (mix.n_out[:, None] if j_per_token.ndim == 2 else mix.n_out), dtype=float)


class MixModel:
    """A fitted model (and its replicates, when known) applied to mixes."""

    def __init__(self, model: FittedModel, uncertainty: Uncertainty | None = None) -> None:
        self.model = model
        self.uncertainty = uncertainty
        self._theta = np.asarray(model.theta, dtype=float)

    def _both(self, mix: Lengths) -> tuple[float, float, np.ndarray | None]:
        """(energy per request, output tokens per request) of the fit, and the replicates' energies."""
        w = mix.weight / mix.weight.sum()
        energy = float(w @ _energies(self._theta, self.model.name, mix))
        reps = None
        if self.uncertainty is not None:
            reps = w @ _energies(self.uncertainty.samples.T, self.model.name, mix)
        return energy, mix.output_tokens, reps

    def _band(self, value: float, replicates: np.ndarray | None) -> Estimate:
        if replicates is None or self.uncertainty is None:
            return Estimate(value)
        low, high = self.uncertainty.interval(np.array([value]), replicates[:, None])
        return Estimate(value, float(low[0]), float(high[0]))

    def j_per_output_token(self, mix: Lengths) -> Estimate:
        energy, tokens, reps = self._both(mix)
        return self._band(energy / tokens, None if reps is None else reps / tokens)

    def j_per_request(self, mix: Lengths) -> Estimate:
        energy, _, reps = self._both(mix)
        return self._band(energy, reps)

    def change(self, before: Lengths, after: Lengths, per_token: bool) -> Estimate:
        """Relative change after / before - 1 of J per output token (or of energy per request),
        with the band of the paired replicates."""
        e0, t0, r0 = self._both(before)
        e1, t1, r1 = self._both(after)
        if per_token:
            e0, e1 = e0 / t0, e1 / t1
            r0, r1 = (None, None) if r0 is None or r1 is None else (r0 / t0, r1 / t1)
        reps = None if r0 is None or r1 is None else r1 / r0 - 1.0
        return _signed_band(e1 / e0 - 1.0, reps, self.uncertainty)

    def share(self, mix: Lengths, part: np.ndarray) -> float:
        """Share of the mix's energy in the rows of `part` (a boolean mask)."""
        e = mix.weight * _energies(self._theta, self.model.name, mix)
        return float(e[part].sum() / e.sum())


def _signed_band(value: float, replicates: np.ndarray | None, u: Uncertainty | None) -> Estimate:
    """A relative change's band: the interval of 1 + change (positive), widened like every band."""
    if replicates is None or u is None:
        return Estimate(value)
    low, high = u.interval(np.array([1.0 + value]), 1.0 + replicates[:, None])
    return Estimate(value, float(low[0]) - 1.0, float(high[0]) - 1.0)


def between(a: MixModel, b: MixModel, mix: Lengths) -> Estimate:
    """Relative change of J per output token from model `a` to model `b` (another batching) on the
    same mix; the band pairs their replicates one to one (independent bootstraps)."""
    e0, t, r0 = a._both(mix)
    e1, _, r1 = b._both(mix)
    reps = None
    if r0 is not None and r1 is not None:
        k = min(r0.size, r1.size)
        reps = r1[:k] / r0[:k] - 1.0
    return _signed_band(e1 / e0 - 1.0, reps, a.uncertainty or b.uncertainty)


def predict(model: FittedModel, lengths: Sequence[tuple[int, int]]) -> float:
    """J per output token of these requests under `model` (the plugin's prediction for a mix)."""
    return MixModel(model).j_per_output_token(Lengths.of(lengths)).value


def band_label(value: float) -> str:
    """The band a length falls in: "≤128", "129–512", ..., ">8192"."""
    low = 0
    for edge in BAND_EDGES:
        if value <= edge:
            return f"≤{edge}" if low == 0 else f"{low + 1}–{edge}"
        low = edge
    return f">{BAND_EDGES[-1]}"


def bands(values: np.ndarray) -> np.ndarray:
    """The band index of each length (0: ≤128 ... 4: >8192)."""
    return np.searchsorted(np.asarray(BAND_EDGES, dtype=float), values, side="left")


# -- advice: `joules advise` ---------------------------------------------------------------------
@dataclass(frozen=True)
class BandRow:
    """One (input band, output band) cell of a mix: its shares and J per output token."""

    n_in: str
    n_out: str
    requests: float  # share of the requests
    output_tokens: float  # share of the output tokens
    energy: float  # share of the energy
    j_per_token: Estimate


@dataclass(frozen=True)
class PolicyRow:
    """A policy applied to the whole mix, against the mix as it is."""

    name: str
    j_per_token: Estimate  # J per output token under the policy
    per_token: Estimate  # relative change of J per output token
    per_request: Estimate  # relative change of the energy of a request
    tokens_kept: float  # share of the output tokens still generated
    note: str = ""  # what it changes: "15% of prompts"


@dataclass(frozen=True)
class Advice:
    j_per_token: Estimate
    j_per_request: Estimate
    output_tokens: float  # per request, on average
    input_tokens: float
    bands: list[BandRow]
    policies: list[PolicyRow]
    #: share of the mix's energy in requests outside the model's fitted range (extrapolated)
    outside: float


def percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The weighted q-th percentile (0-100) of `values`: the smallest value with at least q% below or at it."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(int(np.searchsorted(cum, q / 100.0)), len(order) - 1)])


def default_levels(values: np.ndarray, weights: np.ndarray) -> list[int]:
    """Levels worth trying for a cap: the powers of two at or below the median and the 90th
    percentile, when they cut something (below the longest)."""
    out = []
    for q in (90, 50):
        p = percentile(values, weights, q)
        level = 2 ** int(np.floor(np.log2(max(p, 1.0))))
        if level < values.max() and level not in out and level >= 16:
            out.append(level)
    return out


def _bands(mm: MixModel, mix: Lengths) -> list[BandRow]:
    rows = []
    bin_in, bin_out = bands(mix.n_in), bands(mix.n_out)
    w = mix.weight / mix.weight.sum()
    energy = w * _energies(mm._theta, mm.model.name, mix)
    tokens = w * mix.n_out
    for a, b in sorted({(int(i), int(o)) for i, o in zip(bin_in, bin_out)}):
        part = (bin_in == a) & (bin_out == b)
        sub = mix.where(part)
        rows.append(BandRow(band_label(float(sub.n_in.max())), band_label(float(sub.n_out.max())),
                            float(w[part].sum()), float(tokens[part].sum() / tokens.sum()),
                            float(energy[part].sum() / energy.sum()), mm.j_per_output_token(sub)))
    return sorted(rows, key=lambda r: -r.energy)


def advise(mm: MixModel, mix: Lengths, truncate: Sequence[int] = (), cap: Sequence[int] = (),
           batch_models: Sequence[MixModel] = ()) -> Advice:
    """What the model says of `mix` and of each policy: truncate inputs to N, cap outputs at M,
    or serve at the batching another model was fitted at."""
    policies = []
    for n in truncate:
        after = mix.capped(n_in=n)
        policies.append(PolicyRow(f"inputs ≤ {n}", mm.j_per_output_token(after),
                                  mm.change(mix, after, True), mm.change(mix, after, False), 1.0,
                                  f"{float(mix.weight[mix.n_in > n].sum() / mix.weight.sum()):.0%} of prompts"))
    for m in cap:
        after = mix.capped(n_out=m)
        policies.append(PolicyRow(f"outputs ≤ {m}", mm.j_per_output_token(after),
                                  mm.change(mix, after, True), mm.change(mix, after, False),
                                  after.output_tokens / mix.output_tokens,
                                  f"{float(mix.weight[mix.n_out > m].sum() / mix.weight.sum()):.0%} of replies"))
    for other in batch_models:
        change = between(mm, other, mix)
        cap_at = other.model.batching.get("max_batch_size")
        name = f"batch ≤ {cap_at}" if isinstance(cap_at, int) else f"batch: {other.model.batching_label() or '?'}"
        policies.append(PolicyRow(name, other.j_per_output_token(mix), change, change, 1.0,
                                  "every request"))
    inside = np.array([mm.model.in_range(n, m) for n, m in zip(mix.n_in, mix.n_out)])
    return Advice(mm.j_per_output_token(mix), mm.j_per_request(mix), mix.output_tokens,
                  float(mix.weight @ mix.n_in / mix.weight.sum()), _bands(mm, mix), policies,
                  1.0 - mm.share(mix, inside) if inside.any() else 1.0)
