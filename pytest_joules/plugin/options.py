"""The `--joules-*` options: each is also an ini key (command line wins over ini).

Parsing is strict and cheap (stdlib only): a bad value is a `pytest.UsageError` that names the
option, the value and the fix, raised in pytest_configure before anything is collected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from .. import values
from ..paths import RUNS_DIR
from .anchor import default_baselines  # noqa: F401  (where it lived; its callers import it from here)

#: (flag, kind, help); kind is "flag" (store_true), "value" or "path". The ini key is the flag
#: without its dashes, with underscores ("joules_engine").
FLAGS: list[tuple[str, str, str]] = [
    ("--joules", "flag", "run the tests marked @pytest.mark.energy (skipped otherwise)"),
    ("--joules-engine", "value", "engine that generates tokens: sim (default, the SIMULATED H100), hf, trtllm, vllm, openai, ..."),
    ("--joules-model", "value", "model for the engine: an architecture name (sim, hf) or a checkpoint/engine dir"),
    ("--joules-meter", "value", "energy meter: sim, nvml, rapl, none (default: the engine's own choice)"),
    ("--joules-gpu", "value", "GPU of the simulated device, e.g. H100-SXM, H200, A100 (sim only)"),
    ("--joules-baselines", "path", "directory of the baseline store (default: baselines/ beside the ini file; "
     "without an ini file, the nearest existing baselines/ up to the repository root)"),
    ("--joules-update-baselines", "flag", "record this run's measurements as the new baselines"),
    ("--joules-baseline-sessions", "value", "with --joules-update-baselines: keep this session and up to N-1 earlier "
     "ones in each baseline, so that it averages the drift between sessions and measures it (default 1: replace)"),
    ("--joules-drift", "value", "the device's spread of J/token between sessions, 0.01 or 1%% (default: estimated "
     "from the baseline's sessions and the saved runs, else a prior of 1%%; 0: no drift)"),
    ("--joules-tolerance", "value", "allowed J/output-token increase over the baseline, 0.05 or 5%% (default 5%%)"),
    ("--joules-model-tolerance", "value", "fail the session when the fitted model's MAPE exceeds this, 0.1 or 10%%"),
    ("--joules-latency-tolerance", "value", "fail a test whose median TTFT or TPOT is this much above its baseline's "
     "(or output tokens/s this much below), 0.1 or 10%% (default: latency is reported, not gated)"),
    ("--joules-rounds", "value", "measured rounds per test: auto (default: until the verdict is known, within "
     "--joules-max-seconds) or a fixed number"),
    ("--joules-max-seconds", "value", "budget of measured seconds per test for --joules-rounds auto (default 60)"),
    ("--joules-warmup", "value", "unmeasured warm-up runs per test (default 1)"),
    ("--joules-seed", "value", "seed of the random prompts and of the simulator's noise (default: a new one each run, "
     "shown in the header, so reruns differ like a GPU's; give it to repeat a run exactly)"),
    ("--joules-json", "path", "write every measurement of the session to this results JSON"),
    ("--joules-require-gpu", "flag", "fail, instead of skipping, when the engine or meter has no real GPU"),
    ("--joules-sim-slowdown", "value", "make the simulated device this many times slower, e.g. 1.10 (demos a regression)"),
    ("--joules-noisy-fails", "flag", "fail a test whose verdict is 'noisy' (rounds too spread to judge the tolerance)"),
    ("--joules-new-fails", "flag", "fail a test that has no baseline (verdict 'new'), so a renamed test cannot slip through CI"),
    ("--joules-allow-new", "flag", "in CI (the CI environment variable set) let a test without a baseline pass as 'new'; "
     "by default it fails there, giving the command that records it"),
    ("--joules-require-baselines", "flag", "fail every test when the store holds no baselines for this device and "
     "engine (the summary names the ones it holds)"),
    ("--joules-meter-option", "list", "KEY=VALUE option of the meter, e.g. min_window_s=2 (repeatable; ini: one per line)"),
    ("--joules-engine-option", "list", "KEY=VALUE option of the engine, e.g. noise=0 (sim) or device=cpu (hf) (repeatable; ini: one per line)"),
    ("--joules-export-gab", "path", "write the session's results as github-action-benchmark customSmallerIsBetter JSON"),
    ("--joules-export-bmf", "path", "write the session's results as Bencher Metric Format (BMF) JSON"),
    ("--joules-no-step-summary", "flag", "do not append the Markdown summary to $GITHUB_STEP_SUMMARY"),
    ("--joules-autosave", "flag", "keep this run's results, numbered, in .joules/ beside the baselines directory "
     "(`joules list`, `joules compare last~1 last`, `joules history TEST`)"),
    ("--joules-no-hints", "flag", "leave out the summary's advice: the `joules calibrate` suggestion and the "
     "sweet-spot table (ini: joules_no_hints = true)"),
    ("--joules-grid-intensity", "value", "grid carbon intensity in gCO2e/kWh (a value you state, no look-up): "
     "reports gCO2e per 1,000 output tokens"),
    ("--joules-price", "value", "electricity price per kWh, in your currency: reports the cost per 1,000 output tokens"),
]


#: ini keys that are not simply the flag's name (a list reads better in the plural)
INI_NAMES = {"--joules-meter-option": "joules_meter_options", "--joules-engine-option": "joules_engine_options"}

#: engine options that a flag of their own sets too: both given, they must agree
ENGINE_OPTION_FLAGS = {"slowdown": "--joules-sim-slowdown", "seed": "--joules-seed"}


#: what each value option takes, for --help (argparse would show a generic VALUE)
METAVARS = {
    "--joules-engine": "NAME", "--joules-model": "NAME|DIR", "--joules-meter": "NAME", "--joules-gpu": "NAME",
    "--joules-baselines": "DIR", "--joules-tolerance": "FRACTION", "--joules-model-tolerance": "FRACTION",
    "--joules-latency-tolerance": "FRACTION",
    "--joules-rounds": "N|auto", "--joules-max-seconds": "SECONDS", "--joules-warmup": "N", "--joules-seed": "N",
    "--joules-sim-slowdown": "FACTOR", "--joules-grid-intensity": "GCO2E_PER_KWH", "--joules-price": "PER_KWH",
    "--joules-baseline-sessions": "N", "--joules-drift": "FRACTION",
}


def ini_key(flag: str) -> str:
    return INI_NAMES.get(flag) or flag.lstrip("-").replace("-", "_")


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("joules", "energy tests (pytest-joules)")
    for flag, kind, help_text in FLAGS:
        if kind == "flag":
            group.addoption(flag, action="store_true", default=None, dest=dest(flag), help=help_text)
            # type="bool": pytest reads true/false/yes/no/1/0 and refuses anything else with a usage
            # error; default None so that an absent key is told from `key = false`
            parser.addini(ini_key(flag), help_text + f" (same as {flag})", type="bool", default=None)
            continue
        elif kind == "list":
            group.addoption(flag, action="append", default=None, dest=dest(flag), metavar="KEY=VALUE", help=help_text)
            parser.addini(ini_key(flag), help_text + f" (same as {flag})", type="linelist", default=[])
            continue
        else:
            metavar = METAVARS.get(flag) or ("PATH" if kind == "path" else flag.removeprefix("--joules-").upper())
            group.addoption(flag, action="store", default=None, dest=dest(flag), metavar=metavar, help=help_text)
        parser.addini(ini_key(flag), help_text.replace("%%", "%") + f" (same as {flag})", default="")


@dataclass(frozen=True)
class JoulesOptions:
    enabled: bool = False
    engine: str = "sim"
    model: str | None = None
    meter: str | None = None
    gpu: str | None = None
    baselines: Path = Path("baselines")
    update_baselines: bool = False
    #: sessions a recorded baseline keeps (1: each recording replaces the last)
    baseline_sessions: int = 1
    #: the between-session spread stated by the user (None: estimated, judge/drift_history.py)
    drift: float | None = None
    tolerance: float = 0.05
    model_tolerance: float | None = None
    #: --joules-latency-tolerance: the latency gate (measure/latency.py); None = reported only
    latency_tolerance: float | None = None
    #: "auto" (measure/stopping.py) or a fixed number of rounds
    rounds: int | str = "auto"
    max_seconds: float = 60.0
    warmup: int = 1
    seed: int = 0
    #: False when the seed was drawn at random for this run (no --joules-seed, ini key or engine option)
    seed_given: bool = True
    json: Path | None = None
    require_gpu: bool = False
    sim_slowdown: float | None = None
    noisy_fails: bool = False
    #: a test with no baseline fails instead of passing as "new"
    new_fails: bool = False
    #: CI (the `CI` environment variable, plugin/missing.py): a test without a baseline fails unless allow_new
    ci: bool = False
    allow_new: bool = False
    #: fail the tests of a device and engine that have no baselines in the store at all
    require_baselines: bool = False
    meter_options: Mapping[str, Any] = field(default_factory=dict)
    #: --joules-engine-option; the engine spec adds seed and sim_slowdown (see session.engine_spec)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    export_gab: Path | None = None
    export_bmf: Path | None = None
    no_step_summary: bool = False
    #: --joules-autosave: keep every run under `autosave_dir()`
    autosave: bool = False
    #: --joules-no-hints: no calibrate suggestion, no sweet-spot table in the summary
    no_hints: bool = False
    #: pytest's -v count: a failure shows its statistics from 1 on
    verbosity: int = 0
    #: --joules-grid-intensity (gCO2e/kWh) and --joules-price (per kWh): see footprint.py
    grid_intensity: float | None = None
    price: float | None = None

    @property
    def footprint(self) -> Any:
        from ..report.footprint import Footprint

        return Footprint(self.grid_intensity, self.price)

    @property
    def autosave_dir(self) -> Path:
        """`.joules/` beside the baselines directory, so it follows the store's rule (an ini
        file's directory, else the nearest baselines/ up to the repository root)."""
        return self.baselines.parent / RUNS_DIR
    #: baseline keys are test paths relative to this directory (the ini file's, else the store's
    #: repository anchor: plugin/anchor.py), never to pytest's rootdir, which an option value can move
    key_base: Path | None = None
    #: said in the header when pytest took one of our option values for a test path (anchor.py)
    anchor_note: str = ""


def _fail(flag: str, value: Any, fix: str) -> pytest.UsageError:
    return pytest.UsageError(f"{flag}: invalid value {value!r}: {fix}")


def parse_fraction(flag: str, value: Any) -> float:
    """`0.05` or `5%` -> 0.05 (tolerance.parse: a bare number >= 1 is refused); a usage error otherwise."""
    from ..judge.tolerance import ToleranceError, parse

    try:
        return parse(value)
    except ToleranceError as exc:
        fix = str(exc)
    raise _fail(flag, value, fix)


def random_seed() -> int:
    """A fresh seed: without --joules-seed each run's noise (and prompts) differ, like a GPU's."""
    import secrets

    return secrets.randbelow(2**31)


def parse_int(flag: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        what += f" of at most {maximum:,} (each runs the whole workload)" if maximum is not None else ""
        raise _fail(flag, value, f"give {what}")
    return number


def parse_rounds(flag: str, value: Any) -> int | str:
    from ..measure.stopping import parse_rounds as parse

    try:
        return parse(value)
    except ValueError:
        raise _fail(flag, value, "give auto (measure until the verdict is known) or a positive integer of at "
                    "most 1,000 (each round runs the workload at least once)") from None


def parse_positive_float(flag: str, value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not (number > 0 and number != float("inf")):
        raise _fail(flag, value, "give a number greater than 0, like 1.10")
    return number


def parse_amount(flag: str, value: Any) -> float:
    """A grid intensity or price: a non-negative finite number."""
    from ..report.footprint import parse_amount as parse

    try:
        return parse(flag, value)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def parse_bool(flag: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    truth = values.truth(value)
    if truth is None:
        raise _fail(flag, value, "give true or false")
    return truth


def parse_name(flag: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise _fail(flag, value, "give a name")
    return text


def parse_meter_options(flag: str, items: Any) -> dict[str, Any]:
    """`KEY=VALUE` items (repeated flag or ini lines) -> the meter's options dict."""
    from ..errors import ConfigError

    try:
        return values.key_values(items, flag)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def parse_engine_options(flag: str, items: Any) -> dict[str, Any]:
    """`KEY=VALUE` items (repeated flag or ini lines) -> the engine's options dict."""
    from ..errors import ConfigError

    try:
        return values.key_values(items, flag, example="slowdown=1.1")
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def _given_as(config: pytest.Config, flag: str) -> str:
    """How the user set `flag`: the flag itself, or its ini key (where to fix a conflict)."""
    if config.getoption(dest(flag), default=None) is not None:
        return flag
    return f"the ini key {ini_key(flag)}"


def _settle_engine_options(config: pytest.Config, values: dict[str, Any]) -> None:
    """An engine option that a flag of its own also sets (slowdown, seed) must agree with the flag.

    An engine option `seed` alone becomes the session's seed, so the prompts follow it too; a
    `slowdown` alone is left to the engine to check (only the sim takes one).
    """
    options = values.get("engine_options") or {}
    where = _given_as(config, "--joules-engine-option")
    for key, flag in ENGINE_OPTION_FLAGS.items():
        name = dest(flag).removeprefix("joules_")
        if key not in options or (name not in values and key != "seed"):
            continue
        parse = parse_positive_float if key == "slowdown" else (lambda f, v: parse_int(f, v, 0))
        value = parse(f"{where} {key}", options[key])
        if name not in values:
            values[name] = value
        elif values[name] != value:
            raise pytest.UsageError(
                f"{_given_as(config, flag)} {values[name]} and {where} {key}={options[key]} disagree; "
                f"set the {key} once"
            )


def _settle_new_tests(config: pytest.Config, values: dict[str, Any]) -> None:
    """In CI a test without a baseline fails unless --joules-allow-new (plugin/missing.py)."""
    from .missing import in_ci

    if values.get("new_fails") and values.get("allow_new"):
        raise pytest.UsageError(f"{_given_as(config, '--joules-new-fails')} and {_given_as(config, '--joules-allow-new')} "
                                "contradict each other; give one")
    values["ci"] = in_ci()


def _raw(config: pytest.Config, flag: str) -> tuple[Any, Path | None]:
    """The option's value and the directory a relative path in it is relative to.

    Command-line paths are relative to the invocation directory, ini paths to the ini file.
    """
    value = config.getoption(dest(flag), default=None)
    if value is not None:
        return value, Path(config.invocation_params.dir)
    try:
        value = config.getini(ini_key(flag))
    except (ValueError, pytest.UsageError) as exc:  # a bool key: pytest's message does not name it
        problem: str | None = str(exc)
    else:
        problem = None
    if problem is not None:  # "invalid truth value 'x'": say it as every other option's error does
        quoted = problem[problem.find("'"):] if "'" in problem else repr(problem)
        raise pytest.UsageError(f"{flag}: invalid value {quoted}: give true or false (the ini key {ini_key(flag)})")
    if value in ("", None, []):
        return None, None
    base = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
    return value, base


def _path(value: Any, base: Path | None) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() or base is None else base / path


def from_config(config: pytest.Config) -> JoulesOptions:
    """Read and validate every option; raises pytest.UsageError on the first bad one."""
    parsers: dict[str, Callable[[str, Any], Any]] = {
        "--joules": parse_bool,
        "--joules-engine": parse_name,
        "--joules-model": parse_name,
        "--joules-meter": parse_name,
        "--joules-gpu": parse_name,
        "--joules-update-baselines": parse_bool,
        "--joules-baseline-sessions": lambda f, v: parse_int(f, v, 1),
        "--joules-drift": parse_fraction,
        "--joules-tolerance": parse_fraction,
        "--joules-model-tolerance": parse_fraction,
        "--joules-latency-tolerance": parse_fraction,
        "--joules-rounds": parse_rounds,
        "--joules-max-seconds": parse_positive_float,
        "--joules-warmup": lambda f, v: parse_int(f, v, 0, maximum=100),
        "--joules-seed": lambda f, v: parse_int(f, v, 0),
        "--joules-require-gpu": parse_bool,
        "--joules-sim-slowdown": parse_positive_float,
        "--joules-noisy-fails": parse_bool,
        "--joules-new-fails": parse_bool,
        "--joules-allow-new": parse_bool,
        "--joules-require-baselines": parse_bool,
        "--joules-meter-option": parse_meter_options,
        "--joules-engine-option": parse_engine_options,
        "--joules-no-step-summary": parse_bool,
        "--joules-autosave": parse_bool,
        "--joules-no-hints": parse_bool,
        "--joules-grid-intensity": parse_amount,
        "--joules-price": parse_amount,
    }
    values: dict[str, Any] = {}
    for flag, kind, _ in FLAGS:
        raw, base = _raw(config, flag)
        if raw is None:
            continue
        key = dest(flag).removeprefix("joules_") if flag != "--joules" else "enabled"
        key = key + "s" if kind == "list" else key  # meter_options, engine_options
        try:
            values[key] = _path(raw, base) if kind == "path" else parsers[flag](flag, raw)
        except pytest.UsageError as exc:
            if config.getoption(dest(flag), default=None) is not None:
                raise
            # the value came from the ini file: say where, or the user hunts for a flag they never typed
            where = f" in {config.inipath}" if config.inipath else ""
            raise pytest.UsageError(f"{exc} (set by the ini key {ini_key(flag)}{where})") from None
    _settle_engine_options(config, values)
    values["verbosity"] = int(config.getoption("verbose", 0) or 0)
    _settle_new_tests(config, values)
    if "seed" not in values:
        values["seed"], values["seed_given"] = random_seed(), False
    if "baselines" not in values and not values.get("enabled"):
        values["baselines"] = Path(config.rootpath) / "baselines"  # unused: no need to search
    elif values.get("enabled"):
        # keys and the default store follow the ini file (or the repository), never pytest's
        # rootdir, which an option's value written after a space can move (anchor.py)
        from . import anchor

        found = anchor.find(config, {flag for flag, kind, _ in FLAGS if kind != "flag"})
        values.setdefault("baselines", found.store)
        values["key_base"] = found.root
        if found.taken:  # it moved only pytest's rootdir: said in the header, keys unmoved
            values["anchor_note"] = (f"pytest took {', '.join(found.taken)} for a test path when it chose its rootdir "
                                     f"(write --option=value); baseline keys stay anchored at {found.root}")
    if values.get("enabled"):
        from . import outputs

        outputs.check(JoulesOptions(**values))  # before measuring, not after: the store and the paths
        check_baselines(values["baselines"], _given_as(config, "--joules-baselines")
                        if _raw(config, "--joules-baselines")[0] is not None else "the default baselines directory")
    return JoulesOptions(**values)


def check_baselines(path: Path, given_as: str) -> None:
    """A store path that cannot be a store is a usage error: reading it as empty would turn the gate off."""
    if os.path.islink(path) and not path.exists():
        raise pytest.UsageError(f"{given_as} {path}: a symlink to {os.readlink(path)}, which does not exist; "
                                "restore its target or point --joules-baselines at the store directory")
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{given_as} {path}: is a file, not a directory; point --joules-baselines "
                                "at the store directory (it holds one directory per device)")
