"""Traffic beyond one point: a length mix (`Mix`) and an arrival schedule (`Arrival`).

A mix is a distribution of (n_in, n_out): a list of (n_in, n_out, weight), or a file of
per-request rows as exported from serving logs (CSV with a header, or JSONL). Identical lengths
are merged (their weights add up) and weights normalised, so a mix is its distribution: the same
requests in another order, or as CSV instead of JSONL, is the same mix with the same `digest`.

`Mix.sample(requests)` picks the requests deterministically: systematic sampling at the
midpoints of the cumulative weights over the sorted lengths (each length gets its share of the
requests to within one), then an order shuffled by a generator seeded from the digest. Not from
--joules-seed: that seed changes every run by default, and a mix whose requests changed from run
to run could not be compared with its baseline. The same holds for Poisson arrival times.

Pure stdlib: the marker validates mixes at collection, with or without --joules.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError

#: a mix file larger than this is refused before it is read (a serving log's export is sampled first)
MAX_FILE_BYTES = 200 * 1024 * 1024
#: ... and one with more rows than this after reading
MAX_ROWS = 1_000_000
#: requests a mix workload runs when the marker does not say (every weight of 1/64 or more shows up)
DEFAULT_REQUESTS = 64
#: column names accepted for the lengths (serving logs call them prompt/completion tokens)
IN_NAMES = ("n_in", "input_tokens", "prompt_tokens")
OUT_NAMES = ("n_out", "output_tokens", "completion_tokens")
FORMAT_FIX = "use .csv (header n_in,n_out[,weight]) or .jsonl (one {\"n_in\": .., \"n_out\": ..} per line)"


def _length(where: str, name: str, value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {name} {value!r} must be a positive whole number of tokens; fix or drop the row")
    return value


def _weight(where: str, value: Any) -> float:
    try:
        weight = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{where}: weight {value!r} must be a positive number; give the row a weight > 0 or drop it")
    return weight


@dataclass(frozen=True, eq=False)
class Mix:
    """A length distribution: sorted distinct (n_in, n_out) with weights summing to 1."""

    entries: tuple[tuple[int, int, float], ...]
    #: where it came from: a file path as given, or "inline"
    source: str
    #: the first 12 hex digits of the SHA-256 of the distribution: part of a baseline's identity
    digest: str
    #: rows read (a file's requests, or the list's items), before merging identical lengths
    rows: int
    _samples: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mix) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @property
    def name(self) -> str:
        return "inline" if self.source == "inline" else Path(self.source).stem

    def label(self) -> str:
        return f"mix={self.name}#{self.digest[:6]}"

    def sample(self, requests: int) -> tuple[tuple[int, int], ...]:
        """`requests` (n_in, n_out), as described in the module's docstring; cached."""
        found = self._samples.get(requests)
        if found is None:
            picked: list[tuple[int, int]] = []
            cumulative, i = 0.0, 0
            for k in range(requests):
                u = (k + 0.5) / requests
                while i < len(self.entries) - 1 and cumulative + self.entries[i][2] <= u:
                    cumulative += self.entries[i][2]
                    i += 1
                picked.append(self.entries[i][:2])
            random.Random(f"pytest-joules-mix:{self.digest}:{requests}").shuffle(picked)
            found = self._samples[requests] = tuple(picked)
        return found

    def mean(self) -> tuple[float, float]:
        """The distribution's mean n_in and n_out."""
        return (sum(n * w for n, _, w in self.entries), sum(m * w for _, m, w in self.entries))


def build(rows: Iterable[tuple[int, int, float]], source: str) -> Mix:
    """A Mix from validated (n_in, n_out, weight) rows: merged, sorted, normalised, hashed."""
    merged: dict[tuple[int, int], float] = {}
    count = 0
    for n_in, n_out, weight in rows:
        merged[(n_in, n_out)] = merged.get((n_in, n_out), 0.0) + weight
        count += 1
    if not merged:
        raise ConfigError(f"mix {source}: has no requests; give rows of n_in, n_out and an optional weight")
    total = sum(merged.values())
    entries = tuple((n, m, w / total) for (n, m), w in sorted(merged.items()))
    canonical = json.dumps([[n, m, float(f"{w:.12g}")] for n, m, w in entries], separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Mix(entries, source, digest, count)


def from_list(items: Sequence[Any], where: str = "mix") -> Mix:
    """[(n_in, n_out), (n_in, n_out, weight), ...] as the marker takes it."""
    rows = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, dict):
            item = (item.get("n_in"), item.get("n_out"), item.get("weight", 1))
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise ConfigError(f"{at}: {item!r} must be (n_in, n_out) or (n_in, n_out, weight)")
        weight = _weight(at, item[2]) if len(item) == 3 else 1.0
        rows.append((_length(at, "n_in", item[0]), _length(at, "n_out", item[1]), weight))
    return build(rows, "inline")


def _pick(where: str, header: Sequence[str], names: Sequence[str]) -> str:
    found = [n for n in names if n in header]
    if not found:
        raise ConfigError(f"{where}: no column {' or '.join(names)} (columns: {', '.join(header) or 'none'}); {FORMAT_FIX}")
    return found[0]


def _csv_rows(path: str, text: str) -> Iterable[tuple[int, int, float]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    n_col, m_col = _pick(f"mix file {path}", header, IN_NAMES), _pick(f"mix file {path}", header, OUT_NAMES)
    for row in reader:
        where = f"mix file {path} line {reader.line_num}"
        if None in row or any(v is None for v in row.values()):  # DictReader: extra cells under None, missing ones None
            fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise ConfigError(f"{where}: has {fields} fields, the header {len(header)}; fix the row")
        weight = row.get("weight")
        yield (_length(where, n_col, row[n_col]), _length(where, m_col, row[m_col]),
               1.0 if weight in (None, "") else _weight(where, weight))


def _jsonl_rows(path: str, text: str) -> Iterable[tuple[int, int, float]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"mix file {path} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg}); {FORMAT_FIX}") from None
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected an object with n_in and n_out, got {type(item).__name__}")
        keys = list(item)
        n_col, m_col = _pick(where, keys, IN_NAMES), _pick(where, keys, OUT_NAMES)
        yield (_length(where, n_col, item[n_col]), _length(where, m_col, item[m_col]),
               _weight(where, item["weight"]) if "weight" in item else 1.0)


def from_file(path: str | os.PathLike[str], shown: str | None = None) -> Mix:
    """A mix file: CSV with a header, or JSONL. Every refusal names the file, the line and the fix."""
    shown = shown or str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ConfigError(f"mix file {shown}: unknown format {suffix or '(no extension)'!r}; {FORMAT_FIX}")
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"mix file {shown}: {size / 1e6:,.0f} MB, more than {MAX_FILE_BYTES / 1e6:,.0f} MB; "
                              f"sample it first (e.g. `shuf -n 100000`): a mix needs a representative sample, not every request")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"mix file {shown}: cannot read it ({exc.strerror or exc}); check the path (relative to the test file)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"mix file {shown}: not UTF-8 text; {FORMAT_FIX}") from None
    if not text.strip():
        raise ConfigError(f"mix file {shown}: is empty; give a header n_in,n_out[,weight] and one row per request")
    rows = []
    for row in (_csv_rows if suffix == ".csv" else _jsonl_rows)(shown, text):
        rows.append(row)
        if len(rows) > MAX_ROWS:
            raise ConfigError(f"mix file {shown}: more than {MAX_ROWS:,} rows; sample it first (e.g. `shuf -n 100000`)")
    return build(rows, shown)


def load(value: Any, base: str | os.PathLike[str] | None = None, where: str = "mix") -> Mix:
    """The marker's `mix=`: a list of lengths, or a file path (relative to `base`, the test's folder)."""
    if isinstance(value, Mix):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base is not None and not path.exists():
            path = Path(base) / path
        return from_file(path, shown=str(value))
    if isinstance(value, (list, tuple)):
        return from_list(value, where)
    raise ConfigError(f"{where}={value!r}: give a file (CSV or JSONL of n_in, n_out[, weight]) or a list of (n_in, n_out, weight)")


@dataclass(frozen=True)
class Arrival:
    """When requests arrive: `rate` per second (Poisson) or a closed loop of `concurrency` users
    (each sends its next request the moment its last one finishes)."""

    rate: float | None = None
    concurrency: int | None = None

    def label(self) -> str:
        return f"rate={self.rate:g}/s" if self.rate is not None else f"concurrency={self.concurrency}"

    def times(self, requests: int, key: str) -> list[float]:
        """Poisson arrival times: the first at 0, then exponential gaps, seeded by `key` (the mix)."""
        assert self.rate is not None
        rng = random.Random(f"pytest-joules-arrivals:{key}:{requests}:{self.rate!r}")
        t, out = 0.0, []
        for _ in range(requests):
            out.append(t)
            t += rng.expovariate(self.rate)
        return out


def arrival(rate: Any = None, concurrency: Any = None, where: str = "") -> Arrival | None:
    """Validate the marker's `rate=` / `concurrency=` (at most one); None when neither is given."""
    at = f"{where} " if where else ""
    if rate is not None and concurrency is not None:
        raise ConfigError(f"{at}rate={rate!r} and concurrency={concurrency!r}: give one (rate: Poisson arrivals "
                          "per second; concurrency: a closed loop of that many users)")
    if rate is not None:
        ok = not isinstance(rate, bool) and isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0
        if not ok:
            raise ConfigError(f"{at}rate={rate!r}: must be a positive number of requests per second (e.g. rate=4)")
        return Arrival(rate=float(rate))
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency <= 0:
            raise ConfigError(f"{at}concurrency={concurrency!r}: must be a positive number of users (e.g. concurrency=8)")
        return Arrival(concurrency=concurrency)
    return None


def serves_over_time(engine: Any) -> bool:
    """Whether the engine can send requests over time (the Engine's optional `serves_over_time`)."""
    return bool(getattr(engine, "serves_over_time", False))


def check_serves(engine: Any, workload: Any) -> None:
    """ConfigError in one line when a workload has arrivals and the engine cannot serve them."""
    if workload.arrival is None or serves_over_time(engine):
        return
    kind = getattr(engine, "kind", "this engine")
    why = getattr(engine, "over_time_refusal", None) or "it runs a workload's requests all at once"
    raise ConfigError(
        f"{workload.arrival.label()}: engine {kind!r} cannot serve requests over time ({why}); "
        "use --joules-engine sim (runtime=graphs), or drop rate=/concurrency= to run the requests at once"
    )


def groups(lengths: Sequence[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """(n_in, n_out, request indices) of each distinct length, in order of first appearance: how an
    engine without in-flight batching of mixed lengths (hf) runs a mix."""
    out: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(lengths):
        out.setdefault(key, []).append(i)
    return [(n, m, idx) for (n, m), idx in out.items()]


def traffic_labels(workload: Any) -> dict[str, str | None]:
    """What identifies a workload's traffic in a baseline: "name#digest" of its mix and of its
    prompt file, its arrivals ("rate=4/s"); None for what it does not have."""
    mix, prompts, arrival = workload.mix, workload.prompts, workload.arrival
    return {"mix": f"{mix.name}#{mix.digest}" if mix is not None else None,
            "arrival": arrival.label() if arrival is not None else None,
            "prompts": f"{Path(prompts.source).name}#{prompts.digest}" if prompts is not None else None}
