"""Carbon and cost of the measured energy, from values the user states (no network look-ups).

Like CodeCarbon's offline mode: the user gives the grid's carbon intensity (gCO2e per kWh) and
an electricity price (per kWh, in whatever currency they count in); joules per output token
become gCO2e and cost per 1,000 output tokens. The inputs travel with the figures (results JSON,
summary, exports), since a carbon figure without its intensity cannot be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: joules in one kilowatt-hour
J_PER_KWH = 3.6e6
#: the figures are per this many output tokens
TOKENS = 1000


@dataclass(frozen=True)
class Footprint:
    """The stated inputs; either may be None (not given)."""

    grid_intensity: float | None = None  # gCO2e per kWh
    price: float | None = None  # currency per kWh

    def __bool__(self) -> bool:
        return self.grid_intensity is not None or self.price is not None

    def kwh_per_1k(self, j_per_out_token: float | None) -> float | None:
        if j_per_out_token is None or not math.isfinite(j_per_out_token):
            return None
        return j_per_out_token * TOKENS / J_PER_KWH

    def gco2e_per_1k(self, j_per_out_token: float | None) -> float | None:
        kwh = self.kwh_per_1k(j_per_out_token)
        return None if kwh is None or self.grid_intensity is None else kwh * self.grid_intensity

    def cost_per_1k(self, j_per_out_token: float | None) -> float | None:
        kwh = self.kwh_per_1k(j_per_out_token)
        return None if kwh is None or self.price is None else kwh * self.price

    def result_fields(self, j_per_out_token: float | None) -> dict[str, float | None]:
        """The per-result keys of a results JSON."""
        return {"gco2e_per_1k_tokens": self.gco2e_per_1k(j_per_out_token),
                "cost_per_1k_tokens": self.cost_per_1k(j_per_out_token)}

    def to_dict(self) -> dict[str, Any]:
        """The document-level "footprint" object: the inputs and how the figures follow from them."""
        return {
            "grid_intensity_gco2e_per_kwh": self.grid_intensity,
            "price_per_kwh": self.price,
            "per_output_tokens": TOKENS,
            "formula": "J/out-token x 1000 / 3.6e6 J/kWh x intensity (or price)",
            "source": "stated by the user (offline values, no look-up)",
        }

    def describe(self) -> str:
        """The inputs in words: 'grid 400 gCO2e/kWh, price 0.15/kWh'."""
        parts = []
        if self.grid_intensity is not None:
            parts.append(f"grid {self.grid_intensity:g} gCO2e/kWh")
        if self.price is not None:
            parts.append(f"price {self.price:g}/kWh")
        return ", ".join(parts)


def from_dict(data: Any) -> Footprint:
    """The inputs stored in a results JSON ("footprint"); an empty Footprint when absent or unusable."""
    if not isinstance(data, Mapping):
        return Footprint()

    def number(key: str) -> float | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) and value >= 0 else None

    return Footprint(number("grid_intensity_gco2e_per_kwh"), number("price_per_kwh"))


def parse_amount(what: str, value: Any) -> float:
    """A non-negative finite number, else ValueError with a one-line message naming `what`."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"{what}: invalid value {value!r}: give a non-negative number, like 400")
    return number
