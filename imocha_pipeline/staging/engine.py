"""Engines and portable SQL for the staging database: URLs, engines, upserts by natural key, UTC now.

SQLite by default, PostgreSQL in production (``IMOCHA_PIPELINE_STAGING_DB_URL``). ``staging/connect.py`` hands out
one prepared engine per URL; this module knows nothing about schema versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline.staging.tables import metadata


def normalise_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg2 (our dependency); SQLAlchemy 2.1 would pick psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def create_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _insert_for(conn: Connection, table: sa.Table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"upsert is not implemented for {conn.dialect.name}")
    return insert(table)


def upsert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
           key_columns: Sequence[str] | None = None, chunk_size: int = 2000, only_insert: bool = False,
           only_if: Callable[[Any], sa.ColumnElement[bool]] | None = None) -> int:
    """Insert rows, updating every non-key column where the natural key already exists.

    With ``only_insert`` existing rows are left untouched; with ``only_if`` (given the statement's ``excluded``
    row) an existing row is updated only where that condition holds.
    """
    if not rows:
        return 0
    keys = list(key_columns or [c.name for c in table.primary_key.columns])
    columns = list(rows[0].keys())
    update_cols = [c for c in columns if c not in keys]
    # Keep the bind-parameter count under SQLite's limit.
    chunk = max(1, min(chunk_size, 30000 // max(1, len(columns))))
    for start in range(0, len(rows), chunk):
        statement = _insert_for(conn, table).values(list(rows[start:start + chunk]))
        if update_cols and not only_insert:
            statement = statement.on_conflict_do_update(
                index_elements=keys, set_={c: statement.excluded[c] for c in update_cols},
                where=only_if(statement.excluded) if only_if is not None else None,
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        conn.execute(statement)
    return len(rows)


def not_older(table: sa.Table, excluded) -> sa.ColumnElement[bool]:
    """An upsert condition: the incoming row's source attempt (``source_at``, then ``source_id``) is the same as or
    later than the stored row's; a stored row without a source is always replaced."""
    stored_at, incoming_at = table.c.source_at, excluded.source_at
    return sa.or_(
        stored_at.is_(None),
        incoming_at > stored_at,
        sa.and_(incoming_at == stored_at,
                sa.func.coalesce(excluded.source_id, 0) >= sa.func.coalesce(table.c.source_id, 0)),
    )


def sweep_older(conn: Connection, table: sa.Table, ts_column: str, cutoff: datetime,
                where: sa.ColumnElement[bool] | None = None) -> int:
    """Delete rows not touched by the latest full extract (their timestamp is older than ``cutoff``)."""
    condition = table.c[ts_column] < cutoff
    if where is not None:
        condition = sa.and_(condition, where)
    return conn.execute(table.delete().where(condition)).rowcount or 0


def read_rows(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool] | None = None) -> list[dict]:
    statement = sa.select(table)
    if where is not None:
        statement = statement.where(where)
    return [dict(row._mapping) for row in conn.execute(statement)]


def existing_values(engine: Engine, column: sa.Column, values: Sequence[Any],
                    where: sa.ColumnElement[bool] | None = None, chunk: int = 900) -> set[Any]:
    """Which of ``values`` appear in ``column`` (optionally among rows matching ``where``), in chunks that stay
    under SQLite's bound-parameter limit."""
    found: set[Any] = set()
    values = list(values)
    with engine.connect() as conn:
        for start in range(0, len(values), chunk):
            statement = sa.select(column).distinct().where(column.in_(values[start:start + chunk]))
            if where is not None:
                statement = statement.where(where)
            found |= {row[0] for row in conn.execute(statement)}
    return found


def describe_url(url: str) -> str:
    """The database URL with any password hidden, for logs and metadata."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database url>"


def table_names() -> Iterable[str]:
    return metadata.tables.keys()


def stage_full_extract(engine: Engine, table: sa.Table, rows: list[dict], ts_column: str,
                       run_started: datetime) -> tuple[int, int]:
    """Upsert a complete extract and drop rows it no longer contains. Returns (previous, current) counts."""
    with engine.begin() as conn:
        previous = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        upsert(conn, table, rows)
        sweep_older(conn, table, ts_column, run_started)
        current = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    return int(previous), int(current)
