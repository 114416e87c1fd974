"""The one table ``make bench`` prints: a row per figure, with its reference, ratio or target, and whether
the target is met."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One row of the table.

    ``met``: True / False against the target, None when the figure has no target (shown as "-").
    ``notes``: how it was measured and what else was seen (printed under the table).
    """

    benchmark: str
    figure: str
    reference: str
    ratio: str
    met: bool | None
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, benchmark: str, error: BaseException | str) -> Result:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(benchmark, "(not measured)", "-", "-", False, [f"the benchmark failed: {text}"])


def mark(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def render(results: Sequence[Result], title: str = "") -> str:
    """A Markdown table (readable in a terminal, pasteable into docs), then the numbered notes."""
    header = ("benchmark", "figure", "reference", "ratio / target", "met?")
    rows = [(r.benchmark, r.figure, r.reference, r.ratio, mark(r.met)) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [title, ""] if title else []
    out += [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    notes = [(r.benchmark, note) for r in results for note in r.notes]
    if notes:
        out.append("")
        for benchmark, note in notes:
            out.append(f"- {benchmark}: {note}")
    return "\n".join(out)


def machine_line() -> str:
    """CPU count, load average and Python: the conditions the figures were measured under."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def to_json(results: Sequence[Result]) -> str:
    return json.dumps(_plain([asdict(r) for r in results]), indent=2, default=str)


def _plain(value):
    """JSON-ready: every mapping key as text (some raw data is keyed by tuples)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio_text(value: float, target: str) -> str:
    return f"{value:.2f} ({target})" if math.isfinite(value) else f"n/a ({target})"


def quiet_warnings() -> None:
    """Dagster's beta/preview warnings say nothing about the figures (pytest filters them the same way)."""
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
