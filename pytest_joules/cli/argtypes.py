"""argparse `type=` converters for numbers with a range, so every subcommand rejects bad numbers
the same way: at parse time, exit 2, one line naming the argument and the value."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def number(convert: Callable[[str], float], allow_zero: bool, what: str) -> Callable[[str], float]:
    """A converter that accepts finite values > 0 (or >= 0 with `allow_zero`)."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number(int, False, "a positive integer")
non_negative_int = number(int, True, "a non-negative integer")
positive_float = number(float, False, "a positive number")
seconds = number(float, True, "a non-negative number of seconds")
tokens = number(int, False, "a positive whole number of tokens")
