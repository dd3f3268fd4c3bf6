"""The 0.1 module paths keep working after the layers became subpackages (pytest_joules/_aliases.py)."""

from __future__ import annotations

import importlib

import pytest

from pytest_joules._aliases import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_imports_the_same_module_as_its_new_one(old):
    assert importlib.import_module(f"pytest_joules.{old}") is importlib.import_module(f"pytest_joules.{MOVED[old]}")


def test_the_imports_the_docs_showed_in_01_still_work():
    from pytest_joules import analytical, calibrate, calibrate_sources, registry, rounds, uncertainty, verdict
    from pytest_joules.engines.base import EngineSpec
    from pytest_joules.measure import measure
    from pytest_joules.meters.base import MeterSpec
    from pytest_joules.workload import Workload

    assert analytical.fit and calibrate.Plan and calibrate_sources and registry.make_engine and rounds.Rule
    assert uncertainty and verdict.judge and EngineSpec and MeterSpec and callable(measure)
    assert Workload(n_in=8, n_out=4).n_in == 8


def test_an_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("pytest_joules.no_such_module")
