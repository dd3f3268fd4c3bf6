"""A fake dcgm-exporter: a stdlib HTTP server in a thread serving DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
counters (mJ) of a known power profile, refreshed on a collection interval like the real exporter.

Power: each GPU idles at `idle_w`; while the fleet is `busy` it draws `load_w[i]` plus a ripple of
`ripple_w` with period `ripple_s` (so a window is not a flat step). Energy is its exact integral.
As in the real stack, DCGM samples the counter every `interval_s` (phase `dcgm_phase_s`) and the
exporter publishes DCGM's latest sample on its own refreshes (every `interval_s`, phase 0): a
published value lags the hardware by up to one interval. Failure switches: `reset` (a counter
restarts from 0), `frozen` (refreshes stop: a stale series), `malformed`, `hidden` (GPUs that
vanished), `extra` (a GPU that appeared).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from pytest_joules.meters.exposition import Sample, render

METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"


@dataclass
class Profile:
    """The fleet's power, switched busy/idle by the test; `energy_j(i, t)` is exact."""

    gpus: int
    idle_w: float = 60.0
    load_w: tuple[float, ...] = ()
    ripple_w: float = 40.0
    ripple_s: float = 0.7
    clock: Callable[[], float] = time.time
    switches: list[tuple[float, bool]] = field(default_factory=list)  # (time, busy from then on)
    t_origin: float = 0.0

    def __post_init__(self) -> None:
        self.load_w = self.load_w or tuple(300.0 + 25.0 * i for i in range(self.gpus))
        self.t_origin = self.clock()
        self.switches = [(self.t_origin, False)]
        self._lock = threading.Lock()

    def set_busy(self, busy: bool) -> float:
        with self._lock:
            t = self.clock()
            self.switches.append((t, busy))
            return t

    def _integral(self, i: int, busy: bool, a: float, b: float) -> float:
        if not busy:
            return self.idle_w * (b - a)
        w = 2 * math.pi / self.ripple_s
        return self.load_w[i] * (b - a) - self.ripple_w / w * (math.cos(w * b) - math.cos(w * a))

    def energy_j(self, i: int, t: float) -> float:
        """Joules GPU i used from the origin to t."""
        with self._lock:
            points = list(self.switches)
        total = 0.0
        for (a, busy), nxt in zip(points, points[1:] + [(math.inf, False)]):
            if a >= t:
                break
            total += self._integral(i, busy, a, min(t, nxt[0]))
        return total


@dataclass
class Host:
    """One node's exporter: its GPUs are `first`..`first+count-1` of the profile."""

    name: str
    first: int
    count: int
    interval_s: float = 0.2
    dcgm_phase_s: float = 0.07
    model: str = "NVIDIA H100 80GB HBM3"
    base_mj: float = 7_000_000_000.0
    reset: bool = False
    frozen_at: float | None = None
    malformed: bool = False
    hidden: set[int] = field(default_factory=set)
    extra: bool = False

    def uuid(self, i: int) -> str:
        return f"GPU-{self.name}-{i:04d}-fake"


def published_time(host: Host, t: float, origin: float) -> float:
    """The moment whose energy the exporter shows at t: DCGM's latest sample before its latest refresh."""
    if host.frozen_at is not None:
        t = min(t, host.frozen_at)
    c = host.interval_s
    refresh = origin + math.floor((t - origin) / c) * c
    return origin + host.dcgm_phase_s + math.floor((refresh - origin - host.dcgm_phase_s) / c) * c


def exposition(host: Host, profile: Profile, t: float) -> str:
    if host.malformed:
        return f'{METRIC}{{gpu="0",UUID="x"}} 12 34 56\n'
    at = published_time(host, t, profile.t_origin)
    samples = []
    for k in range(host.count):
        if k in host.hidden:
            continue
        i = host.first + k
        mj = 0.0 if host.reset else host.base_mj + 1_000_000 * i
        labels = {"gpu": str(k), "UUID": host.uuid(k), "pci_bus_id": f"00000000:{k + 7:02X}:00.0",
                  "device": f"nvidia{k}", "modelName": host.model, "Hostname": host.name,
                  "DCGM_FI_DRIVER_VERSION": "550.54.15"}
        samples.append(Sample(METRIC, labels, float(math.floor(mj + 1000 * profile.energy_j(i, at)))))
        samples.append(Sample("DCGM_FI_DEV_GPU_TEMP", dict(labels), 41.0))
    if host.extra:
        labels = {"gpu": str(host.count), "UUID": "GPU-new", "modelName": host.model, "Hostname": host.name}
        samples.append(Sample(METRIC, labels, 5.0e9 + 1000 * profile.energy_j(0, at)))
    return render(samples, {METRIC: "counter", "DCGM_FI_DEV_GPU_TEMP": "gauge"})


class Exporter:
    """Serves `host` on 127.0.0.1:<free port>/metrics until `stop`."""

    def __init__(self, host: Host, profile: Profile) -> None:
        self.host, self.profile = host, profile
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = exposition(fake.host, fake.profile, fake.profile.clock()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def fleet(hosts: int = 2, gpus_per_host: int = 2, interval_s: float = 0.2, **profile_kw: object) -> tuple[Profile, list[Exporter]]:
    profile = Profile(gpus=hosts * gpus_per_host, **profile_kw)  # type: ignore[arg-type]
    exporters = [Exporter(Host(f"gpu-node-{h + 1}", h * gpus_per_host, gpus_per_host, interval_s), profile)
                 for h in range(hosts)]
    return profile, exporters


def work(meter: object, profile: Profile, seconds: float) -> tuple[object, float]:
    """One window: begin, the fleet busy for `seconds`, end; the reading and the profile's exact
    joules over the meter's own window (all GPUs)."""
    meter.begin()  # type: ignore[attr-defined]
    profile.set_busy(True)
    time.sleep(seconds)
    profile.set_busy(False)
    reading = meter.end()  # type: ignore[attr-defined]
    return reading, truth(profile, reading)


def truth(profile: Profile, reading: object) -> float:
    info = reading.info  # type: ignore[attr-defined]
    a, b = info["work_start"] - info.get("clock_skew_s", 0.0), info["work_end"] - info.get("clock_skew_s", 0.0)
    return sum(profile.energy_j(i, b) - profile.energy_j(i, a) for i in range(profile.gpus))
