"""Exporters: measurements in the formats that CI dashboards already read.

- github-action-benchmark, tool `customSmallerIsBetter`: a JSON list of
  {"name", "unit", "value", "range"?, "extra"?}, the `BenchmarkResult` interface of the action's
  src/extract.ts (name: string, value: number, unit: string, range?: string, extra?: string) and
  the custom-benchmark section of its README. J per output token is smaller-is-better.
- Bencher Metric Format (https://bencher.dev/docs/reference/bencher-metric-format):
  {benchmark name: {measure slug: {"value", "lower_value"?, "upper_value"?}}}; measure slugs at
  most 64 characters, created on first use by `bencher run --adapter json`.
- JUnit XML: (name, value) pairs for `item.user_properties`, which pytest's junitxml plugin
  writes as <property> elements of the test case (the plugin adds them to every measured test).
  pytest writes them under both junit_family values (checked with pytest 9: tests/
  test_plugin_gates.py), but per-test <properties> belong to the xunit1 schema only: a consumer
  that validates against xunit2's XSD may reject the file, and pytest's own `record_property`
  fixture warns under xunit2. Set `junit_family = xunit1` to get a file valid by its schema.
- Markdown: a summary table, appended to the file named by $GITHUB_STEP_SUMMARY when it is set
  (GitHub renders that file on the run's summary page; every step appends to it).

Every exporter takes a list of `Measurement`s or of rows read back by `results.read_results`.
Lower/upper values and ranges come from the order-statistic interval of the median (stats.py):
exact and deterministic; with fewer than 6 rounds it is [min, max], which covers less than 95%.

Latency (latency.py) travels beside the energy: TTFT, TPOT and output tokens/s in the gab
`extra`, as BMF measures (ms and tokens/s: a dashboard sets their own thresholds), CSV columns,
a Markdown column and JUnit properties, wherever the engine reported them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..measure import latency as L
from ..numbers import sig
from ..judge import stats
from ..errors import DataError
from .footprint import Footprint
from .footprint import from_dict as footprint_from_dict
from ..measure.measurement import Measurement
from ..store.record import ResultRecord
from ..store.results import ResultRow, ResultsFile

GAB_UNIT = "J/output-token"
#: Bencher measure slugs (kebab case, <= 64 characters)
BMF_J_PER_TOKEN = "j-per-output-token"
BMF_TOKENS_PER_JOULE = "tokens-per-joule"
BMF_AVG_WATTS = "average-watts"
BMF_GCO2E = "gco2e-per-1k-tokens"
BMF_COST = "cost-per-1k-tokens"
BMF_TTFT = "ttft-ms"
BMF_TPOT = "tpot-ms"
BMF_TOK_S = "output-tokens-per-second"
#: prefix of every JUnit property, so ours never collide with a user's
JUNIT_PREFIX = "joules_"


@dataclass(frozen=True)
class ExportRow:
    """What every exporter needs of one result, whatever it was read from."""

    name: str
    n_in: int
    n_out: int
    requests: int
    round_values: tuple[float, ...]
    j_per_out_token: float | None
    tokens_per_joule: float | None
    avg_watts: float | None
    spread: float | None
    verdict: str | None
    delta: float | None
    simulated: bool
    max_batch_size: int | None = None
    #: carbon and cost per 1,000 output tokens (footprint.py), None unless the inputs were stated
    gco2e_per_1k: float | None = None
    cost_per_1k: float | None = None
    #: TTFT, TPOT, TPOT p90 (seconds) and output tokens/s (latency.py); None when not reported
    latency: Mapping[str, float | None] | None = None

    def with_footprint(self, footprint: Footprint | None) -> ExportRow:
        if not footprint:
            return self
        j = self.j_per_out_token
        return dataclasses.replace(self, gco2e_per_1k=footprint.gco2e_per_1k(j), cost_per_1k=footprint.cost_per_1k(j))

    @property
    def summary(self) -> stats.Summary | None:
        try:
            return stats.summarize(self.round_values) if self.round_values else None
        except ValueError:  # a hand-edited file with a bad round: export the median only
            return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _from_measurement(m: Measurement) -> ExportRow:
    w = m.workload
    v = m.verdict
    return ExportRow(
        name=m.name or w.label(), n_in=w.n_in, n_out=w.n_out, requests=w.requests,
        round_values=tuple(m.round_values), j_per_out_token=m.j_per_out_token,
        tokens_per_joule=m.tokens_per_joule, avg_watts=m.avg_watts, spread=m.spread,
        verdict=v.status if v else None, delta=v.delta if v else None, simulated=m.simulated,
        max_batch_size=w.max_batch_size, latency=m.latency,
    )


def _from_result(row: ResultRow, simulated: bool) -> ExportRow:
    raw = row.raw
    verdict = raw.get("verdict") if isinstance(raw.get("verdict"), Mapping) else None
    return ExportRow(
        name=row.name, n_in=row.workload.n_in, n_out=row.workload.n_out, requests=row.workload.requests,
        round_values=tuple(row.round_values), j_per_out_token=row.j_per_out_token,
        tokens_per_joule=_num(raw.get("tokens_per_joule")), avg_watts=_num(raw.get("avg_watts")),
        spread=_num(raw.get("spread")),
        verdict=str(verdict["status"]) if verdict and verdict.get("status") else None,
        delta=_num(verdict.get("delta")) if verdict else None,
        simulated=bool(raw.get("simulated", simulated)), max_batch_size=row.workload.max_batch_size,
        latency=L.from_record(raw),
    )


def export_rows(items: ResultsFile | Iterable[Measurement | ResultRow | ExportRow],
                footprint: Footprint | None = None) -> list[ExportRow]:
    """Normalize Measurements, ResultRows or a whole ResultsFile into ExportRows, with carbon and
    cost from `footprint` (by default, for a file, the inputs it was written with)."""
    if isinstance(items, ResultsFile):
        stated = footprint if footprint is not None else footprint_from_dict(items.footprint)
        return [_from_result(r, items.simulated).with_footprint(stated) for r in items.rows]
    return [r.with_footprint(footprint) for r in _export_rows(items)]


def _export_rows(items: Iterable[Measurement | ResultRow | ExportRow]) -> list[ExportRow]:
    out = []
    for item in items:
        if isinstance(item, ExportRow):
            out.append(item)
        elif isinstance(item, Measurement):
            out.append(_from_measurement(item))
        elif isinstance(item, ResultRow):
            out.append(_from_result(item, False))
        else:
            raise TypeError(f"cannot export a {type(item).__name__}: expected Measurement or ResultRow")
    return out


def rows_from_records(records: Iterable[ResultRecord], footprint: Footprint | None = None) -> list[ExportRow]:
    """ExportRows from the plugin's records."""
    from ..store.results import row_from_dict

    source = Path("<pytest session>")
    return [_from_result(row_from_dict(source, i, r.to_dict()), r.simulated).with_footprint(footprint)
            for i, r in enumerate(records)]


def unexported(items: ResultsFile | Iterable[Any]) -> list[str]:
    """Names of the results that carry no valid J/token and so are left out of gab/bmf."""
    return [r.name for r in export_rows(items) if r.j_per_out_token is None]


def stated_footprint(items: Any, footprint: Footprint | None = None) -> Footprint:
    """The carbon/cost inputs in effect: the ones given, else (for a file) the file's own."""
    if footprint is not None:
        return footprint
    return footprint_from_dict(items.footprint) if isinstance(items, ResultsFile) else Footprint()


def _footprint_text(r: ExportRow, footprint: Footprint) -> str | None:
    parts = []
    if r.gco2e_per_1k is not None:
        parts.append(f"{sig(r.gco2e_per_1k)} gCO2e")
    if r.cost_per_1k is not None:
        parts.append(f"cost {sig(r.cost_per_1k)}")
    return f"per 1k output tokens: {', '.join(parts)} ({footprint.describe()})" if parts else None


def _unique_names(rows: Sequence[ExportRow]) -> list[str]:
    """Names made unique (" #2", " #3"...) so no result overwrites another in a keyed format."""
    seen: dict[str, int] = {}
    names = []
    for r in rows:
        seen[r.name] = seen.get(r.name, 0) + 1
        names.append(r.name if seen[r.name] == 1 else f"{r.name} #{seen[r.name]}")
    return names


def _g(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


# -- github-action-benchmark ---------------------------------------------------------------------
def gab_json(items: ResultsFile | Iterable[Any], footprint: Footprint | None = None) -> list[dict[str, Any]]:
    """github-action-benchmark `customSmallerIsBetter` entries, one per valid result."""
    footprint = stated_footprint(items, footprint)
    rows = [r for r in export_rows(items, footprint) if r.j_per_out_token is not None]
    out = []
    for name, r in zip(_unique_names(rows), rows):
        s = r.summary
        entry: dict[str, Any] = {"name": name, "unit": GAB_UNIT, "value": r.j_per_out_token}
        extra = [f"n_in={r.n_in} n_out={r.n_out} requests={r.requests}", f"rounds: {len(r.round_values)}"]
        if s is not None and s.ci_low is not None:
            half = max(s.ci_high - s.median, s.median - s.ci_low)  # type: ignore[operator]
            entry["range"] = f"± {half:.4g}"
            extra.append(f"median between {sig(s.ci_low)} and {sig(s.ci_high)} ({s.ci_coverage:.0%} confidence)")
        extra.append(f"tokens/J: {sig(r.tokens_per_joule, none='-')}  avg W: {sig(r.avg_watts, none='-')}")
        if r.latency:
            extra.append(L.describe(r.latency))
        if r.verdict:
            extra.append(f"verdict: {r.verdict}" + (f" ({r.delta:+.2%})" if r.delta is not None else ""))
        if _footprint_text(r, footprint):
            extra.append(str(_footprint_text(r, footprint)))
        if r.simulated:
            extra.append("SIMULATED device")
        entry["extra"] = "\n".join(extra)
        out.append(entry)
    return out


# -- CSV -----------------------------------------------------------------------------------------
CSV_COLUMNS = (
    "run", "created", "commit", "dirty", "host", "device", "simulated", "test", "n_in", "n_out", "requests",
    "max_batch_size", "rounds", "j_per_out_token", "ci_low", "ci_high", "tokens_per_joule", "avg_watts", "spread",
    "verdict", "delta", "grid_intensity_gco2e_per_kwh", "gco2e_per_1k_tokens", "price_per_kwh", "cost_per_1k_tokens",
    "ttft_s", "tpot_s", "tpot_p90_s", "out_tok_per_s",
)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else value  # repr: every digit, so nothing is lost


def csv_text(runs: Iterable[tuple[str, ResultsFile]], footprint: Footprint | None = None) -> str:
    """One row per test per run: (run label, its file) pairs, in order, as CSV with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for label, results in runs:
        stated = stated_footprint(results, footprint)
        found = results.machine.get("git")
        git: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        device = results.device.get("gpu") or results.device.get("name") or ""
        for r in export_rows(results, stated):
            s = r.summary
            writer.writerow(_csv_value(v) for v in (
                label, results.created, git.get("commit"), git.get("dirty"), results.machine.get("host"), device,
                r.simulated, r.name, r.n_in, r.n_out, r.requests, r.max_batch_size, len(r.round_values),
                r.j_per_out_token, s.ci_low if s else None, s.ci_high if s else None, r.tokens_per_joule,
                r.avg_watts, r.spread, r.verdict, r.delta, stated.grid_intensity, r.gco2e_per_1k, stated.price,
                r.cost_per_1k, *((r.latency or {}).get(k) for k in L.KEYS),
            ))
    return out.getvalue()


# -- Bencher ---------------------------------------------------------------------------------------
def _metric(value: float, low: float | None = None, high: float | None = None) -> dict[str, float]:
    metric = {"value": value}
    if low is not None and high is not None:
        metric["lower_value"] = low
        metric["upper_value"] = high
    return metric


def bmf_json(items: ResultsFile | Iterable[Any], footprint: Footprint | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: J/output-token (with the median's interval), tokens/J, average W,
    and gCO2e and cost per 1,000 output tokens when their inputs are stated."""
    rows = [r for r in export_rows(items, stated_footprint(items, footprint)) if r.j_per_out_token is not None]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, r in zip(_unique_names(rows), rows):
        s = r.summary
        low = s.ci_low if s else None
        high = s.ci_high if s else None
        j = r.j_per_out_token
        assert j is not None
        measures = {BMF_J_PER_TOKEN: _metric(j, low, high)}
        # tokens/J is 1/(J/token), so its bounds are the reciprocals, swapped
        measures[BMF_TOKENS_PER_JOULE] = _metric(1.0 / j, 1.0 / high if high else None, 1.0 / low if low else None)
        if r.avg_watts is not None:
            measures[BMF_AVG_WATTS] = _metric(r.avg_watts)
        if r.gco2e_per_1k is not None:
            measures[BMF_GCO2E] = _metric(r.gco2e_per_1k)
        if r.cost_per_1k is not None:
            measures[BMF_COST] = _metric(r.cost_per_1k)
        lat = r.latency or {}
        for slug, key, scale in ((BMF_TTFT, "ttft_s", 1000.0), (BMF_TPOT, "tpot_s", 1000.0), (BMF_TOK_S, "out_tok_per_s", 1.0)):
            if lat.get(key) is not None:
                measures[slug] = _metric(float(lat[key]) * scale)  # type: ignore[arg-type]
        out[name] = measures
    return out


# -- JUnit XML -----------------------------------------------------------------------------------
def junit_properties(item: Measurement | ResultRow | ExportRow) -> list[tuple[str, str | int | float]]:
    """(name, value) pairs to hand to `record_property` (or extend `item.user_properties`)."""
    (r,) = export_rows([item])
    props: list[tuple[str, str | int | float]] = [
        ("n_in", r.n_in), ("n_out", r.n_out), ("requests", r.requests), ("rounds", len(r.round_values)),
    ]
    for key, value in (
        ("j_per_out_token", r.j_per_out_token), ("tokens_per_joule", r.tokens_per_joule),
        ("avg_watts", r.avg_watts), ("spread", r.spread), ("baseline_delta", r.delta),
        *((key, (r.latency or {}).get(key)) for key in L.KEYS),
    ):
        if value is not None:
            props.append((key, value))
    if r.verdict:
        props.append(("verdict", r.verdict))
    props.append(("simulated", str(r.simulated).lower()))
    return [(JUNIT_PREFIX + k, _plain(v)) for k, v in props]


def _plain(value: Any) -> str | int | float:
    """Builtin types only: xdist ships user_properties through execnet, which refuses numpy.float64."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


# -- Markdown / GitHub step summary --------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_summary(items: ResultsFile | Iterable[Any], title: str = "pytest-joules energy",
                     footprint: Footprint | None = None) -> str:
    """A Markdown table of the results, SIMULATED in the heading when any result is; carbon and
    cost columns only when their inputs are stated."""
    footprint = stated_footprint(items, footprint)
    rows = export_rows(items, footprint)
    carbon, cost = footprint.grid_intensity is not None, footprint.price is not None
    simulated = any(r.simulated for r in rows)
    lines = [f"### {title}" + (" (SIMULATED)" if simulated else ""), ""]
    if not rows:
        return "\n".join(lines + ["No energy results.", ""])
    lat = any(r.latency for r in rows)
    extra = (" TTFT/TPOT ms |" if lat else "") + (" gCO2e/1k tok |" if carbon else "") + (" cost/1k tok |" if cost else "")
    lines += [
        "| test | n_in | n_out | J/out-token | tokens/J | avg W | spread | vs baseline | verdict |" + extra,
        "|---|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|" * (lat + carbon + cost),
    ]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict or "-"] = counts.get(r.verdict or "-", 0) + 1
        lines.append(
            f"| {_cell(r.name)} | {r.n_in} | {r.n_out} | {sig(r.j_per_out_token, none='-')} | {sig(r.tokens_per_joule, none='-')} "
            f"| {sig(r.avg_watts, none='-')} | {_g(r.spread, '.1%')} | {_g(r.delta, '+.1%')} | {r.verdict or '-'} |"
            + (f" {L.cell(r.latency).replace('—', '-')} |" if lat else "")
            + (f" {sig(r.gco2e_per_1k, none='-')} |" if carbon else "") + (f" {sig(r.cost_per_1k, none='-')} |" if cost else "")
        )
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status != "-")
    lines += ["", f"{len(rows)} result(s)" + (f": {tally}" if tally else "")]
    if footprint:
        lines.append(f"Carbon and cost per 1,000 output tokens at {footprint.describe()} (stated values).")
    lines.append("")
    return "\n".join(lines)


def append_step_summary(
    items: ResultsFile | Iterable[Any], title: str = "pytest-joules energy", environ: Mapping[str, str] | None = None
) -> Path | None:
    """Append the Markdown summary to $GITHUB_STEP_SUMMARY; None (and nothing written) when unset."""
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    text = markdown_summary(items, title)
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    except OSError as exc:
        raise DataError(f"GITHUB_STEP_SUMMARY={target}: cannot append the energy summary: {exc.strerror or exc}") from None
    return path
