"""One measurement's result as the results JSON holds it: `ResultRecord`, a typed record.

Built once from a `Measurement` (and, in the plugin, the test it belongs to), it is the one shape
that the results JSON, the pytest-xdist payload, the end-of-run summary and the exporters share:
`to_dict` writes exactly the keys of the results schema (store/results.py), `from_dict` reads them
back (a worker's records on the controller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..judge.verdict import Verdict
from ..measure.measurement import Measurement, Round

#: keys a plugin record carries and a `joules sweep` result does not: written only when set
TEST_FIELDS = ("key", "baseline_note", "baseline_updated", "extrapolated", "model_batching",
               "baseline_latency", "latency_regression", "nodeid", "test", "label", "baseline_not_saved",
               "device_state", "drift")
#: keys written only when set: `traffic` describes a mix, arrivals or prompt file (engines/mix.py)
OPTIONAL_FIELDS = ("traffic",)
_VERDICT_KEYS = ("status", "current", "baseline", "delta", "tolerance", "detail",
                 "ci_low", "ci_high", "p_value", "resolution", "method", "shift", "drift")


def clean(value: Any) -> Any:
    """JSON has no NaN/inf: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def round_to_dict(r: Round) -> dict[str, Any]:
    return {
        "joules": clean(r.joules),
        "seconds": clean(r.seconds),
        "reps": r.reps,
        "output_tokens": r.output_tokens,
        "input_tokens": r.input_tokens,
        "valid": r.valid,
        "problems": list(r.problems),
        "phases": {k: clean(v) for k, v in r.phases.items()},
        "info": r.info,
        "latency": _latency(r.latency),
    }


def _latency(lat: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if lat is None else {k: clean(v) for k, v in lat.items()}


def verdict_to_dict(v: Verdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {key: clean(getattr(v, key)) for key in _VERDICT_KEYS}


def verdict_from_dict(data: Any) -> Verdict | None:
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    return Verdict(**{key: data[key] for key in _VERDICT_KEYS if key in data and data[key] is not None})


@dataclass
class ResultRecord:
    """One measurement, with (in the plugin) the test, its baseline key and what the store did."""

    name: str
    n_in: int
    n_out: int
    requests: int = 1
    max_batch_size: int | None = None
    seed: int = 0
    j_per_out_token: float | None = None
    tokens_per_joule: float | None = None
    joules: float | None = None
    seconds: float | None = None
    avg_watts: float | None = None
    spread: float | None = None
    gpu_util: float | None = None
    #: median TTFT, TPOT, TPOT p90 (seconds) and output tokens/s over the rounds (measure/latency.py)
    latency: dict[str, Any] | None = None
    host_bound: bool = False
    rounds_stopped: str | None = None
    confidence: float | None = None
    valid: bool = False
    problems: list[str] = field(default_factory=list)
    #: each round as the schema writes it (`round_to_dict`)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    baseline: float | None = None
    baseline_rounds: list[float] | None = None
    prediction: float | None = None
    model: str | None = None
    model_error: float | None = None
    verdict: Verdict | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    meter: str | None = None
    simulated: bool = False
    #: a mix / arrivals / prompt file: what ran (`traffic_of`), J per request, latency percentiles
    traffic: dict[str, Any] | None = None
    # -- the test's fields (plugin records only; None: not a test's record) --------------------
    key: str | None = None
    baseline_note: str | None = None
    baseline_updated: bool | None = None
    extrapolated: bool | None = None
    #: the fitted model's batching when it differs from this workload's (no prediction then)
    model_batching: str | None = None
    #: the baseline's latency figures, and why this run's failed --joules-latency-tolerance
    baseline_latency: dict[str, Any] | None = None
    latency_regression: str | None = None
    nodeid: str | None = None
    test: str | None = None
    #: "" for a test's first measurement, else its name ("quarter-length", "#2")
    label: str | None = None
    #: why a recorded baseline was dropped again (the test failed)
    baseline_not_saved: str | None = None
    #: the device's state over the windows, and flags for doubtful readings (measure/state.py)
    device_state: dict[str, Any] | None = None
    #: the drift model's inputs (judge/drift.py: the change, its frame, the spread used), for the
    #: session's end to judge the test again
    drift: dict[str, Any] | None = None
    #: keys of a record read back that this version does not know: written back unchanged
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_measurement(cls, m: Measurement, **test: Any) -> ResultRecord:
        w = m.workload
        return cls(
            name=m.name or w.label(), n_in=w.n_in, n_out=w.n_out, requests=w.requests,
            max_batch_size=w.max_batch_size, seed=w.seed,
            j_per_out_token=clean(m.j_per_out_token), tokens_per_joule=clean(m.tokens_per_joule),
            joules=clean(m.joules), seconds=clean(m.seconds), avg_watts=clean(m.avg_watts),
            spread=clean(m.spread), gpu_util=clean(m.gpu_util), latency=_latency(m.latency), host_bound=m.host_bound,
            rounds_stopped=m.stopped or None, confidence=m.confidence, valid=m.valid,
            problems=list(m.problems), rounds=[round_to_dict(r) for r in m.rounds],
            baseline=clean(m.baseline), baseline_rounds=m.baseline_rounds,
            prediction=clean(m.prediction), model=m.model_name, model_error=clean(m.model_error),
            verdict=m.verdict, engine=dict(m.engine), device=dict(m.device), meter=m.meter,
            simulated=m.simulated, traffic=traffic_of(m), **test,
        )

    @property
    def status(self) -> str | None:
        return self.verdict.status if self.verdict is not None else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if (f.name in TEST_FIELDS or f.name in OPTIONAL_FIELDS) and value is None:
                continue
            out[f.name] = verdict_to_dict(value) if f.name == "verdict" else value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known["verdict"] = verdict_from_dict(data.get("verdict"))
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def traffic_of(m: Measurement) -> dict[str, Any] | None:
    """What a results JSON says of a mix, arrivals or prompt file (None for one point at once):
    the baseline's identity keys, the sample's shape, J per request, latency percentiles."""
    from ..engines.mix import traffic_labels

    w = m.workload
    latency = m.latency_percentiles
    if w.uniform and not latency:
        return None
    lengths = w.lengths()
    out: dict[str, Any] = {k: v for k, v in traffic_labels(w).items() if v is not None}
    if w.mix is not None:
        out.update(source=w.mix.source, distinct=len(set(lengths)),
                   mean_n_in=w.input_tokens / w.requests, mean_n_out=w.output_tokens / w.requests,
                   output_tokens=w.output_tokens)
    out["j_per_request"] = clean(m.j_per_request)
    if latency:
        out["latency"] = {k: clean(v) for k, v in latency.items()}
    return out
