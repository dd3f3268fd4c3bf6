"""The `prometheus` meter: GPU energy of a whole cluster from the DCGM counters Prometheus scrapes.

``--joules-meter prometheus --joules-meter-option url=http://prometheus:9090
--joules-meter-option match={Hostname=~"gpu-node-[12]"}``. Where only Prometheus is reachable,
the meter reads the raw samples of DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION through the HTTP query API
(``/api/v1/query`` of ``METRIC{match}[Ns]``) and uses each sample's own timestamp.

A sample whose value differs from the one before is a tick: the exporter refreshed between the
two scrapes, so the value is the energy at some moment in (previous scrape, this scrape] (less,
with option collection_interval_s, when the exporter refreshes faster than Prometheus scrapes).
Each window waits, idle, for a tick whose whole uncertainty lies after `lag_s` past the previous
work (opening edge) and past the window's work (closing edge), plus the tick after it, and
`ticks.settle` corrects for the idle head and tail. The scrape interval therefore sets the
resolution (see docs/fleet.md for what to set it to). Sample timestamps are Prometheus's clock:
the meter measures its offset from ours once (the `time()` query) and works in Prometheus's time.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, InvalidMeasurement, MeterUnavailable
from . import fleet
from .base import MeterReading, MeterSpec, number_option, reject_unknown_options
from .ticks import Tick

OPTIONS = ("url", "match", "metric", "min_window_s", "lag_s", "poll_s", "timeout_s", "max_bound",
           "tick_timeout_s", "collection_interval_s")
FIX_DOWN = "check option url= (the server's base URL, e.g. http://prometheus:9090) and that Prometheus runs (curl URL/-/ready)"
Samples = dict[str, tuple[fleet.Gpu, list[tuple[float, float]]]]


@dataclass(frozen=True)
class PromOptions:
    url: str
    selector: fleet.Selector
    metric: str = fleet.METRIC
    min_window_s: float | None = None
    lag_s: float | None = None
    poll_s: float = 0.1
    timeout_s: float = 5.0
    max_bound: float | None = None
    tick_timeout_s: float | None = None
    collection_interval_s: float | None = None

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> PromOptions:
        o = spec.options
        reject_unknown_options("prometheus", o, OPTIONS)
        if not str(o.get("url", "")).strip():
            raise ConfigError("the prometheus meter needs the server to ask: --joules-meter-option url=http://HOST:9090")
        positive = ("poll_s", "timeout_s", "max_bound", "tick_timeout_s", "collection_interval_s")
        nums = {n: number_option("prometheus", o, n, 0.0, positive=n in positive)
                for n in ("min_window_s", "lag_s", *positive) if n in o}
        return cls(url=fleet.check_url(str(o["url"]), "prometheus", "url").rstrip("/"),
                   selector=fleet.Selector.parse(str(o.get("match", "")), "prometheus"),
                   metric=str(o.get("metric", fleet.METRIC)), **nums)


class PromApi:
    """The instant-query endpoint; every failure is a MeterUnavailable naming the URL and the fix."""

    def __init__(self, url: str, timeout_s: float,
                 get: Callable[[str, float], bytes] | None = None) -> None:
        self.url = url
        self._timeout = timeout_s
        self._get = get or (lambda u, t: fleet.http_get(u, t, "Prometheus", FIX_DOWN))

    def query(self, promql: str, at: float | None = None) -> Any:
        params = {"query": promql} | ({} if at is None else {"time": f"{at:.3f}"})
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            body = json.loads(self._get(url, self._timeout))
            status, data = body["status"], body.get("data")
        except (ValueError, KeyError, TypeError):
            raise MeterUnavailable(f"Prometheus at {self.url} did not answer like Prometheus's query API; is option "
                                   "url= the Prometheus server (not Grafana, not an exporter)?") from None
        if status != "success":
            raise ConfigError(f"Prometheus at {self.url} refused the query {promql!r}: {body.get('error')}; "
                              "fix option match")
        return data

    def samples(self, metric: str, selector: fleet.Selector, at: float, range_s: float) -> Samples:
        """Raw samples of the selected series over (at - range_s, at]: {UUID or label: (GPU, [(t, mJ)])}."""
        data = self.query(f"{selector.promql(metric)}[{max(1, math.ceil(range_s))}s]", at)
        out: Samples = {}
        try:
            for series in data["result"]:
                labels = series["metric"]
                gpu = fleet.gpu_of(labels, "?", f"Prometheus {self.url}, instance {labels.get('instance', '?')}")
                out[gpu.uuid or gpu.label] = (gpu, [(float(t), float(v)) for t, v in series["values"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise MeterUnavailable(f"Prometheus at {self.url} returned a malformed matrix ({exc!r}) for "
                                   f"{selector.promql(metric)}; is it Prometheus?") from None
        return out


def ticks_of(points: list[tuple[float, float]], collection_interval_s: float | None) -> list[Tick]:
    """The samples whose value differs from the previous one; each is the energy at a moment
    within latency_s before its timestamp."""
    out = []
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if v1 != v0:
            lat = t1 - t0 if collection_interval_s is None else min(t1 - t0, collection_interval_s)
            out.append(Tick(value=v1, time=t1, latency_s=lat))
    return out


class PrometheusMeter:
    name = "prometheus"

    def __init__(self, api: PromApi, opt: PromOptions, gpus: list[fleet.Gpu], interval_s: float, skew_s: float,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self._api, self._opt, self.gpus = api, opt, gpus
        self.interval_s, self.skew_s = interval_s, skew_s
        self._clock, self._sleep = clock, sleep
        self.lag_s = interval_s if opt.lag_s is None else opt.lag_s
        self.tick_timeout_s = opt.tick_timeout_s or max(2.0, 4 * interval_s)
        self.min_window_s = fleet.WINDOW_INTERVALS * interval_s if opt.min_window_s is None else opt.min_window_s
        self._start: dict[str, Tick] | None = None
        self._t0 = 0.0
        self._stale: str | None = None

    def _now(self) -> float:
        """Prometheus's clock."""
        return self._clock() + self.skew_s

    def _wait(self, after: float, where: str, closing: bool) -> tuple[dict[str, list[Tick]], list[str]]:
        """Poll until every GPU has a tick whose uncertainty starts at or after `after`: the latest one
        (opening), or the first and the one after it (closing). Also returns the GPUs that appeared."""
        deadline = self._clock() + self.tick_timeout_s
        want = {g.uuid or g.label: g for g in self.gpus}
        while True:
            now = self._now()
            series = self._api.samples(self._opt.metric, self._opt.selector, now, now - after + 3 * self.interval_s)
            found: dict[str, list[Tick]] = {}
            for key in want:
                good = [t for t in ticks_of(series.get(key, (None, []))[1], self._opt.collection_interval_s)
                        if t.time - t.latency_s >= after]
                if closing and len(good) >= 2:
                    found[key] = good[:2]
                elif not closing and good:
                    found[key] = good[-1:]
            appeared = [f"prometheus meter: GPU {g.label} ({k}) appeared in {self._opt.selector} {where}, outside "
                        "the GPU set the meter was built with; round discarded; restart the run to meter the new set"
                        for k, (g, _) in series.items() if k not in want]
            if len(found) == len(want) or appeared:
                return found, appeared
            if self._clock() > deadline:
                late = [want[k].label for k in want if k not in found]
                ages = [now - series[k][1][-1][0] for k in want if k not in found and series.get(k, (0, []))[1]]
                age = "no samples" if not ages else (f"newest sample {max(ages):.1f} s old" if max(ages) > 2 * self.interval_s
                                                     else "sampled, but the value does not change: the exporter is stuck")
                raise _Stale(
                    f"prometheus meter: {', '.join(late)}: no new counter value for {self.tick_timeout_s:g} s {where} "
                    f"({age}; scrape interval {self.interval_s:g} s): stale or vanished series; check that "
                    f"Prometheus still scrapes its exporter ({self._api.url}/targets); round discarded"
                )
            self._sleep(self._opt.poll_s)

    def begin(self) -> None:
        self._stale = None
        called = self._now()
        self._sleep(self.lag_s)
        try:
            found, appeared = self._wait(called + self.lag_s, "before the window", closing=False)
            self._start = {k: v[0] for k, v in found.items()}
            if appeared:
                self._stale = appeared[0]
        except (_Stale, MeterUnavailable) as exc:
            self._stale, self._start = str(exc), {}
        self._t0 = self._now()

    def end(self) -> MeterReading:
        if self._start is None:
            raise RuntimeError("prometheus meter: end() called without begin()")
        work_end = self._now()
        start, self._start = self._start, None
        info: dict[str, Any] = {"lag_s": self.lag_s, "clock_skew_s": self.skew_s}
        if self._stale is None:
            self._sleep(self.lag_s)
            try:
                closing, appeared = self._wait(work_end + self.lag_s, "after the window", closing=True)
                if appeared:
                    self._stale = appeared[0]
            except _Stale as exc:
                self._stale = str(exc)
            except MeterUnavailable as exc:
                raise InvalidMeasurement(f"prometheus meter: {exc}") from None
        if self._stale is not None:
            return MeterReading(joules={}, seconds=work_end - self._t0, valid=False, problems=[self._stale], info=info)
        edges = [fleet.Edge(g, start[g.uuid or g.label], *closing[g.uuid or g.label]) for g in self.gpus]
        return fleet.reading("prometheus", edges, self._t0, work_end, missing=[], interval_s=self.interval_s,
                             max_bound=self._opt.max_bound, info=info)

    def device_info(self) -> dict[str, Any]:
        return fleet.device_info("prometheus", self.gpus, prometheus=self._api.url, match=str(self._opt.selector),
                                 refresh_interval_s=self.interval_s)

    def close(self) -> None:
        """Nothing held: each read is one GET."""


class _Stale(Exception):
    pass


def clock_skew(api: PromApi, clock: Callable[[], float]) -> float:
    """Prometheus's clock minus ours, from the `time()` query (to within half its round trip)."""
    before = clock()
    data = api.query("time()")
    after = clock()
    try:
        server = float(data["result"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        raise MeterUnavailable(f"Prometheus at {api.url} answered time() oddly ({data!r}); is it Prometheus?") from None
    return server - (before + after) / 2


def build(spec: MeterSpec, get: Callable[[str, float], bytes] | None = None, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep) -> PrometheusMeter:
    opt = PromOptions.from_spec(spec)
    api = PromApi(opt.url, opt.timeout_s, get)
    skew = clock_skew(api, clock)
    deadline = clock() + (opt.tick_timeout_s or 30.0)
    while True:  # a few samples of each series, to measure the scrape interval
        series = api.samples(opt.metric, opt.selector, clock() + skew, 60)
        if not series:
            every = api.samples(opt.metric, fleet.Selector(), clock() + skew, 60)
            if not every:
                raise ConfigError(f"prometheus meter: Prometheus at {opt.url} has no {opt.metric} samples in the last "
                                  "60 s; is it scraping dcgm-exporter (see its /targets page), or is the metric "
                                  "named otherwise (option metric=)?")
            raise ConfigError(f"prometheus meter: option match {opt.selector} selects no GPU; Prometheus has "
                              f"{fleet.describe_available([g for g, _ in every.values()])}; fix the labels")
        if min(len(p) for _, p in series.values()) >= 4 or clock() > deadline:
            break
        sleep(opt.poll_s)
    gaps = [b[0] - a[0] for _, p in series.values() for a, b in zip(p, p[1:])]
    if not gaps:
        raise MeterUnavailable(f"prometheus meter: {opt.selector.promql(opt.metric)} has a single sample in Prometheus "
                               f"at {opt.url}; it is not being scraped (see {opt.url}/targets)")
    interval = statistics.median(gaps)
    now = clock() + skew
    stale = [f"{g.label} ({now - p[-1][0]:.0f} s)" for g, p in series.values() if now - p[-1][0] > 3 * interval + 1]
    if stale:
        raise MeterUnavailable(f"prometheus meter: stale series in Prometheus at {opt.url}: {', '.join(stale)} since "
                               f"the newest sample, scrape interval {interval:g} s; check {opt.url}/targets")
    gpus = [g for g, _ in series.values()]
    fleet.check_unique(gpus, "prometheus")
    return PrometheusMeter(api, opt, gpus, interval, skew, clock, sleep)


def create(spec: MeterSpec, engine: Any) -> PrometheusMeter:
    return build(spec)
