"""The README's settings tables, generated from the catalogue.

README.md holds each generated table between a marker pair, e.g. ``<!-- settings:start -->`` …
``<!-- settings:end -->`` (the tables of "## Settings") and ``<!-- settings:sensors:start -->`` …
``<!-- settings:sensors:end -->`` (the table under "### Sensors"). ``python -m imocha_pipeline.settings --write``
rewrites what lies between them; a test fails while README.md differs from ``update_readme(README.md)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from imocha_pipeline.settings.catalogue import CATALOGUE
from imocha_pipeline.settings.setting import GROUPS, SENSORS, Setting

# marker -> the groups its tables show
TABLES: dict[str, tuple[str, ...]] = {
    "settings": tuple(group for group in GROUPS if group != SENSORS),
    "settings:sensors": (SENSORS,),
}
LOAD_NOTE = "; read when the code location loads"


def start_marker(marker: str) -> str:
    return f"<!-- {marker}:start -->"


def end_marker(marker: str) -> str:
    return f"<!-- {marker}:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table(settings: Iterable[Setting]) -> str:
    """One markdown table: setting, default (as people read it), meaning."""
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    for setting in settings:
        meaning = setting.doc + (LOAD_NOTE if setting.read_at_load else "")
        lines.append(f"| `{setting.name}` | {_cell(setting.shown)} | {_cell(meaning)} |")
    return "\n".join(lines)


def render(marker: str) -> str:
    """What lies between the marker pair: a table per group (titled when there are several)."""
    groups = TABLES[marker]
    parts = []
    for group in groups:
        table = settings_table(s for s in CATALOGUE if s.group == group)
        parts.append(table if len(groups) == 1 else f"**{group[0].upper()}{group[1:]}**\n\n{table}")
    return "\n\n".join(parts)


def render_all() -> str:
    """Every generated block with its markers (what ``python -m imocha_pipeline.settings`` prints)."""
    return "\n\n".join(f"{start_marker(m)}\n\n{render(m)}\n\n{end_marker(m)}" for m in TABLES)


def update_readme(text: str) -> str:
    """``text`` (README.md) with every generated block replaced by the catalogue's current one."""
    for marker in TABLES:
        start, end = start_marker(marker), end_marker(marker)
        begin = text.find(start)
        finish = text.find(end, begin)
        if begin < 0 or finish < 0:
            raise ValueError(f"README has no {start} ... {end} pair")
        text = f"{text[:begin + len(start)]}\n\n{render(marker)}\n\n{text[finish:]}"
    return text
