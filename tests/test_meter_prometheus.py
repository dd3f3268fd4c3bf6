"""The `prometheus` meter against a real Prometheus (Debian's package, started here on 127.0.0.1 with
a temporary config, stopped by its pid) scraping fake dcgm-exporters of a known power profile."""

from __future__ import annotations

import time

import pytest

from pytest_joules.errors import ConfigError, MeterUnavailable
from pytest_joules.meters import prometheus
from pytest_joules.meters.base import MeterSpec

from .fleet_fake import fleet, work
from .prometheus_server import BINARY, SKIP_REASON, Prometheus, free_port

pytestmark = pytest.mark.skipif(BINARY is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    profile, exporters = fleet(hosts=2, gpus_per_host=2, interval_s=0.05)
    server = Prometheus(tmp_path_factory.mktemp("prometheus"),
                        [e.url.split("//")[1].split("/")[0] for e in exporters], scrape_interval="200ms")
    try:
        server.ready()
        yield profile, exporters, server
    finally:
        server.stop()
        for e in exporters:
            e.stop()


@pytest.fixture
def cluster(stack):
    profile, exporters, server = stack
    yield profile, exporters, server
    broken = any(e.host.reset or e.host.malformed or e.host.frozen_at for e in exporters)
    for e in exporters:  # each test leaves the exporters healthy for the next
        e.host.reset = e.host.malformed = False
        e.host.frozen_at = None
    if broken:
        time.sleep(0.8)  # a few scrapes, so the next test does not start on series the meter calls stale


def build(server, **options):
    return prometheus.build(MeterSpec("prometheus", {"url": server.url, "tick_timeout_s": 1.5, **options}))


def test_windows_match_the_profile_within_the_bound(cluster):
    profile, _, server = cluster
    meter = build(server, match='{Hostname=~"gpu-node-[12]"}')
    assert meter.interval_s == pytest.approx(0.2, rel=0.1)
    assert abs(meter.skew_s) < 0.5  # the same machine's clock
    for seconds in (0.5, 1.0):
        reading, truth = work(meter, profile, seconds)
        assert reading.valid, reading.problems
        assert abs(reading.total_joules - truth) <= reading.info["tick_bound_j"]
        assert set(reading.info["hosts"]) == {"gpu-node-1", "gpu-node-2"} and len(reading.joules) == 4


def test_a_selection_narrows_the_gpus_and_the_fingerprint(cluster):
    _, _, server = cluster
    meter = build(server, match='{Hostname="gpu-node-2",gpu="1"}')
    info = meter.device_info()
    assert [g.label for g in meter.gpus] == ["gpu-node-2/gpu1"]
    assert info["gpu_count"] == 1 and info["gpu_uuids"] == ["GPU-gpu-node-2-0001-fake"]


def test_prometheus_down_is_named_with_the_fix():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MeterUnavailable, match=f"Prometheus at {url}/api/v1/query.* is unreachable .*check option url="):
        prometheus.build(MeterSpec("prometheus", {"url": url}))


def test_a_selection_that_matches_no_gpu_lists_what_there_is(cluster):
    _, _, server = cluster
    with pytest.raises(ConfigError, match=r'match \{Hostname="gpu-node-9"\} selects no GPU; Prometheus has 4 GPU'):
        build(server, match='{Hostname="gpu-node-9"}')


def test_a_metric_prometheus_does_not_have_says_so(cluster):
    _, _, server = cluster
    with pytest.raises(ConfigError, match="has no DCGM_FI_DEV_NOPE samples in the last 60 s"):
        build(server, metric="DCGM_FI_DEV_NOPE")


def _window(meter, profile, during):
    meter.begin()
    profile.set_busy(True)
    time.sleep(0.2)
    during()
    profile.set_busy(False)
    return meter.end()


@pytest.mark.parametrize("breakage", ["frozen", "malformed"])
def test_stale_series_discard_the_round_naming_them(cluster, breakage):
    """A frozen exporter (same value every scrape) and one whose exposition Prometheus cannot
    parse (no new samples at all) both leave the series without new values."""
    profile, exporters, server = cluster
    meter = build(server)

    def during():
        if breakage == "frozen":
            exporters[1].host.frozen_at = time.time()
        else:
            exporters[1].host.malformed = True

    reading = _window(meter, profile, during)
    assert not reading.valid
    [problem] = reading.problems
    assert problem.startswith("prometheus meter: gpu-node-2/gpu0, gpu-node-2/gpu1: no new counter value for 1.5 s "
                              "after the window")
    assert f"stale or vanished series; check that Prometheus still scrapes its exporter ({server.url}/targets)" in problem


def test_a_counter_reset_discards_the_round(cluster):
    profile, exporters, server = cluster
    meter = build(server)
    reading = _window(meter, profile, lambda: setattr(exporters[0].host, "reset", True))
    assert not reading.valid
    assert any("energy counter of gpu-node-1/gpu0" in p and "went backwards" in p for p in reading.problems)


def test_a_server_that_is_not_prometheus_is_named(cluster):
    _, exporters, _ = cluster
    base = exporters[0].url.rsplit("/", 1)[0]  # the exporter answers 404 for /api/v1/query
    with pytest.raises(MeterUnavailable, match=f"Prometheus at {base}/api/v1/query.* answered HTTP 404"):
        prometheus.build(MeterSpec("prometheus", {"url": base}))
