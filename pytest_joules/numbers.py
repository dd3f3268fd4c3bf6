"""One number format for everything a user reads: three significant figures.

J/token, tokens/J, watts, sweet spots, intervals and footprints are all shown this way, by the
plugin and every `joules` command, so the same quantity reads the same wherever it is printed
(the JSON keeps full precision). Percentages of change keep one decimal ("+9.6%")."""

from __future__ import annotations

import math

#: significant figures of every figure shown to a user
DIGITS = 3


def sig(value: float | None, digits: int = DIGITS, none: str = "—") -> str:
    """`value` to `digits` significant figures, without an exponent from 1e-4 to 1e9:
    0.17293 -> "0.173", 1.0 -> "1.00", 453.4 -> "453", 1299 -> "1300", 0.00001234 -> "1.23e-05"."""
    if value is None:
        return none
    x = float(value)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits - 1}e}")  # round first: 0.9996 is 1.00, not 1.000
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude < -4 or magnitude >= 9:
        return f"{rounded:.{digits - 1}e}"
    if magnitude >= digits - 1:
        return f"{rounded:.0f}"
    return f"{rounded:.{digits - 1 - magnitude}f}"


def sig_range(low: float, high: float, digits: int = DIGITS) -> str:
    """An interval as "low–high" in the same format ("∞" for an unbounded end)."""
    top = "∞" if math.isinf(high) else sig(high, digits)
    return f"{sig(low, digits)}–{top}"


def tokens(value: float | None, none: str = "—") -> str:
    """A length in tokens (a sweet spot's n_out*) to three significant figures, as a whole number:
    73.04 -> "73", 1299 -> "1300"."""
    if value is None:
        return none
    text = sig(value)
    return text if "e" in text or "inf" in text or "nan" in text else f"{float(text):.0f}"
