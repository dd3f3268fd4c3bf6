"""The `dcgm` meter against fake dcgm-exporters (real HTTP on 127.0.0.1, a known power profile),
the exposition parser, the label selection, and the fleet's fingerprint."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_joules import registry
from pytest_joules.errors import ConfigError, MeterUnavailable
from pytest_joules.store.fingerprint import differences, fingerprint
from pytest_joules.measure import measure
from pytest_joules.meters import dcgm, exposition
from pytest_joules.meters.base import MeterSpec
from pytest_joules.meters.fleet import Selector
from pytest_joules.store.results import measurement_to_dict
from pytest_joules.engines.workload import EngineRun, Workload

from .fleet_fake import fleet, work

INTERVAL = 0.05  # the fake exporters' collection interval: short, so the tests are fast


@pytest.fixture
def cluster():
    profile, exporters = fleet(hosts=2, gpus_per_host=2, interval_s=INTERVAL)
    yield profile, exporters
    for e in exporters:
        e.stop()


def build(exporters, **options):
    spec = MeterSpec("dcgm", {"exporters": ",".join(e.url for e in exporters), **options})
    return dcgm.build(spec, clock=time.time)  # the profile's clock, so the truth is comparable


# -- exposition ----------------------------------------------------------------------------------

label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
samples = st.lists(
    st.builds(exposition.Sample,
              name=st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,10}", fullmatch=True),
              labels=st.dictionaries(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True), label_values, max_size=4),
              value=st.floats(allow_nan=False),
              timestamp_ms=st.none() | st.integers(-10**12, 10**13)),
    max_size=8, unique_by=lambda s: (s.name, tuple(sorted(s.labels.items()))))


@settings(max_examples=80, deadline=None)
@given(samples)
def test_the_parser_reads_back_what_the_format_writes(items):
    assert exposition.parse(exposition.render(items)) == items


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_the_parser_never_fails_other_than_with_an_exposition_error(text):
    try:
        exposition.parse(text)
    except exposition.ExpositionError as exc:
        assert str(exc).startswith("line ")


@pytest.mark.parametrize("text, fragment", [
    ("foo 1 2 3", "expected a value and an optional timestamp"),
    ('foo{a="1" 3', "expected , or }"),
    ("foo abc", "not a number"),
    ("foo 1 1.5", "not an integer of milliseconds"),
    ('foo{a="1",a="2"} 3', "label 'a' given twice"),
    ('foo{a="x\\q"} 3', "bad escape"),
    ("foo 1\nfoo 2", "given twice"),
    ("foo 1\n# TYPE foo countr", "unknown metric type"),
    ("{} 3", "expected a metric name"),
])
def test_malformed_lines_are_refused_naming_the_line(text, fragment):
    with pytest.raises(exposition.ExpositionError, match=fragment) as info:
        exposition.parse(text)
    assert info.value.line == text.count("\n") + 1


def test_special_values_and_comments_parse():
    got = exposition.parse('# HELP x the x\n# free comment\nx NaN\ny{a="q\\"\\n"} +Inf 17\nz -Inf\n')
    assert [s.name for s in got] == ["x", "y", "z"] and got[1].labels == {"a": 'q"\n'} and got[1].timestamp_ms == 17


# -- selection ------------------------------------------------------------------------------------

def test_the_selection_speaks_promql():
    sel = Selector.parse('{Hostname=~"gpu-node-[12]", gpu!="3",UUID!~"MIG-.*",modelName="H100"}', "dcgm")
    assert sel.matches({"Hostname": "gpu-node-2", "gpu": "0", "UUID": "GPU-1", "modelName": "H100"})
    assert not sel.matches({"Hostname": "gpu-node-12", "gpu": "0", "UUID": "GPU-1", "modelName": "H100"})  # anchored
    assert not sel.matches({"Hostname": "gpu-node-1", "gpu": "3", "UUID": "GPU-1", "modelName": "H100"})
    assert Selector.parse("", "dcgm").matches({"anything": "1"})
    assert Selector.parse(str(sel), "dcgm") == sel


@pytest.mark.parametrize("text, fragment", [
    ('Hostname="a"', "in braces"),
    ('{Hostname=a}', "cannot read a matcher"),
    ('{gpu=~"[0-"}', "not a valid regular expression"),
])
def test_a_bad_selection_is_one_config_error(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Selector.parse(text, "dcgm")


# -- measuring ------------------------------------------------------------------------------------

def test_windows_match_the_profile_within_the_bound_per_gpu_and_host(cluster):
    profile, exporters = cluster
    meter = build(exporters)
    assert meter.interval_s == pytest.approx(INTERVAL, rel=0.5)
    assert meter.min_window_s == pytest.approx(10 * meter.interval_s)
    for seconds in (0.3, 0.6):
        reading, truth = work(meter, profile, seconds)
        assert reading.valid, reading.problems
        assert abs(reading.total_joules - truth) <= reading.info["tick_bound_j"]
        assert set(reading.joules) == {"gpu-node-1/gpu0", "gpu-node-1/gpu1", "gpu-node-2/gpu0", "gpu-node-2/gpu1"}
        assert sum(reading.info["hosts"].values()) == pytest.approx(reading.total_joules)
        gpu = reading.info["gpus"]["gpu-node-2/gpu1"]
        assert gpu["uuid"] == "GPU-gpu-node-2-0001-fake" and gpu["model"] == "NVIDIA H100 80GB HBM3"


class SleepingEngine:
    """Keeps the fake fleet busy for `seconds` per run, in real time (the openai engine's role)."""

    kind, simulated, default_meter, max_positions = "remote", False, "dcgm", None

    def __init__(self, profile, seconds):
        self.profile, self.seconds = profile, seconds

    def identity(self):
        return {"kind": "remote", "model": "llama-70b"}

    def run(self, w):
        self.profile.set_busy(True)
        time.sleep(self.seconds)
        self.profile.set_busy(False)
        return EngineRun(input_tokens=[w.n_in] * w.requests, output_tokens=[w.n_out] * w.requests, seconds=self.seconds)

    def sync(self): ...
    def devices(self): return []
    def close(self): ...


def test_results_keep_energy_per_host_and_gpu_and_the_fingerprint_holds_the_gpu_set(cluster):
    profile, exporters = cluster
    engine = SleepingEngine(profile, 0.15)
    meter = registry.make_meter(MeterSpec("dcgm", {"exporters": ",".join(e.url for e in exporters),
                                                   "min_window_s": 0.3}), engine)
    m = measure(engine, meter, Workload(n_in=8, n_out=4), rounds=2, warmup=0)
    assert m.valid, m.problems
    record = measurement_to_dict(m)
    info = record["rounds"][0]["info"]
    assert set(info["hosts"]) == {"gpu-node-1", "gpu-node-2"} and len(info["gpus"]) == 4
    all_four = fingerprint(engine.identity(), meter.device_info(), False)
    assert all_four["device"]["gpu_count"] == 4 and all_four["device"]["host_count"] == 2
    half = registry.make_meter(MeterSpec("dcgm", {"exporters": ",".join(e.url for e in exporters),
                                                  "match": '{Hostname="gpu-node-1"}'}), engine)
    two = fingerprint(engine.identity(), half.device_info(), False)
    changed = {d.split(":")[0] for d in differences(all_four, two)}
    assert changed == {"device.gpu_count", "device.gpu_set", "device.host_count"}


# -- failure paths --------------------------------------------------------------------------------

def test_an_exporter_that_is_down_is_named_with_the_fix(cluster):
    _, exporters = cluster
    url = exporters[1].url
    exporters[1].stop()
    with pytest.raises(MeterUnavailable, match=f"dcgm-exporter at {url} is unreachable .*is dcgm-exporter running there"):
        build(exporters)


def test_a_selection_that_matches_no_gpu_lists_what_there_is(cluster):
    _, exporters = cluster
    with pytest.raises(ConfigError, match=r'match \{Hostname="gpu-node-9"\} selects no GPU; the exporters serve 4 GPU'):
        build(exporters, match='{Hostname="gpu-node-9"}')


def test_a_malformed_exposition_names_the_exporter_and_line(cluster):
    _, exporters = cluster
    exporters[0].host.malformed = True
    with pytest.raises(MeterUnavailable, match=f"{exporters[0].url} served a malformed exposition \\(line 1: "):
        build(exporters)


@pytest.mark.parametrize("options, fragment", [
    ({}, "needs the exporters to read"),
    ({"exporters": "node1:9400"}, "is not an http:// or https:// URL"),
    ({"exporters": "http://a/metrics", "lag": 1}, "unknown dcgm meter option"),
    ({"exporters": "http://a/metrics", "interval_s": 0}, "must be a finite positive number"),
])
def test_bad_options_are_one_config_error(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        dcgm.build(MeterSpec("dcgm", options))


def _failing_window(meter, profile, during):
    meter.begin()
    profile.set_busy(True)
    time.sleep(0.1)
    during()
    profile.set_busy(False)
    return meter.end()


def test_a_counter_reset_mid_window_discards_the_round(cluster):
    profile, exporters = cluster
    meter = build(exporters)
    reading = _failing_window(meter, profile, lambda: setattr(exporters[0].host, "reset", True))
    assert not reading.valid
    assert any("energy counter of gpu-node-1/gpu0" in p and "went backwards" in p for p in reading.problems)


def test_a_stale_exporter_discards_the_round_naming_it(cluster):
    profile, exporters = cluster
    meter = build(exporters, tick_timeout_s=0.5)
    reading = _failing_window(meter, profile, lambda: setattr(exporters[1].host, "frozen_at", time.time()))
    assert not reading.valid
    assert reading.problems == [
        f"dcgm meter: {exporters[1].url} published no new value for 0.5 s after the window (its collection interval "
        f"is {meter.interval_s:g} s): stale series; the exporter or DCGM on that host is stuck, restart it (or raise "
        "option tick_timeout_s); round discarded"]


def test_gpus_that_vanish_or_appear_mid_window_discard_the_round(cluster):
    profile, exporters = cluster
    meter = build(exporters)
    reading = _failing_window(meter, profile, lambda: exporters[0].host.hidden.add(1))
    assert not reading.valid and any("GPU gpu-node-1/gpu1" in p and "vanished" in p for p in reading.problems)
    exporters[0].host.hidden.clear()
    reading = _failing_window(meter, profile, lambda: setattr(exporters[1].host, "extra", True))
    assert not reading.valid and any("GPU GPU-new appeared" in p for p in reading.problems)


def test_a_window_shorter_than_the_refresh_interval_is_refused(cluster):
    profile, exporters = cluster
    meter = build(exporters, interval_s=5, lag_s=0, tick_timeout_s=2)
    reading, _ = work(meter, profile, 0.05)
    assert not reading.valid
    assert "window is shorter than 2 refresh interval(s) (10 s at 5 s each), too short to measure" in reading.problems[0]
