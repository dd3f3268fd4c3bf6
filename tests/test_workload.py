import pytest

from pytest_joules.errors import ConfigError, WorkloadMismatch
from pytest_joules.engines.workload import EngineRun, Workload


def test_workload_counts_tokens():
    w = Workload(n_in=512, n_out=256, requests=4, max_batch_size=2)
    assert w.output_tokens == 1024
    assert w.input_tokens == 2048
    assert w.label() == "n_in=512-n_out=256"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_in": 0, "n_out": 1}, "n_in"),
        ({"n_in": 1, "n_out": -3}, "n_out"),
        ({"n_in": 1.5, "n_out": 1}, "n_in"),
        ({"n_in": True, "n_out": 1}, "n_in"),
        ({"n_in": 1, "n_out": 1, "requests": 0}, "requests"),
        ({"n_in": 1, "n_out": 1, "max_batch_size": 0}, "max_batch_size"),
        ({"n_in": 1, "n_out": 1, "seed": -1}, "seed"),
    ],
)
def test_workload_rejects_bad_values_naming_them(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        Workload(**kwargs)


def test_positions_limit_names_the_point_and_engine():
    Workload(1024, 1024).check_positions(2048, "sim")
    with pytest.raises(ConfigError, match=r"1024 \+ 1025 = 2049 exceeds sim's maximum of 2048"):
        Workload(1024, 1025).check_positions(2048, "sim")
    Workload(10**6, 10**6).check_positions(None, "x")  # unknown limit: no check


def test_engine_run_verify_accepts_exact_work():
    w = Workload(8, 4, requests=2)
    EngineRun([8, 8], [4, 4], 1.0).verify(w, "e")


@pytest.mark.parametrize(
    "run, fragment",
    [
        (EngineRun([8], [4], 1.0), "ran 1 requests, asked for 2"),
        (EngineRun([8, 7], [4, 4], 1.0), r"prompt lengths \[7\], asked for 8"),
        (EngineRun([8, 8], [4, 3], 1.0), r"generated \[3\] tokens, asked for exactly 4"),
    ],
)
def test_engine_run_verify_names_the_mismatch(run, fragment):
    with pytest.raises(WorkloadMismatch, match=fragment):
        run.verify(Workload(8, 4, requests=2), "e")
