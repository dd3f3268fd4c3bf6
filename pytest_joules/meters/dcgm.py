"""The `dcgm` meter: GPU energy on many machines, read from their dcgm-exporter endpoints.

``--joules-meter dcgm --joules-meter-option exporters=http://node1:9400/metrics,http://node2:9400/metrics``
(``match={Hostname="node1",gpu=~"[0-3]"}`` narrows the GPUs, in PromQL's syntax). Energy is the sum of
the selected GPUs' DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION increases (mJ since boot).

The exporter publishes new values once per collection interval (dcgm-exporter's ``-c``, 30 s by
default), so, as the nvml meter does with its counter's 0.1 s steps, each window opens on a
refresh of every exporter and closes on the refresh after the work plus one more (to measure the
idle tail's power). The published value also lags the hardware (DCGM samples the counter on its
own schedule): both edges first wait `lag_s` (default one interval) idle, so the lag falls into
idle time at both edges and cancels. The interval is measured when the meter is built (three
refreshes); windows shorter than MIN_INTERVALS intervals are refused (and, with option max_bound,
those whose worst-case quantisation bound exceeds that share of their energy); the default
min_window_s is WINDOW_INTERVALS intervals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, InvalidMeasurement, MeterUnavailable
from . import exposition, fleet
from .base import MeterReading, MeterSpec, number_option, reject_unknown_options
from .ticks import CounterStuck, Tick, wait_for_ticks

OPTIONS = ("exporters", "match", "metric", "min_window_s", "interval_s", "lag_s", "poll_s", "timeout_s",
           "max_bound", "tick_timeout_s")
FIX_DOWN = "is dcgm-exporter running there? check with curl, and option exporters=URL[,URL...]"


@dataclass
class _Exporter:
    url: str
    gpus: list[fleet.Gpu]
    #: snapshots seen in this window: a tick's value is an index into it
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class DcgmOptions:
    exporters: tuple[str, ...]
    selector: fleet.Selector
    metric: str = fleet.METRIC
    min_window_s: float | None = None
    interval_s: float | None = None
    lag_s: float | None = None
    poll_s: float | None = None  # default: a twentieth of the interval, within [0.005, 0.25] s
    timeout_s: float = 5.0
    max_bound: float | None = None
    tick_timeout_s: float | None = None

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> DcgmOptions:
        o = spec.options
        reject_unknown_options("dcgm", o, OPTIONS)
        raw = str(o.get("exporters", "")).strip()
        if not raw:
            raise ConfigError("the dcgm meter needs the exporters to read: --joules-meter-option "
                              "exporters=http://HOST:9400/metrics[,http://HOST2:9400/metrics...]")
        urls = tuple(dict.fromkeys(fleet.check_url(u, "dcgm", "exporters") for u in raw.split(",") if u.strip()))
        nums = {n: number_option("dcgm", o, n, 0.0, positive=n in ("poll_s", "timeout_s", "max_bound", "interval_s",
                                                                   "tick_timeout_s"))
                for n in ("min_window_s", "interval_s", "lag_s", "poll_s", "timeout_s", "max_bound", "tick_timeout_s")
                if n in o}
        return cls(exporters=urls, selector=fleet.Selector.parse(str(o.get("match", "")), "dcgm"),
                   metric=str(o.get("metric", fleet.METRIC)), **nums)


def parse_energy(text: str, url: str, metric: str, selector: fleet.Selector) -> dict[str, tuple[fleet.Gpu, float]]:
    """The selected energy series of one exposition: {UUID or label: (GPU, mJ)}."""
    try:
        samples = exposition.parse(text)
    except exposition.ExpositionError as exc:
        raise MeterUnavailable(f"dcgm-exporter at {url} served a malformed exposition ({exc}); "
                               "it is not a dcgm-exporter /metrics endpoint, or a proxy mangled it") from None
    host = url.split("://", 1)[1].split("/", 1)[0]
    out: dict[str, tuple[fleet.Gpu, float]] = {}
    for s in samples:
        if s.name == metric and selector.matches(s.labels):
            gpu = fleet.gpu_of(s.labels, host, url)
            out[gpu.uuid or gpu.label] = (gpu, s.value)
    return out


class DcgmMeter:
    name = "dcgm"

    def __init__(self, exporters: list[_Exporter], opt: DcgmOptions, interval_s: float,
                 fetch: Callable[[str, float], str], clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._exporters = exporters
        self._opt = opt
        self.interval_s = interval_s
        self._fetch = fetch
        self._clock = clock
        self._sleep = sleep
        self.lag_s = interval_s if opt.lag_s is None else opt.lag_s
        self.tick_timeout_s = opt.tick_timeout_s or max(1.0, 3 * interval_s)
        self.poll_s = opt.poll_s or min(0.25, max(0.005, interval_s / 20))
        self.min_window_s = fleet.WINDOW_INTERVALS * interval_s if opt.min_window_s is None else opt.min_window_s
        self._start: list[Tick] | None = None
        self._t0 = 0.0
        self._stuck: str | None = None

    @property
    def gpus(self) -> list[fleet.Gpu]:
        return [g for e in self._exporters for g in e.gpus]

    # -- reading the exporters ------------------------------------------------------------------
    def _snapshot(self, exp: _Exporter) -> dict[str, float]:
        try:
            text = self._fetch(exp.url, self._opt.timeout_s)
            found = parse_energy(text, exp.url, self._opt.metric, self._opt.selector)
        except MeterUnavailable as exc:
            raise InvalidMeasurement(f"dcgm meter: {exc}") from None
        return {key: value for key, (_gpu, value) in found.items()}

    def _read(self, exp: _Exporter) -> float:
        """The index of the exporter's current snapshot in its history: it changes when the exporter refreshes."""
        snap = self._snapshot(exp)
        if not exp.history or exp.history[-1] != snap:
            exp.history.append(snap)
        return float(len(exp.history) - 1)

    def _ticks(self, count: int, where: str) -> list[list[Tick]]:
        reads = [lambda e=e: self._read(e) for e in self._exporters]
        try:
            return wait_for_ticks(reads, self._clock, self._sleep, count=count, poll_s=self.poll_s,
                                  timeout_s=self.tick_timeout_s)
        except CounterStuck as exc:
            urls = ", ".join(self._exporters[i].url for i in exc.stuck)
            raise _Stale(
                f"dcgm meter: {urls} published no new value for {self.tick_timeout_s:g} s {where} (its collection "
                f"interval is {self.interval_s:g} s): stale series; the exporter or DCGM on that host is stuck, "
                "restart it (or raise option tick_timeout_s); round discarded"
            ) from None

    # -- window ---------------------------------------------------------------------------------
    def begin(self) -> None:
        for exp in self._exporters:
            exp.history = []
        self._stuck = None
        self._sleep(self.lag_s)  # the opening values must not hold energy of the work before the window
        try:
            self._start = [ticks[0] for ticks in self._ticks(1, "before the window")]
        except _Stale as exc:
            self._stuck, self._start = str(exc), []
        self._t0 = self._clock()

    def end(self) -> MeterReading:
        if self._start is None:
            raise RuntimeError("dcgm meter: end() called without begin()")
        work_end = self._clock()
        start, self._start = self._start, None
        info: dict[str, Any] = {"lag_s": self.lag_s}
        if self._stuck is None:
            self._sleep(self.lag_s)  # the closing values must hold all of the work's energy
            try:
                closing = self._ticks(2, "after the window")
            except _Stale as exc:
                self._stuck = str(exc)
        if self._stuck is not None:
            return MeterReading(joules={}, seconds=work_end - self._t0, valid=False, problems=[self._stuck], info=info)
        edges: list[fleet.Edge] = []
        seen: dict[str, set[str]] = {}
        for exp, s, (e, a) in zip(self._exporters, start, closing):
            snaps = {"start": exp.history[int(s.value)], "end": exp.history[int(e.value)],
                     "closing refresh": exp.history[int(a.value)]}
            for edge, snap in snaps.items():
                seen.setdefault(edge, set()).update(snap)
            for gpu in exp.gpus:
                key = gpu.uuid or gpu.label
                if all(key in snap for snap in snaps.values()):
                    v = [snap[key] for snap in snaps.values()]
                    edges.append(fleet.Edge(gpu, Tick(v[0], s.time, s.latency_s), Tick(v[1], e.time, e.latency_s),
                                            Tick(v[2], a.time, a.latency_s)))
        missing = fleet.missing_gpus("dcgm", self.gpus, seen)
        return fleet.reading("dcgm", edges, self._t0, work_end, missing=missing, interval_s=self.interval_s,
                             max_bound=self._opt.max_bound, info=info)

    def device_info(self) -> dict[str, Any]:
        return fleet.device_info("dcgm", self.gpus, exporters=[e.url for e in self._exporters],
                                 refresh_interval_s=self.interval_s)

    def close(self) -> None:
        """Nothing held: each read is one GET."""


class _Stale(Exception):
    pass


def http_fetch(url: str, timeout_s: float) -> str:
    return fleet.http_get(url, timeout_s, "dcgm-exporter", FIX_DOWN).decode("utf-8", "replace")


def build(spec: MeterSpec, fetch: Callable[[str, float], str] = http_fetch,
          clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> DcgmMeter:
    opt = DcgmOptions.from_spec(spec)
    exporters: list[_Exporter] = []
    every: list[fleet.Gpu] = []
    for url in opt.exporters:
        text = fetch(url, opt.timeout_s)
        every += [g for g, _ in parse_energy(text, url, opt.metric, fleet.Selector()).values()]
        chosen = [g for g, _ in parse_energy(text, url, opt.metric, opt.selector).values()]
        if chosen:
            exporters.append(_Exporter(url, chosen))
    if not every:
        raise ConfigError(f"dcgm meter: no {opt.metric} series at {', '.join(opt.exporters)}; enable the field in "
                          "the exporter's counters CSV (dcgm-exporter -f), or set option metric= to its name")
    if not exporters:
        raise ConfigError(f"dcgm meter: option match {opt.selector} selects no GPU; the exporters serve "
                          f"{fleet.describe_available(every)}; fix the labels (Hostname, gpu, UUID, modelName)")
    fleet.check_unique([g for e in exporters for g in e.gpus], "dcgm")
    interval = opt.interval_s
    if interval is None:
        probe = DcgmMeter(exporters, opt, 0.2, fetch, clock, sleep)  # polls every 10 ms
        interval = measure_interval(probe, opt.tick_timeout_s or 95.0)
    return DcgmMeter(exporters, opt, interval, fetch, clock, sleep)


def measure_interval(meter: DcgmMeter, timeout_s: float) -> float:
    """The slowest exporter's collection interval: the mean time between three of its refreshes, as
    seen by polling (each seen within one poll of when it happened)."""
    meter.tick_timeout_s = timeout_s
    try:
        ticks = meter._ticks(3, "while the meter measured the collection interval")
    except (_Stale, InvalidMeasurement) as exc:
        raise MeterUnavailable(str(exc).removesuffix("; round discarded")) from None
    finally:
        for exp in meter._exporters:
            exp.history = []
    return max((t[2].time - t[0].time) / 2 for t in ticks)


def create(spec: MeterSpec, engine: Any) -> DcgmMeter:
    return build(spec)
