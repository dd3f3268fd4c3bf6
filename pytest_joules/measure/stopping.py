"""How many rounds to measure: a fixed number, or `auto`: until the answer is known.

`auto` measures at least MIN_ROUNDS rounds, then looks at the data at growing round counts
(LOOKS) and stops as soon as the question of the run is answered, or when the per-test budget of
measured seconds runs out:

- comparing with a baseline (`Compare`): stop when the verdict is REGRESSION, IMPROVED or PASS
  (see verdict.py: PASS needs the rounds to resolve a change of the tolerance's size); at the
  budget the verdict of the last look stands, NOISY when the rounds never resolved it.
- recording a baseline, or a test with none (`Precise`): stop when the median is known to
  BASELINE_FRACTION of the tolerance (the 95% t-interval of the mean log J/token), so that a later
  comparison is limited by its own rounds, not the baseline's.

The stopping rule and the false-failure rate. Looking at a t-test after every round and stopping
at the first "significant" result inflates its error rate: with 10 looks at 5% each, the chance
that some look is wrong is far above 5% (tests/test_rounds.py measures it). So the looks share the
error budget: they happen at a fixed schedule of round counts (LOOKS: 3, 4, 6, 9, 14, 21, 32, 48,
72, 100: about x1.5 each, up to MAX_ROUNDS) and each judges at alpha / len(LOOKS) (Bonferroni). A stop
forced by the budget is one of those looks, made early. The chance that any look calls a
regression that is not there is then at most alpha / 2 (the one-sided half), whenever the rule
stops, and the verdict reports the confidence it was judged at (99.5% with 10 looks).
Why this and not a fancier spending function: with 10 looks, spending alpha evenly costs a t
quantile of about 2.8 instead of 2.0 per look, while functions that spend most of alpha early
(or a look after every round) leave the later looks, where noisy engines need them, with almost
nothing. Why not a fixed sample size from a power calculation: the noise is unknown before the
test runs and differs 40-fold between an optimised engine and eager transformers
(data/h200-hf-llama).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

from ..engines.workload import rounds_problem
from ..judge import stats
from ..judge import verdict as V

AUTO = "auto"
MIN_ROUNDS = 3
#: the per-test budget of measured seconds for `auto` (--joules-max-seconds)
DEFAULT_MAX_SECONDS = 60.0
#: hard cap on rounds, whatever the budget (a sim with tiny rounds must not loop for ever)
MAX_ROUNDS = 100
#: a recorded baseline's median is measured to this fraction of the tolerance
BASELINE_FRACTION = 0.5
ALPHA = 1 - stats.DEFAULT_CONFIDENCE


def looks(limit: int = MAX_ROUNDS) -> list[int]:
    """Round counts at which `auto` looks: 3, 4, 6, 9, 14, 21, ... (about x1.5), and `limit`."""
    out, n = [], MIN_ROUNDS
    while n < limit:
        out.append(n)
        n = max(n + 1, round(n * 1.5))
    return out + [limit]


LOOKS = looks()


def alpha_at(look: int, alpha: float = ALPHA, count: int = len(LOOKS)) -> float:
    """The error each look may spend: alpha shared evenly by the `count` looks (Bonferroni)."""
    if not 0 <= look < count:
        raise ValueError(f"look {look} is outside the schedule of {count} looks")
    return alpha / count


@dataclass
class Rule:
    """The state of one `auto` measurement: call `stop` after each round."""

    tolerance: float
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_rounds: int = MAX_ROUNDS
    #: how many looks were made, and the confidence of the last one
    looks_made: int = 0
    confidence: float = stats.DEFAULT_CONFIDENCE
    #: why the rule stopped: "resolved", "budget", "max rounds", "no valid rounds"
    reason: str = ""
    _schedule: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_rounds != MAX_ROUNDS:
            self._schedule = looks(self.max_rounds)
        else:
            self._schedule = LOOKS

    def stop(self, values: Sequence[float], rounds: int, spent_s: float) -> bool:
        """After `rounds` rounds taking `spent_s` measured seconds, `values` being the valid ones'
        J/token: True when no further round should be measured."""
        if rounds < MIN_ROUNDS:
            return False
        out_of_budget = spent_s + spent_s / rounds > self.max_seconds  # the next round would overrun
        capped = rounds >= self.max_rounds
        if rounds in self._schedule or out_of_budget or capped:
            if len(values) < 2 and rounds >= MIN_ROUNDS:
                self.reason = "no valid rounds" if not values else "one valid round"
                return True
            self.confidence = 1 - alpha_at(self.looks_made, count=len(self._schedule))
            self.looks_made += 1
            if self.resolved(values):
                self.reason = "resolved"
                return True
        if out_of_budget or capped:
            self.reason = "budget" if out_of_budget else "max rounds"
            return True
        return False

    def resolved(self, values: Sequence[float]) -> bool:
        raise NotImplementedError


@dataclass
class Compare(Rule):
    """Until the comparison with the baseline is resolved at the tolerance."""

    baseline: Sequence[float] = ()

    def resolved(self, values: Sequence[float]) -> bool:
        verdict = V.judge(values, self.baseline, self.tolerance, confidence=self.confidence)
        return verdict.status != V.NOISY


@dataclass
class Precise(Rule):
    """Until the median is known to BASELINE_FRACTION of the tolerance (a baseline, a new test)."""

    def resolved(self, values: Sequence[float]) -> bool:
        return half_width(values) <= BASELINE_FRACTION * self.tolerance


def half_width(values: Sequence[float], confidence: float = stats.DEFAULT_CONFIDENCE) -> float:
    """Relative half-width of the t-interval of the mean log J/token (inf for fewer than 2)."""
    if len(values) < 2:
        return math.inf
    logs = [math.log(v) for v in values]
    sd = statistics.stdev(logs)
    if sd == 0:
        return 0.0
    from scipy import stats as _st  # lazy, like stats.py

    t = float(_st.t.ppf(1 - (1 - confidence) / 2, len(values) - 1))
    return math.expm1(t * sd / math.sqrt(len(values)))


def parse_rounds(value: object) -> int | str:
    """`auto` or a positive integer; ValueError otherwise."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    number = int(text)  # ValueError for anything else
    if number < 1 or isinstance(value, bool) or rounds_problem(number):
        raise ValueError(value)
    return number
