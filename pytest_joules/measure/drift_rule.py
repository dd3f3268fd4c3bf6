"""`--joules-rounds auto` against a baseline with the drift between sessions (judge/drift.py).

Like stopping.Compare, it looks at the rounds at the fixed schedule of round counts, each look at
alpha / len(LOOKS), and stops once the verdict is known: a regression, an improvement, or a pass the
rounds vouch for. It also stops when the rounds alone resolve the tolerance while drift still
hides the answer: more rounds cannot narrow the drift between sessions, and the session's other
tests will (the session's end judges the test again against their median).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..judge import drift as D
from ..judge import verdict as V
from .stopping import Rule


@dataclass
class CompareInSession(Rule):
    """Until the comparison is known, or only the session's drift stands in its way."""

    sessions: Sequence[Sequence[float]] = ()
    spread: D.Spread = field(default_factory=D.prior)
    #: the session's common shift from the tests judged before this one (None: too few yet)
    shift: D.Shift | None = None

    def resolved(self, values: Sequence[float]) -> bool:
        verdict, change = D.judge_rounds(values, self.sessions, self.tolerance, self.spread, self.shift,
                                         confidence=self.confidence)
        if verdict.status != V.NOISY:
            return True
        # with the session's shift known, NOISY is the rounds' doing: measure on
        return self.shift is None and change is not None and D.rounds_resolve(change, self.tolerance, self.confidence)
