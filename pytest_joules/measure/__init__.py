"""Measuring a workload: its result types (`measurement`), when to stop (`stopping`), and the one
measurement path every caller shares (`path`). `measure` is re-exported here because
`from pytest_joules.measure import measure` was its public path before the layers were split."""

from .path import measure, run_round

__all__ = ["measure", "run_round"]
