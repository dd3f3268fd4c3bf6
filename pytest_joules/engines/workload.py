"""What an engine is asked to run (`Workload`) and what it proves it ran (`EngineRun`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, WorkloadMismatch

if TYPE_CHECKING:
    from .mix import Arrival, Mix
    from .prompt_text import PromptFile


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

    Traffic beyond one point (engines/mix.py): with a `mix`, the requests have the lengths
    `lengths()` sampled from it, and n_in / n_out are their means (rounded; build it with
    `of_mix`); `arrival` sends them over time (rate or concurrency) instead of all at once;
    `prompts` takes their text from a file instead of random token ids (engines/prompt_text.py).
    """

    n_in: int
    n_out: int
    requests: int = 1
    max_batch_size: int | None = None
    seed: int = 0
    mix: Mix | None = None
    arrival: Arrival | None = None
    prompts: PromptFile | None = None

    @classmethod
    def of_mix(cls, mix: Mix, requests: int, **kwargs: Any) -> Workload:
        """`requests` requests sampled from `mix`; n_in / n_out the sample's rounded means."""
        _check_positive_int("requests", requests)
        lengths = mix.sample(requests)
        n_in = max(1, round(sum(n for n, _ in lengths) / requests))
        n_out = max(1, round(sum(m for _, m in lengths) / requests))
        return cls(n_in, n_out, requests=requests, mix=mix, **kwargs)

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

    def lengths(self) -> tuple[tuple[int, int], ...]:
        """(n_in, n_out) of each request, in the order they are sent."""
        if self.mix is not None:
            return self.mix.sample(self.requests)
        return ((self.n_in, self.n_out),) * self.requests

    @property
    def uniform(self) -> bool:
        """One length, random prompts, all at once: the workload engines ran before mixes."""
        return self.mix is None and self.arrival is None and self.prompts is None

    def schedule_key(self) -> str:
        """What seeds the order and arrival times: the mix's digest, or the one length."""
        return self.mix.digest if self.mix is not None else f"{self.n_in}x{self.n_out}"

    @property
    def output_tokens(self) -> int:
        if self.mix is not None:
            return sum(m for _, m in self.lengths())
        return self.requests * self.n_out

    @property
    def input_tokens(self) -> int:
        if self.mix is not None:
            return sum(n for n, _ in self.lengths())
        return self.requests * self.n_in

    def check_positions(self, max_positions: int | None, engine: str) -> None:
        """Raise ConfigError when one request would not fit the engine's context."""
        if max_positions is None:
            return
        n, m = max(set(self.lengths()), key=sum) if self.mix is not None else (self.n_in, self.n_out)
        if n + m > max_positions:
            what = "its longest request: " if self.mix is not None else ""
            fix = "drop or truncate those requests of the mix" if self.mix is not None else "use shorter lengths"
            raise ConfigError(
                f"{what}n_in + n_out = {n} + {m} = {n + m} exceeds {engine}'s maximum of {max_positions} positions; {fix}"
            )

    def label(self) -> str:
        base = self.mix.label() if self.mix is not None else f"n_in={self.n_in}-n_out={self.n_out}"
        extra = [x.label() for x in (self.arrival, self.prompts) if x is not None]
        return "-".join([base, *extra])


@dataclass
class EngineRun:
    """What an engine actually did for one `Workload`.

    `input_tokens` / `output_tokens` hold one count per request. `seconds` is the time the run
    took (wall clock on real hardware, simulated time on the sim). `phases` holds what the engine
    knows of its phases, e.g. {"prefill_s": ..., "decode_s": ...}; `info` anything else
    (perf metrics, batch composition). `problems` says why the run's time and energy are not the
    workload's alone (a compilation inside it): a measured round containing it is invalid.
    `ttft_s` / `tpot_s` hold, where the engine knows them, each request's time to first token
    (from the run's start) and time per output token after the first (see latency.py).
    """

    input_tokens: list[int]
    output_tokens: list[int]
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)

    def verify(self, workload: Workload, engine: str) -> None:
        """Raise WorkloadMismatch unless exactly the requested work was done."""
        if workload.mix is not None:
            return self._verify_each(workload, engine)
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

    def _verify_each(self, workload: Workload, engine: str) -> None:
        """A mix: every request's counts, in the order the requests were sent."""
        want = workload.lengths()
        problems = []
        if len(self.input_tokens) != len(want) or len(self.output_tokens) != len(want):
            problems.append(f"ran {len(self.output_tokens)} requests, asked for {len(want)}")
        else:
            for i, ((n, m), got_n, got_m) in enumerate(zip(want, self.input_tokens, self.output_tokens)):
                if got_n != n:
                    problems.append(f"request {i}: prompt of {got_n} tokens, asked for {n}")
                if got_m != m:
                    problems.append(f"request {i}: generated {got_m} tokens, asked for exactly {m}")
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise WorkloadMismatch(f"engine {engine!r} did not run {workload.label()}: "
                                   + "; ".join(problems[:3]) + more)
