"""Latency beside energy: time to first token (TTFT), time per output token (TPOT), output tokens/s.

A change that cuts J/token by making every request slower must not read as an improvement, so
every measurement carries its latency too. Engines report what they know per request in
`EngineRun.ttft_s` / `EngineRun.tpot_s` (all requests arrive when the run starts: TTFT counts
the queueing behind earlier requests, as a client would see it). TPOT is a request's decode time
over its output tokens after the first, (last token - first token) / (n_out - 1), as vLLM's and
TensorRT-LLM's benchmarks define it.

Per round (one meter window, `reps` runs of the workload): the median TTFT, the median and 90th
percentile TPOT over every request of the round, and the round's output tokens per second of
engine time. Per measurement: the median of each over its rounds. Stdlib only.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

#: the figures, in the order the results JSON lists them
KEYS = ("ttft_s", "tpot_s", "tpot_p90_s", "out_tok_per_s")
#: the figures the latency gate judges, and whether more is worse
GATED = {"ttft_s": True, "tpot_s": True, "out_tok_per_s": False}
LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "tpot_p90_s": "TPOT p90", "out_tok_per_s": "output tok/s"}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default), so the p90 of few values is not simply their maximum."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            out.append(float(v))
    return out


def round_latency(runs: Sequence[Any]) -> dict[str, float | None]:
    """The latency figures of one round from its EngineRuns (None where no engine said)."""
    ttft = _finite(t for run in runs for t in getattr(run, "ttft_s", None) or [])
    tpot = _finite(t for run in runs for t in getattr(run, "tpot_s", None) or [])
    seconds = sum(float(run.seconds) for run in runs)
    tokens = sum(run.total_output_tokens for run in runs)
    return {
        "ttft_s": statistics.median(ttft) if ttft else None,
        "tpot_s": statistics.median(tpot) if tpot else None,
        "tpot_p90_s": percentile(tpot, 90) if tpot else None,
        "out_tok_per_s": tokens / seconds if seconds > 0 else None,
    }


def measurement_latency(rounds: Iterable[Any]) -> dict[str, float | None] | None:
    """The median of each figure over the rounds that have one; None when no round has any."""
    found = [r.latency for r in rounds if getattr(r, "latency", None)]
    if not found:
        return None
    out: dict[str, float | None] = {}
    for key in KEYS:
        values = _finite(lat.get(key) for lat in found)
        out[key] = statistics.median(values) if values else None
    return out


def from_record(record: Mapping[str, Any]) -> dict[str, float | None] | None:
    """The latency of a results-JSON result or plugin record; None when it has none (older files)."""
    lat = record.get("latency")
    if not isinstance(lat, Mapping):
        return None
    values: dict[str, float | None] = {}
    for key in KEYS:
        found = _finite([lat.get(key)])
        values[key] = found[0] if found else None
    return values if any(v is not None for v in values.values()) else None


def ms(value: float | None) -> str:
    """Seconds as milliseconds with 3 significant digits ("—" for none)."""
    return "—" if value is None else f"{value * 1000:.3g}"


def cell(lat: Mapping[str, Any] | None) -> str:
    """The summary's compact column: "TTFT/TPOT" in ms, e.g. "41.2/3.1"."""
    if not lat or (lat.get("ttft_s") is None and lat.get("tpot_s") is None):
        return "—"
    return f"{ms(lat.get('ttft_s'))}/{ms(lat.get('tpot_s'))}"


def describe(lat: Mapping[str, Any] | None) -> str:
    """One line for exporters and logs: "TTFT 41.2 ms, TPOT 3.1 ms (p90 3.4 ms), 812 output tok/s"."""
    if not lat:
        return "latency: not reported"
    parts = []
    if lat.get("ttft_s") is not None:
        parts.append(f"TTFT {ms(lat['ttft_s'])} ms")
    if lat.get("tpot_s") is not None:
        text = f"TPOT {ms(lat['tpot_s'])} ms"
        if lat.get("tpot_p90_s") is not None:
            text += f" (p90 {ms(lat['tpot_p90_s'])} ms)"
        parts.append(text)
    if lat.get("out_tok_per_s") is not None:
        parts.append(f"{lat['out_tok_per_s']:.4g} output tok/s")
    return ", ".join(parts) or "latency: not reported"


def changes(current: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None) -> dict[str, float]:
    """Relative change of each gated figure, signed so that positive is worse (slower)."""
    out: dict[str, float] = {}
    if not current or not baseline:
        return out
    for key, more_is_worse in GATED.items():
        now, then = current.get(key), baseline.get(key)
        if now is None or then is None or then <= 0 or now <= 0:
            continue
        out[key] = (now / then - 1.0) if more_is_worse else (then / now - 1.0)
    return out


def regression(current: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None,
               tolerance: float) -> str | None:
    """Why the latency regressed beyond `tolerance` (a fraction), or None. Each gated figure is
    judged on its median: TTFT or TPOT longer, or output tokens/s lower, by more than the
    tolerance (tokens/s is judged as time per token, so +10% means 10% slower either way)."""
    worse = []
    for key, change in changes(current, baseline).items():
        if change > tolerance:
            now, then = current[key], baseline[key]  # type: ignore[index]
            shown = (f"{ms(then)} -> {ms(now)} ms" if key != "out_tok_per_s" else f"{then:.4g} -> {now:.4g}")
            worse.append(f"{LABELS[key]} {shown} ({change:+.1%} slower)")
    if not worse:
        return None
    return f"latency regression beyond {tolerance:.1%}: " + ", ".join(worse)
