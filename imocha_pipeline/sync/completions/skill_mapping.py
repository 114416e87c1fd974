"""The skill mapping table (IMOCHA_PIPELINE_SKILL_MAP) staged for analysts.

``stage_skill_mapping`` copies the CSV into the table ``skill_mapping`` and records in ``sync_state``
(``skill_mapping``) that a mapping is configured, so ``v_unmapped_skills`` lists the iMocha skills the
mapping does not cover. Without the setting the table is emptied and the record removed (the view is then
empty: every skill travels under its iMocha name). Call it at plan time, so the table always shows the
mapping the last plan used.
"""

from __future__ import annotations

import csv
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.settings import IMOCHA_PIPELINE_SKILL_MAP
from imocha_pipeline.sync.completions.mapping import read_mapping_csv

SETTING = IMOCHA_PIPELINE_SKILL_MAP.name
STATE_NAME = "skill_mapping"


def mapping_rows(path: str) -> list[dict[str, str]]:
    """The CSV's rows, one per iMocha skill (case-insensitive; the last row wins, as in the plan)."""
    mapping = read_mapping_csv(path, "imocha_skill", "degreed_skill", SETTING)  # the plan's rules and errors
    written: dict[str, str] = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            name = (row.get("imocha_skill") or "").strip()
            if name:
                written[name.lower()] = name
    return [{"imocha_skill_key": key, "imocha_skill": written.get(key, key), "degreed_skill": value}
            for key, value in sorted(mapping.items())]


def stage_skill_mapping(engine: Engine, path: str | None = None) -> int:
    """Replace the staged mapping with the CSV at ``path`` (default: IMOCHA_PIPELINE_SKILL_MAP); rows staged."""
    path = IMOCHA_PIPELINE_SKILL_MAP.value() if path is None else path
    rows = mapping_rows(path) if path else []
    now = staging.utcnow()
    with engine.begin() as conn:
        conn.execute(staging.skill_mapping.delete())
        if not path:
            conn.execute(staging.sync_state.delete().where(staging.sync_state.c.name == STATE_NAME))
            return 0
        staging.upsert(conn, staging.skill_mapping, [row | {"loaded_at": now} for row in rows])
        staging.set_state(conn, STATE_NAME, {"source": path, "rows": len(rows)})
    return len(rows)


def staged_mapping(engine: Engine) -> dict[str, str]:
    """The staged mapping, iMocha skill key -> Degreed skill."""
    with engine.connect() as conn:
        table = staging.skill_mapping
        return dict(conn.execute(sa.select(table.c.imocha_skill_key, table.c.degreed_skill)).all())
