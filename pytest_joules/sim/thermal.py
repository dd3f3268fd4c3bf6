"""The simulated GPU's temperature and clock, for the state every window records (SIMULATED).

A first-order model: the board heats toward a temperature set by its power and cools toward the
ambient one with one time constant. It gives the plugin's device-state checks (measure/state.py)
something to read on the simulator; it does not change the energy, which the simulator does not
tie to temperature. Its numbers are assumptions, not measurements: about 75 °C at sustained board
power is what air-cooled SXM servers commonly show; the minute-long time constant is the order of
a heatsink's; a session starts warm, at 60% of board power's temperature. The clock is the datasheet's maximum boost clock: the
simulated GPU neither throttles nor drops its clock.
"""

from __future__ import annotations

import math

AMBIENT_C = 30.0
#: the rise above ambient at full board power
RISE_AT_BOARD_POWER_C = 45.0
TIME_CONSTANT_S = 60.0
#: maximum boost clocks, NVIDIA datasheets (H100 SXM5 and PCIe, H200 SXM, A100 SXM4)
BOOST_CLOCK_MHZ = {"H100-SXM": 1980, "H100-PCIe": 1755, "H200": 1980, "A100-SXM-80GB": 1410}


#: the session starts on a GPU that has been serving (warm), not on a cold one: the simulator does
#: not tie energy to temperature, so a cold start would only raise the plugin's temperature flags
START_LOAD = 0.6


class Thermal:
    def __init__(self, board_watts: float, idle_watts: float) -> None:
        self.board_watts = board_watts
        self.temperature_c = self._target(max(idle_watts, START_LOAD * board_watts))

    def _target(self, watts: float) -> float:
        return AMBIENT_C + RISE_AT_BOARD_POWER_C * watts / self.board_watts

    def advance(self, seconds: float, joules: float) -> None:
        """`seconds` at an average of joules/seconds watts."""
        if seconds <= 0:
            return
        target = self._target(joules / seconds)
        self.temperature_c += (target - self.temperature_c) * -math.expm1(-seconds / TIME_CONSTANT_S)
