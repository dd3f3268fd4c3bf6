"""The module paths of pytest-joules before its layers became subpackages (0.1 -> 0.2), kept working.

`import pytest_joules.workload` (or `from pytest_joules import analytical`) still gives the module
that now lives at `pytest_joules.engines.workload` (`pytest_joules.models.analytical`): the very same
module object, imported on first use, so patches and isinstance checks see one module. New code
should import the new paths; ARCHITECTURE.md says where each layer lives.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

#: old path (under pytest_joules.) -> the path it lives at now
MOVED = {
    "analytical": "models.analytical",
    "baselines": "store.baselines",
    "calibrate": "models.design",
    "calibrate_sources": "models.sources",
    "check": "validation",
    "check.budget": "validation.budget",
    "check.counter": "validation.counter",
    "check.gate": "validation.gate",
    "check.report": "validation.markdown",
    "check.steps": "validation.steps",
    "exporters": "report.exporters",
    "fingerprint": "store.fingerprint",
    "fixtures": "plugin.fixtures",
    "footprint": "report.footprint",
    "history": "store.runs",
    "machine": "store.machine",
    "marker": "plugin.marker",
    "measurement": "measure.measurement",
    "options": "plugin.options",
    "points": "models.points",
    "results": "store.results",
    "rounds": "measure.stopping",
    "runs": "store.runs",
    "session": "plugin.session",
    "report.trend": "report.plot",
    "sim.calibration": "validation.sim_vs_real",
    "stats": "judge.stats",
    "tolerance": "judge.tolerance",
    "uncertainty": "models.uncertainty",
    "verdict": "judge.verdict",
    "workers": "plugin.xdist",
    "workload": "engines.workload",
}


class _AliasLoader:  # the Loader protocol (importlib.abc is not imported: it costs ~10 ms)
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: ModuleType) -> None:
        # the import system returns whatever sys.modules holds under the name once this returns
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _AliasFinder:  # the MetaPathFinder protocol
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        prefix, _, rest = fullname.partition(".")
        if prefix != "pytest_joules" or rest not in MOVED:
            return None
        return ModuleSpec(fullname, _AliasLoader(f"pytest_joules.{MOVED[rest]}"))  # type: ignore[arg-type]  # a Loader by protocol


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        # first: a submodule of a moved package (check.budget) would otherwise be found again through
        # the package's new __path__ and loaded twice, as a second module object
        sys.meta_path.insert(0, _AliasFinder())
