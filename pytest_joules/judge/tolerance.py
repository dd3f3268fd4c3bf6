"""Tolerances as users write them: `0.05` or `"5%"` (both mean 5%).

One parser for every place a user gives one: the --joules-*tolerance options and ini keys, the
marker and `joules()`, the Measurement assertions and the `joules` commands. Each caller puts its
own "where" (the flag, the test and argument) before the fix this module's errors give.
Standard library only: options.py parses at every pytest start.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError

GIVE = "give a fraction such as 0.05 or a percentage such as 5%"


class ToleranceError(ConfigError):
    """A tolerance that cannot be read; the message is the fix, without saying where it was given."""


def parse(value: Any) -> float:
    """0.05, "0.05" and "5%" -> 0.05.

    Refused: booleans, non-numbers, negative or non-finite values, and a bare number of 1 or more
    (5, "5", "1.5"): it almost certainly means percent, and reading it as 500% would silently open
    the gate, so the error asks for "5%".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ToleranceError(f"{GIVE} (not a number)")
    text = value.strip() if isinstance(value, str) else format(value, "g")
    percent = text.endswith("%")
    try:
        number = float(text[:-1].strip() if percent else text)
    except ValueError:
        raise ToleranceError(f"{GIVE} (not a number)") from None
    if not (math.isfinite(number) and number >= 0):
        raise ToleranceError(f"{GIVE}; a tolerance must be non-negative and finite")
    if percent:
        return number / 100 + 0.0  # + 0.0: "-0%" is 0, not a -0.0 that prints as "-0.0%"
    if number >= 1:
        raise ToleranceError(f"write {text}% for {text} percent, or a fraction such as 0.05")
    return number + 0.0
