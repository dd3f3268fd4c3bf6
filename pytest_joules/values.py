"""Option values as users write them, parsed one way everywhere (ground floor: stdlib only).

The command line, ini keys, `KEY=VALUE` engine and meter options and the `joules` commands all
read true/false words, numbers and key=value lists through these functions, so a value accepted
in one place is accepted in every other, and every refusal names the option and the fix.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .errors import ConfigError

#: how a true/false option may be written (command line, ini, KEY=VALUE)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def truth(value: Any) -> bool | None:
    """A bool, or one of TRUE_WORDS / FALSE_WORDS (any case) -> True/False; anything else -> None."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    return None


def key_values(items: Sequence[Any] | None, option: str, example: str = "min_window_s=2") -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` strings -> a dict. Numbers become int or float; anything else stays a
    string, for the engine or meter to validate."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} takes KEY=VALUE (e.g. {example}), got {item!r}")
        raw = raw.strip()
        value: Any = raw
        for convert in (int, float):
            try:
                value = convert(raw)
                break
            except ValueError:
                pass
        options[key] = value
    return options


def reject_unknown(what: str, options: object, accepted: Sequence[str], who: str) -> None:
    """ConfigError naming every option of `what` ("sim engine", "nvml meter") that is not one of
    `accepted`: a typo must not be ignored silently. `who` starts the list of accepted ones."""
    unknown = sorted(set(options) - set(accepted))  # type: ignore[call-overload]
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {', '.join(map(repr, unknown))}; {who} accepts {', '.join(accepted)}")


def bool_option(what: str, options: Mapping[str, Any], name: str, default: bool) -> bool:
    """A true/false option of `what` ("nvml meter") from its options dict."""
    raw = options.get(name, default)
    value = truth(raw)
    if value is None:
        raise ConfigError(f"{what} option {name} must be true or false, got {raw!r}")
    return value


def number_option(what: str, options: Mapping[str, Any], name: str, default: float, positive: bool = False) -> float:
    """A finite number option, >= 0 (> 0 with `positive`); NaN is refused too, since a NaN
    window never closes."""
    raw = options.get(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} option {name} must be a number, got {raw!r}") from None
    if not (0 < value if positive else 0 <= value) or not value < math.inf:
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"{what} option {name} must be a finite {kind} number, got {raw!r}")
    return value
