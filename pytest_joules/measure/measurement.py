"""Results of measuring a workload: `Round` (one window) and `Measurement` (all rounds)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..judge.verdict import Verdict, judge, parse_tolerance
from ..engines.workload import Workload

#: a reading whose GPU ran kernels less than this share of the window waited for the host
HOST_BOUND_UTIL = 0.5
#: how a dry run (a meter that reads no energy) is named in skips, the header and the summary
DRY_RUN = "dry run: no energy read"
HOST_BOUND_FIX = (
    "the GPU mostly waited for the host, so these joules measure the host's speed: use an engine "
    "with CUDA graphs (trtllm, or hf with runtime=graphs) or more concurrent requests"
)


@dataclass
class Round:
    """One measurement window, in which the workload ran `reps` times back to back."""

    joules: float | None
    seconds: float
    reps: int
    output_tokens: int
    input_tokens: int
    valid: bool = True
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    #: TTFT, TPOT (median, p90) and output tokens/s of the round (latency.py); None when its runs
    #: were spoiled (a compilation inside them)
    latency: dict[str, float | None] | None = None

    @property
    def j_per_out_token(self) -> float | None:
        if self.joules is None or not self.valid or self.output_tokens <= 0:
            return None
        return self.joules / self.output_tokens


@dataclass
class Measurement:
    """All rounds of one workload on one engine and device, plus what it was compared with.

    Figures are medians over valid rounds, per execution of the workload (a round that repeated
    the workload `reps` times counts its energy divided by `reps`).
    """

    workload: Workload
    rounds: list[Round]
    engine: dict[str, str]
    device: dict[str, Any]
    meter: str
    simulated: bool
    name: str = ""
    #: the confidence the verdict must be judged at: below 95% after several looks of
    #: `--joules-rounds auto` (measure/stopping.py spends the error rate over its looks)
    confidence: float = 0.95
    #: why `auto` stopped measuring ("resolved", "budget", ...); "" for a fixed number of rounds
    stopped: str = ""
    # Filled in by whoever compares (plugin, `joules compare`):
    baseline_rounds: list[float] | None = None
    prediction: float | None = None
    model_name: str | None = None
    verdict: Verdict | None = None

    # -- figures ---------------------------------------------------------------------------
    @property
    def valid_rounds(self) -> list[Round]:
        return [r for r in self.rounds if r.j_per_out_token is not None]

    @property
    def dry_run(self) -> bool:
        return all(r.joules is None for r in self.rounds)

    @property
    def valid(self) -> bool:
        return bool(self.valid_rounds)

    @property
    def problems(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rounds:
            for p in r.problems:
                seen.setdefault(p, None)
        return list(seen)

    @property
    def round_values(self) -> list[float]:
        """J per output token of each valid round."""
        return [r.j_per_out_token for r in self.valid_rounds]  # type: ignore[misc]

    @property
    def j_per_out_token(self) -> float | None:
        values = self.round_values
        return statistics.median(values) if values else None

    @property
    def tokens_per_joule(self) -> float | None:
        j = self.j_per_out_token
        return 1.0 / j if j else None

    @property
    def joules(self) -> float | None:
        """Energy of one execution of the workload (all requests)."""
        values = [r.joules / r.reps for r in self.valid_rounds]  # type: ignore[operator]
        return statistics.median(values) if values else None

    @property
    def seconds(self) -> float | None:
        values = [r.seconds / r.reps for r in self.rounds if r.reps]
        return statistics.median(values) if values else None

    @property
    def avg_watts(self) -> float | None:
        rounds = self.valid_rounds
        secs = sum(r.seconds for r in rounds)
        return sum(r.joules for r in rounds) / secs if rounds and secs > 0 else None  # type: ignore[misc]

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the per-round J/output-token; 0 for a single round."""
        values = self.round_values
        if not values:
            return None
        mid = statistics.median(values)
        return (max(values) - min(values)) / mid if mid else None

    @property
    def gpu_util(self) -> float | None:
        """Median share of each valid window in which the GPU ran kernels (NVML utilisation), or
        None when the meter does not record it."""
        values = [r.info.get("gpu_util") for r in self.valid_rounds]
        known = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return statistics.median(known) if known else None

    @property
    def latency_percentiles(self) -> dict[str, float]:
        """Median over valid rounds of each latency percentile of a schedule over time ({} if none)."""
        rounds = [r.info["latency_percentiles"] for r in self.valid_rounds
                  if isinstance(r.info.get("latency_percentiles"), dict)]
        keys = dict.fromkeys(k for r in rounds for k in r)
        return {k: statistics.median(r[k] for r in rounds if k in r) for k in keys}

    @property
    def j_per_request(self) -> float | None:
        """Energy of one request, on average over the workload's requests."""
        j = self.joules
        return j / self.workload.requests if j is not None else None

    @property
    def host_bound(self) -> bool:
        """The GPU was mostly idle in its windows: the host set the pace (see HOST_BOUND_FIX)."""
        util = self.gpu_util
        return util is not None and util < HOST_BOUND_UTIL

    @property
    def latency(self) -> dict[str, float | None] | None:
        """Median TTFT, TPOT, TPOT p90 and output tokens/s over the rounds (latency.py)."""
        from .latency import measurement_latency

        return measurement_latency(self.rounds)

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.baseline_rounds) if self.baseline_rounds else None

    @property
    def model_error(self) -> float | None:
        """Absolute percentage error of the model's prediction, as a fraction."""
        now = self.j_per_out_token
        if self.prediction is None or now is None or self.prediction <= 0:
            return None
        return abs(now - self.prediction) / self.prediction

    # -- explicit assertions -----------------------------------------------------------------
    def assert_no_regression(self, tolerance: float | str = 0.05) -> Verdict:
        """Fail when J/output-token is more than `tolerance` above the baseline.

        With no baseline recorded the verdict is "new" and nothing fails; an invalid
        measurement always fails, since nothing can be concluded from it.
        """
        self._assert_valid()
        # "5%" as the marker takes; at the confidence the rounds were measured for, as the plugin
        # and `joules compare` judge them (99.5% after the looks of `auto`, else 95%)
        verdict = judge(self.round_values, self.baseline_rounds, parse_tolerance(tolerance), confidence=self.confidence)
        if verdict.failed:
            name = self.name.split("::", 1)[-1] if self.name else self.workload.label()  # pytest shows the file
            raise AssertionError(verdict.failure(name))
        return verdict

    def assert_matches_model(self, tolerance: float | str = 0.10) -> float:
        """Fail unless J/output-token is within `tolerance` (relative) of the model's prediction."""
        self._assert_valid()
        tolerance = parse_tolerance(tolerance)  # 0.10 or "10%", as the marker takes
        if self.prediction is None:
            raise AssertionError(
                f"{self.name or self.workload.label()}: no fitted model to compare with; "
                "fit one with `joules fit` and keep it beside the baselines"
            )
        err = self.model_error
        assert err is not None
        if err > tolerance:
            from ..judge.verdict import FIRST_LINE, percent_text
            from ..numbers import sig

            name = self.name or self.workload.label()
            figures = (f"J/output-token {sig(self.j_per_out_token)} is {err:.1%} from the "
                       f"{self.model_name or 'model'} prediction {sig(self.prediction)} (tolerance {percent_text(tolerance)})")
            # the first line fits FIRST_LINE characters: a long name goes to the second
            text = f"{name}: {figures}" if len(name) + 2 + len(figures) <= FIRST_LINE else f"{figures}\n  test: {name}"
            raise AssertionError(text)
        return err

    def _assert_valid(self) -> None:
        if self.dry_run:
            raise AssertionError("dry run (meter 'none'): there is no energy to compare")
        if not self.valid:
            raise AssertionError(
                f"{self.name or self.workload.label()}: no valid measurement: " + "; ".join(self.problems)
            )
