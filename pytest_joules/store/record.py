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
               "nodeid", "test", "label", "baseline_not_saved", "drift")
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
    }


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
    # -- the test's fields (plugin records only; None: not a test's record) --------------------
    key: str | None = None
    baseline_note: str | None = None
    baseline_updated: bool | None = None
    extrapolated: bool | None = None
    #: the fitted model's batching when it differs from this workload's (no prediction then)
    model_batching: str | None = None
    nodeid: str | None = None
    test: str | None = None
    #: "" for a test's first measurement, else its name ("quarter-length", "#2")
    label: str | None = None
    #: why a recorded baseline was dropped again (the test failed)
    baseline_not_saved: str | None = None
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
            spread=clean(m.spread), gpu_util=clean(m.gpu_util), host_bound=m.host_bound,
            rounds_stopped=m.stopped or None, confidence=m.confidence, valid=m.valid,
            problems=list(m.problems), rounds=[round_to_dict(r) for r in m.rounds],
            baseline=clean(m.baseline), baseline_rounds=m.baseline_rounds,
            prediction=clean(m.prediction), model=m.model_name, model_error=clean(m.model_error),
            verdict=m.verdict, engine=dict(m.engine), device=dict(m.device), meter=m.meter,
            simulated=m.simulated, **test,
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
            if f.name in TEST_FIELDS and value is None:
                continue
            out[f.name] = verdict_to_dict(value) if f.name == "verdict" else value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known["verdict"] = verdict_from_dict(data.get("verdict"))
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})
