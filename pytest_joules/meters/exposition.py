"""A strict parser of the Prometheus text exposition format (version 0.0.4), as dcgm-exporter serves it.

Why not `prometheus_client.parser`: importing it imports the whole client (and registers its
default collectors in our process), it accepts some malformed lines silently (``foo 1 2 3``), and
it renames counter samples (``x`` becomes ``x_total`` after ``# TYPE x counter``). The format is
small: one sample a line, ``name{label="value",...} value [timestamp_ms]``, ``#`` comments, and
``# HELP`` / ``# TYPE`` lines. Any line that is not that is an error naming the line, since a
meter must not guess at half a counter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class ExpositionError(ValueError):
    """A malformed exposition; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    value: float = 0.0
    timestamp_ms: int | None = None


def parse_value(text: str) -> float:
    """A sample value: Go's float syntax as Prometheus writes it (NaN, +Inf, -Inf too)."""
    if text in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(text.lstrip("+"))
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def _labels(text: str, pos: int, lineno: int) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting at text[pos] == '{'; the labels and the position after '}'."""
    labels: dict[str, str] = {}
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "}":
            return labels, pos + 1
        m = LABEL.match(text, pos)
        if not m:
            raise ExpositionError(lineno, f"expected a label name at column {pos + 1}")
        name, pos = m.group(), m.end()
        if name in labels:
            raise ExpositionError(lineno, f"label {name!r} given twice")
        if text[pos:pos + 2] != '="':
            raise ExpositionError(lineno, f"expected =\" after label {name!r}")
        pos += 2
        value: list[str] = []
        while True:
            if pos >= len(text):
                raise ExpositionError(lineno, f"unterminated value of label {name!r}")
            ch = text[pos]
            if ch == '"':
                pos += 1
                break
            if ch == "\\":
                nxt = text[pos + 1:pos + 2]
                if nxt not in _ESCAPES:
                    raise ExpositionError(lineno, f"bad escape \\{nxt} in label {name!r}")
                value.append(_ESCAPES[nxt])
                pos += 2
            else:
                value.append(ch)
                pos += 1
        labels[name] = "".join(value)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "}":
            raise ExpositionError(lineno, f"expected , or }} after label {name!r}")


def _comment(line: str, lineno: int, types: dict[str, str]) -> None:
    parts = line[1:].split(None, 2)
    if not parts or parts[0] not in ("HELP", "TYPE"):
        return  # a plain comment
    if len(parts) < 2 or not NAME.fullmatch(parts[1]):
        raise ExpositionError(lineno, f"# {parts[0]} needs a metric name")
    if parts[0] == "TYPE":
        kind = parts[2].strip() if len(parts) > 2 else ""
        if kind not in TYPES:
            raise ExpositionError(lineno, f"unknown metric type {kind!r} for {parts[1]}")
        if parts[1] in types:
            raise ExpositionError(lineno, f"# TYPE {parts[1]} given twice")
        types[parts[1]] = kind


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition; ExpositionError at the first malformed line or a series given twice."""
    samples: list[Sample] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    types: dict[str, str] = {}
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line:
            continue
        if line.startswith("#"):
            _comment(line, lineno, types)
            continue
        m = NAME.match(line)
        if not m:
            raise ExpositionError(lineno, f"expected a metric name, got {line[:40]!r}")
        name, pos = m.group(), m.end()
        labels: dict[str, str] = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _labels(line, pos, lineno)
        rest = line[pos:]
        if rest and rest[0] not in " \t":
            raise ExpositionError(lineno, f"expected a space after {name}, got {rest[:20]!r}")
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise ExpositionError(lineno, f"{name}: expected a value and an optional timestamp, got {rest.strip()!r}")
        try:
            value = parse_value(fields[0])
        except ValueError as exc:
            raise ExpositionError(lineno, f"{name}: {exc}") from None
        stamp = None
        if len(fields) == 2:
            if not re.fullmatch(r"-?\d+", fields[1]):
                raise ExpositionError(lineno, f"{name}: timestamp {fields[1]!r} is not an integer of milliseconds")
            stamp = int(fields[1])
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError(lineno, f"series {render_series(name, labels)} given twice")
        seen.add(key)
        samples.append(Sample(name, labels, value, stamp))
    return samples


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_series(name: str, labels: dict[str, str]) -> str:
    """``name{a="x",b="y"}``, labels in the given order, escaped as the format requires."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(samples: list[Sample], types: dict[str, str] | None = None) -> str:
    """The exposition of `samples` (a TYPE line before each metric in `types`)."""
    lines: list[str] = []
    typed: set[str] = set()
    for s in samples:
        if types and s.name in types and s.name not in typed:
            lines.append(f"# TYPE {s.name} {types[s.name]}")
            typed.add(s.name)
        stamp = "" if s.timestamp_ms is None else f" {s.timestamp_ms}"
        lines.append(f"{render_series(s.name, s.labels)} {render_value(s.value)}{stamp}")
    return "\n".join(lines) + "\n"
