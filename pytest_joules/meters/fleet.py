"""What the `dcgm` and `prometheus` meters share: the label selection, a GPU's identity from its
DCGM labels, the fingerprint of a GPU set, HTTP GETs, and turning counter ticks into a reading.

Both read DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since boot, one series per GPU, labelled
`gpu`, `UUID`, `modelName`, `Hostname` by dcgm-exporter) at ticks: moments its published value
changed. A published value is the energy at some moment within `latency_s` before the tick's
time, so each window waits, idle, for ticks whose whole uncertainty lies after the previous work
(opening edge) and after the window's work (closing edge), and `ticks.settle` corrects for the
idle head and tail with the power measured over the tick after the closing one.

HTTP: the stdlib's urllib. The meters make plain GETs of small documents on a cluster network,
one at a time, with a timeout; urllib does that without a dependency, and a failure maps to one
message naming the URL.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError, MeterUnavailable
from .base import MeterReading
from .ticks import Tick, settle

METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
#: the meters' default min_window_s, in refresh intervals (the measurement path repeats the
#: workload until a window lasts that long)
WINDOW_INTERVALS = 10
#: a window shorter than this many refresh intervals is refused: below it the error against a
#: known profile exceeded 2% (docs/fleet.md, benchmarks/fleet_windows.py)
MIN_INTERVALS = 2

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


# -- the label selection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """A PromQL label selection, ``{Hostname=~"gpu-node-[12]",gpu!="3"}``: the same syntax for
    both meters (the prometheus meter hands it to Prometheus; the dcgm meter applies it itself)."""

    matchers: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, meter: str) -> Selector:
        body = text.strip()
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]
        elif body:
            raise ConfigError(f"{meter} meter option match must be a label selection in braces, like "
                              f"{{Hostname=~\"gpu-node-[12]\",gpu=\"0\"}}; got {text!r}")
        out: list[tuple[str, str, str]] = []
        pos = 0
        while pos < len(body.rstrip()):
            m = _MATCHER.match(body, pos)
            if not m:
                raise ConfigError(f"{meter} meter option match: cannot read a matcher (label=\"value\", "
                                  f"!=, =~ or !~) at {body[pos:pos + 30]!r} in {text!r}")
            name, op, value = m.group(1), m.group(2), re.sub(r"\\(.)", r"\1", m.group(3))
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ConfigError(f"{meter} meter option match: {name}{op}\"{value}\" is not a valid "
                                      f"regular expression ({exc})") from None
            out.append((name, op, value))
            pos = m.end()
        return cls(tuple(out))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for name, op, value in self.matchers:
            have = labels.get(name, "")  # PromQL: a missing label matches as ""
            if op == "=" and have != value or op == "!=" and have == value:
                return False
            if op in ("=~", "!~") and bool(re.fullmatch(value, have)) != (op == "=~"):
                return False
        return True

    def promql(self, metric: str) -> str:
        inner = ",".join(f'{n}{op}"{_quote(v)}"' for n, op, v in self.matchers)
        return f"{metric}{{{inner}}}"

    def __str__(self) -> str:
        return "{" + ",".join(f'{n}{op}"{_quote(v)}"' for n, op, v in self.matchers) + "}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# -- GPUs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    """One GPU's series: `label` ("host/gpuN") names it in readings and messages."""

    host: str
    index: str
    uuid: str
    model: str
    source: str  # the exporter's URL, or the Prometheus series

    @property
    def label(self) -> str:
        return f"{self.host}/gpu{self.index}"


def gpu_of(labels: Mapping[str, str], fallback_host: str, source: str) -> Gpu:
    host = labels.get("Hostname") or labels.get("hostname") or labels.get("instance") or fallback_host
    return Gpu(host=host, index=labels.get("gpu", labels.get("device", "?")), uuid=labels.get("UUID", ""),
               model=labels.get("modelName", ""), source=source)


def check_unique(gpus: list[Gpu], meter: str) -> None:
    """Two series that name the same GPU (an exporter listed twice, relabelled duplicates) would count it twice."""
    seen: dict[str, Gpu] = {}
    for gpu in gpus:
        for key in (gpu.label, gpu.uuid):
            if key and key in seen:
                raise ConfigError(
                    f"{meter} meter: GPU {gpu.label} (UUID {gpu.uuid or '?'}) appears twice ({seen[key].source} "
                    f"and {gpu.source}); list each exporter once, or narrow option match"
                )
        seen[gpu.label] = gpu
        if gpu.uuid:
            seen[gpu.uuid] = gpu


def device_info(meter: str, gpus: list[Gpu], **extra: Any) -> dict[str, Any]:
    """The fingerprint's view of the GPU set: count, models, hosts and a hash of the UUIDs, so a
    baseline of 16 GPUs (or of other GPUs) is never judged against a run on 8."""
    models = sorted({g.model or "unknown GPU" for g in gpus})
    ids = sorted(g.uuid or g.label for g in gpus)
    hosts = sorted({g.host for g in gpus})
    return {
        "meter": meter,
        "simulated": False,
        "gpu": " + ".join(models),
        "gpu_count": len(gpus),
        "host_count": len(hosts),
        "hosts": ", ".join(hosts),
        "gpu_set": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        "gpu_uuids": ids,
        **extra,
    }


def describe_available(gpus: list[Gpu]) -> str:
    hosts = sorted({g.host for g in gpus})
    return f"{len(gpus)} GPU(s) on host(s) {', '.join(hosts[:6])}{' ...' if len(hosts) > 6 else ''}" if gpus else "no GPU"


# -- HTTP ----------------------------------------------------------------------------------------


def http_get(url: str, timeout_s: float, what: str, fix: str) -> bytes:
    """GET `url`; MeterUnavailable naming `what` (e.g. "dcgm-exporter"), the URL and `fix` when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http(s) checked by caller)
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise MeterUnavailable(f"{what} at {url} answered HTTP {exc.code} {exc.reason}; {fix}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeterUnavailable(f"{what} at {url} is unreachable ({reason}); {fix}") from None


def check_url(url: str, meter: str, option: str) -> str:
    url = url.strip()
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{meter} meter option {option}: {url!r} is not an http:// or https:// URL")
    return url


# -- readings ------------------------------------------------------------------------------------


@dataclass
class Edge:
    """One GPU's counter at the ticks of one window (start, the closing tick, the one after)."""

    gpu: Gpu
    start: Tick
    end: Tick
    after: Tick


def reading(meter: str, edges: list[Edge], work_start: float, work_end: float, *, missing: list[str],
            interval_s: float, max_bound: float | None, info: dict[str, Any]) -> MeterReading:
    """The reading of a window: each GPU's settled energy, per GPU and per host in `info`; invalid,
    with the reason, when a counter went backwards, a GPU appeared or vanished (`missing`), the
    window is shorter than MIN_INTERVALS refresh intervals, or the worst-case quantisation bound
    is above `max_bound` of the energy (an opt-in gate: the bound assumes nothing about when the
    exporter refreshed, so it is far above the error of a steady exporter; docs/fleet.md)."""
    seconds = work_end - work_start
    problems = list(missing)
    joules: dict[str, float] = {}
    gpus: dict[str, Any] = {}
    hosts: dict[str, float] = {}
    bound = 0.0
    for e in edges:
        r = settle(e.start, work_end, e.end, e.after, work_start=work_start, idle_edges=True)
        if r.raw_delta < 0 or e.after.value < e.end.value:
            problems.append(
                f"{meter} meter: the energy counter of {e.gpu.label} ({e.gpu.source}) went backwards "
                f"({e.start.value:.0f} -> {e.end.value:.0f} -> {e.after.value:.0f} mJ): the GPU was reset or "
                "DCGM restarted; round discarded, the next one starts from the new counter"
            )
        elif r.raw_delta == 0:
            problems.append(f"{meter} meter: the energy counter of {e.gpu.label} ({e.gpu.source}) did not move "
                            "in the window: a stale series; check the exporter on that host")
        j = r.delta / 1000.0
        joules[e.gpu.label] = j
        hosts[e.gpu.host] = hosts.get(e.gpu.host, 0.0) + j
        bound += r.bound / 1000.0
        gpus[e.gpu.label] = {
            "host": e.gpu.host, "gpu": e.gpu.index, "uuid": e.gpu.uuid, "model": e.gpu.model, "joules": j,
            "raw_joules": r.raw_delta / 1000.0, "tick_bound_j": r.bound / 1000.0, "tail_s": r.tail_s,
            "head_s": r.head_s, "tail_watts": r.tail_rate / 1000.0,
            "tick_latency_s": max(e.start.latency_s, e.end.latency_s, e.after.latency_s),
        }
    total = sum(joules.values())
    shortest = MIN_INTERVALS * interval_s
    if seconds < shortest:
        problems.append(f"{meter} meter: a {seconds:.3f} s window is shorter than {MIN_INTERVALS} refresh interval(s) "
                        f"({shortest:.3g} s at {interval_s:.3g} s each), too short to measure; raise min_window_s to at "
                        f"least {shortest:.3g} s, or shorten the exporter's or scrape interval")
    elif max_bound is not None and total > 0 and bound > max_bound * total:
        problems.append(
            f"{meter} meter: the worst-case quantisation bound {bound:.3g} J is {bound / total:.1%} of the window's "
            f"{total:.4g} J (option max_bound={max_bound:g}): raise min_window_s or shorten the refresh interval"
        )
    info.update(gpus=gpus, hosts=hosts, tick_bound_j=bound, window_s=seconds, work_start=work_start,
                work_end=work_end, refresh_interval_s=interval_s)
    return MeterReading(joules=joules, seconds=seconds, valid=not problems, problems=problems, info=info)


def missing_gpus(meter: str, expected: list[Gpu], seen: Mapping[str, set[str]]) -> list[str]:
    """Problems for the GPUs that vanished from, or appeared in, the series during a window.
    `seen` maps each edge's name ("start", "end", ...) to the UUIDs (or labels) present there."""
    out: list[str] = []
    want = {g.uuid or g.label: g for g in expected}
    told: set[str] = set()  # each GPU once, at the first edge it was missing or new at
    for edge, keys in seen.items():
        for key in sorted(set(want) - keys - told):
            told.add(key)
            out.append(f"{meter} meter: GPU {want[key].label} ({key}) vanished at the {edge} of the window "
                       f"({want[key].source}); round discarded; if it is gone for good, narrow option match")
        for key in sorted(keys - set(want) - told):
            told.add(key)
            out.append(f"{meter} meter: GPU {key} appeared at the {edge} of the window, outside the GPU set "
                       "the meter was built with; round discarded; restart the run to meter the new set")
    return out
