"""Verdicts: how a measurement compares with its baseline.

`judge` takes the per-round J/output-token values of the baseline and of the current run, so
statistics can look at the spread, not only at one number.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

PASS = "pass"
REGRESSION = "regression"
IMPROVED = "improved"
NEW = "new"
NOISY = "noisy"
INVALID = "invalid"
DRY_RUN = "dry-run"

#: verdicts that fail a test
FAILING = frozenset({REGRESSION})


@dataclass(frozen=True)
class Verdict:
    status: str
    current: float | None = None
    baseline: float | None = None
    #: (current - baseline) / baseline
    delta: float | None = None
    tolerance: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def message(self, what: str = "J/output-token") -> str:
        if self.status in (NEW, INVALID, DRY_RUN):
            return self.detail or self.status
        return (
            f"{self.status}: {what} baseline {self.baseline:.6g}, now {self.current:.6g}, "
            f"delta {self.delta:+.2%}, tolerance {self.tolerance:.2%}"
            + (f" ({self.detail})" if self.detail else "")
        )


def judge(current: Sequence[float], baseline: Sequence[float] | None, tolerance: float) -> Verdict:
    """Compare the medians of two sets of rounds against a relative tolerance."""
    if not current:
        return Verdict(INVALID, detail="no valid rounds to judge")
    now = statistics.median(current)
    if not baseline:
        return Verdict(NEW, current=now, tolerance=tolerance, detail="no baseline recorded yet")
    base = statistics.median(baseline)
    delta = (now - base) / base
    if delta > tolerance:
        status = REGRESSION
    elif delta < -tolerance:
        status = IMPROVED
    else:
        status = PASS
    return Verdict(status, current=now, baseline=base, delta=delta, tolerance=tolerance)
