"""The time budget of `joules check`: steps ask how much is left and stop with what they have."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Budget:
    total_s: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return max(0.0, self.total_s - self.elapsed())

    def allows(self, seconds: float) -> bool:
        """Whether `seconds` more of work fit in what is left."""
        return self.left() >= seconds

    def share(self, fraction: float) -> float:
        """`fraction` of the whole budget, but no more than is left: a step's cap."""
        return min(self.left(), fraction * self.total_s)
