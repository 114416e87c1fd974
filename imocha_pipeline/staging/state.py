"""A small key-value store in the staging database (``sync_state``): guard baselines, plan verdicts, markers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from imocha_pipeline.staging.engine import upsert, utcnow
from imocha_pipeline.staging.tables import sync_state


def get_state(conn: Connection, name: str, default: Any = None) -> Any:
    value = conn.execute(sa.select(sync_state.c.value).where(sync_state.c.name == name)).scalar_one_or_none()
    return default if value is None else value


def set_state(conn: Connection, name: str, value: Any) -> None:
    upsert(conn, sync_state, [{"name": name, "value": value, "updated_at": utcnow()}])
