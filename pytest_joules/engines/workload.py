"""What an engine is asked to run (`Workload`) and what it proves it ran (`EngineRun`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, WorkloadMismatch


#: the most requests one workload may ask for. A workload runs once per round, several rounds and
#: a warm-up per test, and one run of it cannot be cut short: the sweet-spot paper's largest
#: batches are 1,000 requests, and 10,000 requests of 1,000 tokens already take minutes a round
#: on an H100. Larger batches belong in several tests (or a sweep), not in one energy test.
MAX_REQUESTS = 10_000


#: a fixed number of rounds, and of unmeasured warm-up runs, beyond these runs for hours for the
#: same reason: each runs the workload at least once (`--joules-rounds auto` stops by itself)
MAX_FIXED_ROUNDS = 1_000
MAX_WARMUP = 100


def rounds_problem(value: int, what: str = "rounds") -> str | None:
    """Why a fixed number of rounds (or warm-up runs, `what="warmup"`) is too many (None when fine)."""
    limit = MAX_WARMUP if what == "warmup" else MAX_FIXED_ROUNDS
    if value <= limit:
        return None
    return (f"{what}={value} is more than {limit:,}: each runs the whole workload and cannot be cut short"
            + ("; use rounds='auto', which stops when the verdict is known" if what == "rounds" else ""))


def requests_problem(value: int) -> str | None:
    """Why `requests` is too many to run (None when it is fine); `value` is a positive integer."""
    if value <= MAX_REQUESTS:
        return None
    return (f"requests={value} is more than {MAX_REQUESTS:,}: one workload runs once per round and "
            "cannot be cut short, so it would run for hours; split it into smaller workloads")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """`requests` prompts of exactly `n_in` tokens, each generating exactly `n_out` tokens.

    `max_batch_size` caps how many requests the engine runs at once (None: the engine's own
    limit). `seed` fixes the random prompt token ids, so the same workload is the same work.
    """

    n_in: int
    n_out: int
    requests: int = 1
    max_batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_in", "n_out", "requests", "max_batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value) is not int:
                object.__setattr__(self, name, int(value))  # numpy integers: stored (and written) as int
        _check_positive_int("n_in", self.n_in)
        _check_positive_int("n_out", self.n_out)
        _check_positive_int("requests", self.requests)
        if self.max_batch_size is not None:
            _check_positive_int("max_batch_size", self.max_batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def output_tokens(self) -> int:
        return self.requests * self.n_out

    @property
    def input_tokens(self) -> int:
        return self.requests * self.n_in

    def check_positions(self, max_positions: int | None, engine: str) -> None:
        """Raise ConfigError when one request would not fit the engine's context."""
        if max_positions is not None and self.n_in + self.n_out > max_positions:
            raise ConfigError(
                f"n_in + n_out = {self.n_in} + {self.n_out} = {self.n_in + self.n_out} exceeds "
                f"{engine}'s maximum of {max_positions} positions; use shorter lengths"
            )

    def label(self) -> str:
        return f"n_in={self.n_in}-n_out={self.n_out}"


@dataclass
class EngineRun:
    """What an engine actually did for one `Workload`.

    `input_tokens` / `output_tokens` hold one count per request. `seconds` is the time the run
    took (wall clock on real hardware, simulated time on the sim). `phases` holds what the engine
    knows of its phases, e.g. {"prefill_s": ..., "decode_s": ...}; `info` anything else
    (perf metrics, batch composition). `problems` says why the run's time and energy are not the
    workload's alone (a compilation inside it): a measured round containing it is invalid.
    """

    input_tokens: list[int]
    output_tokens: list[int]
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)

    def verify(self, workload: Workload, engine: str) -> None:
        """Raise WorkloadMismatch unless exactly the requested work was done."""
        problems = []
        if len(self.input_tokens) != workload.requests or len(self.output_tokens) != workload.requests:
            problems.append(
                f"ran {len(self.output_tokens)} requests, asked for {workload.requests}"
            )
        bad_in = sorted({n for n in self.input_tokens if n != workload.n_in})
        if bad_in:
            problems.append(f"prompt lengths {bad_in}, asked for {workload.n_in}")
        bad_out = sorted({n for n in self.output_tokens if n != workload.n_out})
        if bad_out:
            problems.append(f"generated {bad_out} tokens, asked for exactly {workload.n_out}")
        if problems:
            raise WorkloadMismatch(f"engine {engine!r} did not run the workload: " + "; ".join(problems))
