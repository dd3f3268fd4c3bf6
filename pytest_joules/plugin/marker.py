"""`@pytest.mark.energy(...)`: parsing, validation and grid expansion.

Validation happens at collection (pytest_generate_tests), with or without --joules, so a typo in
a marker is found by every pytest run, not only by the GPU runner. Errors name the test and the
argument and are shown as collection errors.
"""

from __future__ import annotations

import difflib

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engines.mix import Arrival, Mix
    from ..engines.prompt_text import PromptFile

NAME = "energy"
#: the hidden fixture a grid parametrizes; the `joules` fixture depends on it, so any test using
#: `joules` can be parametrized over it
POINT_FIXTURE = "_joules_point"

HELP = (
    "energy(n_in, n_out, requests=1, max_batch_size=None, rounds=None, tolerance=None, "
    "model_tolerance=None, mix=None, rate=None, concurrency=None, prompts=None): an energy test of "
    "n_in prompt tokens and n_out generated tokens (lists make a grid), or of a length mix (a CSV/JSONL "
    "file or a list of (n_in, n_out, weight)) sent at once, at a rate (Poisson) or by concurrent users; "
    "runs with --joules through the `joules` fixture"
)

KEYWORDS = ("n_in", "n_out", "requests", "max_batch_size", "rounds", "tolerance", "model_tolerance",
            "mix", "rate", "concurrency", "prompts")


class MarkerError(ConfigError):
    """An invalid @pytest.mark.energy; the message names the test and the argument."""


@dataclass(frozen=True)
class EnergySpec:
    """A parsed marker. `n_in` / `n_out` hold one value each unless the marker gave lists."""

    n_in: tuple[int, ...]
    n_out: tuple[int, ...]
    requests: int = 1
    max_batch_size: int | None = None
    rounds: int | str | None = None  # a number, "auto", or None for --joules-rounds
    tolerance: float | None = None
    model_tolerance: float | None = None
    grid: bool = False
    #: traffic beyond one point (engines/mix.py, engines/prompt_text.py); n_in / n_out are () with a mix
    mix: Mix | None = None
    arrival: Arrival | None = None
    prompts: PromptFile | None = None

    def points(self) -> list[tuple[int, int]]:
        return list(itertools.product(self.n_in, self.n_out))


def point_id(point: tuple[int, int]) -> str:
    return f"n_in={point[0]}-n_out={point[1]}"


def _integer(value: Any) -> Any:
    """A numpy (or any other `numbers.Integral`) integer as a plain int, which is what grids are
    often built from; anything else unchanged, for the caller to refuse. Not a bool, nor a float
    such as 128.0."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value) is not int:
        return int(value)
    return value


def _axis(value: Any) -> Any:
    """A numpy array (or anything else with `tolist`) of lengths as a list; anything else unchanged."""
    if not isinstance(value, (str, bytes, list, tuple, range)) and getattr(value, "ndim", 0) >= 1 \
            and callable(getattr(value, "tolist", None)):
        return value.tolist()
    return value


def _positive_int(test: str, name: str, value: Any, where: str = "@pytest.mark.energy", minimum: int = 1) -> int:
    value = _integer(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise MarkerError(f"{test}: {where} {name}={value!r}: must be {what}")
    return value


def _lengths(test: str, name: str, value: Any) -> tuple[tuple[int, ...], bool]:
    """One length, or a list/tuple/range/array of them (a grid axis)."""
    value = _axis(value)
    if isinstance(value, (list, tuple, range)):
        values = [_integer(v) for v in value]
        if not values:
            raise MarkerError(f"{test}: @pytest.mark.energy {name}=[]: give at least one length")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise MarkerError(
                    f"{test}: @pytest.mark.energy {name}: {v!r} in {value!r} must be a positive integer"
                )
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise MarkerError(f"{test}: @pytest.mark.energy {name} lists {dupes} more than once")
        return tuple(values), True
    return (_positive_int(test, name, value),), False


def _fraction(test: str, name: str, value: Any, where: str = "@pytest.mark.energy") -> float | None:
    """A tolerance as the options take it (tolerance.parse: 0.05 or "5%"; a bare 5 is refused)."""
    from ..judge.tolerance import ToleranceError, parse

    if value is None:
        return None
    try:
        return parse(value)
    except ToleranceError as exc:
        raise MarkerError(f"{test}: {where} {name}={value!r}: {exc}") from None


def _rounds(test: str, value: Any, where: str = "@pytest.mark.energy") -> int | str:
    """rounds="auto" (until the verdict is known) or a positive integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    value = _integer(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MarkerError(f"{test}: {where} rounds={value!r}: must be a positive integer or 'auto'")
    from ..engines.workload import rounds_problem

    problem = rounds_problem(value)
    if problem:
        raise MarkerError(f"{test}: {where} {problem}")
    return value


def traffic(test: str, kwargs: dict[str, Any], base: Any, where: str = "@pytest.mark.energy") -> dict[str, Any]:
    """The mix, arrival and prompt source of marker or joules() keywords (each loaded and checked;
    files relative to `base`, the test's folder); only the keys that were given."""
    out: dict[str, Any] = {}
    if not {"mix", "rate", "concurrency", "prompts"} & set(kwargs):
        return out  # a test of one point imports nothing more
    from ..engines import mix as M
    from ..engines import prompt_text

    try:
        if kwargs.get("mix") is not None:
            out["mix"] = M.load(kwargs["mix"], base)
        if "rate" in kwargs or "concurrency" in kwargs:
            out["arrival"] = M.arrival(kwargs.get("rate"), kwargs.get("concurrency"))
        if "prompts" in kwargs:
            out["prompts"] = prompt_text.load(kwargs["prompts"], base)
    except ConfigError as exc:
        raise MarkerError(f"{test}: {where} {exc}") from None
    return out


def parse(mark: Any, test: str, base: Any = None) -> EnergySpec:
    """Validate a `pytest.Mark` named energy; `test` is the node id used in error messages, `base`
    the test file's folder (a mix or prompts file is found relative to it)."""
    if mark.args:
        raise MarkerError(
            f"{test}: @pytest.mark.energy takes keyword arguments only (got positional {list(mark.args)!r}); "
            "write energy(n_in=..., n_out=...)"
        )
    kwargs = dict(mark.kwargs)
    unknown = sorted(set(kwargs) - set(KEYWORDS))
    if unknown:
        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, KEYWORDS, n=1)) else u
                 for u in unknown]
        raise MarkerError(
            f"{test}: @pytest.mark.energy got unknown argument(s) {', '.join(hints)}; "
            f"known: {', '.join(KEYWORDS)}"
        )
    more = traffic(test, kwargs, base)
    if "mix" in more:
        given = [k for k in ("n_in", "n_out") if k in kwargs]
        if given:
            raise MarkerError(f"{test}: @pytest.mark.energy mix= and {'/'.join(given)}= both given: the mix "
                              "sets every request's lengths; drop one")
        kwargs = {**kwargs, "n_in": (), "n_out": ()}
    for required in ("n_in", "n_out"):
        if required not in kwargs:
            raise MarkerError(f"{test}: @pytest.mark.energy needs {required}=<tokens> (or a mix=)")
    n_in, grid_in = _lengths(test, "n_in", kwargs["n_in"]) if "mix" not in more else ((), False)
    n_out, grid_out = _lengths(test, "n_out", kwargs["n_out"]) if "mix" not in more else ((), False)
    max_batch = kwargs.get("max_batch_size")
    rounds = kwargs.get("rounds")
    default = 1
    if "mix" in more:
        from ..engines.mix import DEFAULT_REQUESTS as default
    requests = _positive_int(test, "requests", kwargs.get("requests", default))
    _check_requests(test, requests)
    return EnergySpec(
        n_in=n_in,
        n_out=n_out,
        requests=requests,
        max_batch_size=None if max_batch is None else _positive_int(test, "max_batch_size", max_batch),
        rounds=None if rounds is None else _rounds(test, rounds),
        tolerance=_fraction(test, "tolerance", kwargs.get("tolerance")),
        model_tolerance=_fraction(test, "model_tolerance", kwargs.get("model_tolerance")),
        grid=grid_in or grid_out,
        **more,
    )


def _check_requests(test: str, requests: int, where: str = "@pytest.mark.energy") -> None:
    from ..engines.workload import requests_problem

    problem = requests_problem(requests)
    if problem:
        raise MarkerError(f"{test}: {where} {problem}")


def check_single(node: Any, test: str) -> None:
    """One energy marker per test: of stacked ones pytest would use the nearest without a word."""
    marks = list(node.iter_markers(NAME))
    if len(marks) > 1:
        shown = "; ".join(f"energy({', '.join(f'{k}={v!r}' for k, v in m.kwargs.items())})" for m in marks)
        raise MarkerError(
            f"{test}: @pytest.mark.energy is applied {len(marks)} times ({shown}), stacked or on the test "
            "and its class, module or parameter; only the nearest would count: keep one"
        )


def generate(metafunc: Any) -> None:
    """pytest_generate_tests body: validate the marker, then expand a grid into items."""
    definition = metafunc.definition
    mark = definition.get_closest_marker(NAME)
    if mark is None:
        return
    test = definition.nodeid
    check_single(definition, test)
    spec = parse(mark, test, base=definition.path.parent)
    if "joules" not in metafunc.fixturenames:
        raise MarkerError(
            f"{test}: @pytest.mark.energy needs the `joules` fixture, which runs and measures the "
            "workload; add a `joules` argument and call `joules()`"
        )
    if spec.grid:
        points = spec.points()
        metafunc.parametrize(POINT_FIXTURE, points, ids=[point_id(p) for p in points])


def parse_overrides(test: str, overrides: dict[str, Any], base: Any = None) -> dict[str, Any]:
    """Validate the keyword arguments of a `joules(...)` call as strictly as the marker's."""
    out = {k: v for k, v in overrides.items() if k not in ("mix", "rate", "concurrency", "prompts")}
    for name in ("n_in", "n_out", "requests", "max_batch_size", "warmup"):
        if name in out:
            out[name] = _integer(out[name])  # numpy integers, as grids are often built
    if "name" in out and out["name"] is not None:
        out["name"] = _name(test, out["name"])
    out.update(traffic(test, overrides, base, "joules()"))
    if out.get("rounds") is not None:
        out["rounds"] = _rounds(test, out["rounds"], "joules()")
    if out.get("requests") is not None:
        _positive_int(test, "requests", out["requests"], "joules()")
        _check_requests(test, out["requests"], "joules()")
    if out.get("warmup") is not None:
        out["warmup"] = _positive_int(test, "warmup", out["warmup"], "joules()", minimum=0)
        from ..engines.workload import rounds_problem

        problem = rounds_problem(out["warmup"], "warmup")
        if problem:
            raise MarkerError(f"{test}: joules() {problem}")
    for name in ("tolerance", "model_tolerance"):
        if name in out:
            out[name] = _fraction(test, name, out[name], "joules()")
    return out


def _name(test: str, value: Any) -> str:
    """A second measurement's name: text, shown in the terminal and part of the baseline key, so
    printable (an escape sequence in it cleared the screen) and not a number that only looks like one."""
    if not isinstance(value, str) or not value.strip():
        raise MarkerError(f"{test}: joules() name={value!r}: must be a non-empty string, such as name=\"quarter-length\"")
    if not value.isprintable():
        raise MarkerError(f"{test}: joules() name={value!r}: holds control characters (escape sequences reach the "
                          "terminal and the baseline key); use printable text")
    if "::" in value:
        raise MarkerError(f"{test}: joules() name={value!r}: '::' separates a key's parts; use another separator")
    return value


def point_of(spec: EnergySpec, param: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (n_in, n_out) of one item: its grid parameter, or the marker's single values (None: a mix)."""
    if param is not None:
        return param
    if spec.mix is not None:
        return None
    return spec.n_in[0], spec.n_out[0]
