"""argparse `type=` converters for numbers with a range, so every subcommand rejects bad numbers
the same way: at parse time, exit 2, one line naming the argument and the value."""

from __future__ import annotations

import argparse
import math
from typing import Callable

from ..engines.workload import MAX_FIXED_ROUNDS, MAX_WARMUP


def number(convert: Callable[[str], float], allow_zero: bool, what: str,
           at_most: float | None = None, at_least: float | None = None, why: str = "") -> Callable[[str], float]:
    """A converter that accepts finite values > 0 (or >= 0 with `allow_zero`), from `at_least` up
    to `at_most`; `why` says why the limit is there."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
            finite = math.isfinite(value)
        except (ValueError, OverflowError):  # OverflowError: an integer beyond any float
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not finite or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"expected {what} of at most {at_most:,.0f}, got {text!r}"
                                             + (f": {why}" if why else ""))
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"expected {what} of at least {at_least:,.0f}, got {text!r}"
                                             + (f": {why}" if why else ""))
        return value

    return parse


def requests(text: str) -> int:
    """A number of requests per workload, at most workload.MAX_REQUESTS (the reason in the error)."""
    from ..engines.workload import requests_problem

    value = int(positive_int(text))
    problem = requests_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


#: token lengths beyond this are no workload (and overflow the models' n²/m in double precision)
MAX_TOKENS = 10**9


positive_int = number(int, False, "a positive integer")
rounds = number(int, False, "a positive number of rounds", at_most=MAX_FIXED_ROUNDS,
                why="each round runs the workload at least once and cannot be cut short")
warmup = number(int, True, "a non-negative number of warm-up runs", at_most=MAX_WARMUP,
                why="each runs the whole workload and cannot be cut short")
non_negative_int = number(int, True, "a non-negative integer")
positive_float = number(float, False, "a positive number")
seconds = number(float, True, "a non-negative number of seconds")
tokens = number(int, False, "a positive whole number of tokens", at_most=MAX_TOKENS)


#: calibrate's candidate lengths per axis: its design weighs every pair of candidates, so memory
#: and time grow with the 4th power of this (300 levels asked for 60 GiB)
MAX_LEVELS = 32
levels_arg = number(int, False, "a number of levels", at_least=2, at_most=MAX_LEVELS,
                    why="the design compares every pair of the levels² candidates")
#: a 95% interval needs at least 40 bootstrap replicates (its 2.5% and 97.5% quantiles): fewer
#: printed a band of ±0.0%
MIN_REPLICATES = 40
bootstrap_arg = number(int, False, "a number of bootstrap replicates", at_least=MIN_REPLICATES, at_most=100_000,
                       why="a 95% interval needs at least 40 replicates; each refits the model")


def token_list(text: str) -> list[int]:
    """'128,512' -> [128, 512] (like `joules sweep --n-in`); each part checked as `tokens`."""
    return [int(tokens(part.strip())) for part in text.split(",")]


class DeprecatedAlias(argparse.Action):
    """An old option name kept working: stores into the new option's dest and warns once on stderr.

    `--model` named the analytical model in `fit`/`sweetspot` but the LLM in `sweep`/`calibrate`;
    the analytical one is `--fit` now.
    """

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        import sys

        print(f"{parser.prog}: warning: {option_string} is deprecated here, use {self.new} "
              f"({option_string} names the LLM in `joules sweep`)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def tolerance_arg(text: str) -> float:
    """A tolerance as the plugin takes it: 0.05 or 5%."""
    from ..errors import ConfigError
    from ..judge.verdict import parse_tolerance

    try:
        return parse_tolerance(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_writable(flag: str, path: str) -> None:
    """DataError naming `flag` when nothing can be written at `path`: checked before a long
    measurement, not after it."""
    import os
    from pathlib import Path

    from ..errors import DataError

    target = Path(path)
    try:
        if target.is_dir():
            raise DataError(f"{flag} {path}: is a directory; give a file name such as {target / 'results.json'}")
        blocking = next((q for q in reversed(target.parents) if q.exists() and not q.is_dir()), None)
        if blocking is not None:
            raise DataError(f"{flag} {path}: cannot write there: {blocking} is a file, not a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise DataError(f"{flag} {path}: cannot write there: {target.parent} is not writable")
    except OSError as exc:
        raise DataError(f"{flag} {path}: cannot write there: {exc.strerror or exc}") from None
