"""How many rounds a 5% gate needs at a measured noise, and what that costs per test.

The estimate mirrors what `--joules-rounds auto` does (measure/stopping.py, verdict.py): a comparison of n
rounds against a baseline of n rounds, both with the noise seen (the larger side's variance),
judged by a Welch t-interval on log J/token at the confidence of its look (the 10 looks share
5%). The gate resolves a change of size T at the first look where the interval's half-width is
at most T. Rounds taken minutes apart scatter more than rounds taken back to back on a host that
sits in one speed state (data/h200-hf-llama): the unchanged rerun of `joules check` is the direct
evidence; this is the estimate from one session's rounds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass
class GateEstimate:
    sd_log: float  # standard deviation of log J/token over the rounds (about the CV)
    rounds: int | None  # rounds per side at which a change of `tolerance` is resolved; None: not within MAX_ROUNDS
    resolution_at_3: float  # what 3 vs 3 rounds resolve
    seconds_per_round: float
    tolerance: float

    @property
    def seconds(self) -> float | None:
        """Measured seconds per test for the gate (rounds x seconds a round), None when never resolved."""
        return None if self.rounds is None else self.rounds * self.seconds_per_round


def sd_log(values: Sequence[float]) -> float | None:
    """Standard deviation of the logs of positive values (None for fewer than two)."""
    logs = [math.log(v) for v in values if v and v > 0]
    return statistics.stdev(logs) if len(logs) >= 2 else None


def resolution(sd: float, n: int, confidence: float) -> float:
    """Half-width, as a relative change, of the interval of n vs n rounds with log sd `sd`."""
    from scipy import stats as _st

    half = float(_st.t.ppf(1 - (1 - confidence) / 2, 2 * n - 2)) * sd * math.sqrt(2 / n)
    return math.expm1(half)


def estimate(sd: float, seconds_per_round: float, tolerance: float = 0.05) -> GateEstimate:
    from ..measure import stopping as R

    needed = None
    for look, n in enumerate(R.LOOKS):
        if resolution(sd, n, 1 - R.alpha_at(look)) <= tolerance:
            needed = n
            break
    return GateEstimate(sd_log=sd, rounds=needed, resolution_at_3=resolution(sd, R.MIN_ROUNDS, 1 - R.alpha_at(0)),
                        seconds_per_round=seconds_per_round, tolerance=tolerance)
