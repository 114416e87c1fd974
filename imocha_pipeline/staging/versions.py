"""Revisions of the staging schema: Alembic migrations in ``staging/migrations/versions``, and the first-use rule.

- ``imocha-pipeline db upgrade`` (``upgrade(url)``) creates the tables of an empty database, or upgrades them
  to the latest revision. A database made before migrations existed (the tables, but no version) is adopted
  at revision 0001 when its tables match that revision, then upgraded.
- ``staging.connect.get_engine`` (``prepare``) migrates an EMPTY database on its own (zero set-up for development,
  the demo and tests), uses a database at the latest revision as it is, and refuses any other with
  ``SchemaOutOfDate``, whose message names ``imocha-pipeline db upgrade``.

Every migration runs in one transaction under a lock (PostgreSQL: an advisory lock per schema; SQLite:
``BEGIN IMMEDIATE``), so processes starting together on an empty database never race, and a migration that
fails leaves nothing half done.

The version is kept in the table ``imocha_pipeline_alembic_version`` (not Alembic's default
``alembic_version``, which Dagster's own PostgreSQL storage uses, so both can share a database).

A new revision: change the tables in ``staging/tables.py``, then run ``new_revision("what changed")`` (it writes
``versions/NNNN_what_changed.py`` from Alembic's comparison of the models with the latest revision), review
and complete it (views and data moves are never generated), and add a test of the upgrade with data in place.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline.staging.engine import create_engine, describe_url, normalise_url
from imocha_pipeline.staging.tables import metadata

VERSION_TABLE = "imocha_pipeline_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "imocha-pipeline db upgrade"
BASELINE = "0001"
_PG_LOCK_CLASS = 0x1DB0C4  # first key of the advisory lock; the second is a hash of the schema name


class SchemaOutOfDate(RuntimeError):
    """The staging database's schema is not the one this version of the pipeline needs."""

    def __init__(self, message: str, current: str | None = None, head: str | None = None):
        super().__init__(message)
        self.current = current
        self.head = head


def alembic_config(url: str | None = None, connection: Connection | None = None,
                   output: io.StringIO | None = None) -> Config:
    """An Alembic configuration for the packaged migrations (no alembic.ini needed)."""
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url  # kept out of the ini options: '%' in URLs would need escaping
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The latest revision of the packaged migrations."""
    head = _script().get_current_head()
    assert head is not None, "no migrations packaged"
    return head


def known_revisions() -> list[str]:
    """Every packaged revision, oldest first."""
    return [script.revision for script in reversed(list(_script().walk_revisions()))]


def current_revision(bind: Engine | Connection) -> str | None:
    """The revision the database is at (None: no version recorded)."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return current_revision(conn)
    return MigrationContext.configure(bind, opts={"version_table": VERSION_TABLE}).get_current_revision()


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    staging_tables: tuple[str, ...]  # imocha_pipeline tables present in the database

    @property
    def empty(self) -> bool:
        return self.current is None and not self.staging_tables

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def known(self) -> bool:
        return self.current is None or self.current in known_revisions()

    def problem(self, where: str) -> str | None:
        """Why the pipeline must not use this database (None: nothing wrong)."""
        run = (f"Run `{UPGRADE_COMMAND}` with IMOCHA_PIPELINE_STAGING_DB_URL pointing at it, then start the "
               "run again.")
        if self.up_to_date or self.empty:
            return None
        if self.current is None:
            return (f"The staging database {where} has imocha_pipeline tables but no schema version (it was "
                    f"created before schema migrations); this version of imocha_pipeline needs schema revision "
                    f"{self.head}. {run}")
        if not self.known:
            return (f"The staging database {where} is at schema revision {self.current}, which this version of "
                    f"imocha_pipeline does not know (its latest is {self.head}): a newer version upgraded it. "
                    "Run that version of imocha_pipeline against it.")
        return (f"The staging database {where} is at schema revision {self.current}; this version of "
                f"imocha_pipeline needs schema revision {self.head}. {run}")


def status(bind: Engine | Connection) -> SchemaStatus:
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return status(conn)
    names = set(sa.inspect(bind).get_table_names())
    current = current_revision(bind) if VERSION_TABLE in names else None
    return SchemaStatus(current, head_revision(), tuple(sorted(names & set(metadata.tables))))


def _where(bind: Engine | Connection) -> str:
    return bind.engine.url.render_as_string(hide_password=True)


def check_up_to_date(bind: Engine | Connection) -> None:
    """Raise ``SchemaOutOfDate`` unless the database is at the latest revision."""
    found = status(bind)
    if not found.up_to_date:
        message = found.problem(_where(bind)) or (
            f"The staging database {_where(bind)} has no staging tables yet. Run `{UPGRADE_COMMAND}`.")
        raise SchemaOutOfDate(message, found.current, found.head)


def prepare(engine: Engine, url: str) -> None:
    """The first-use rule of ``staging.get_engine``: migrate an empty database, accept one at the latest
    revision, refuse any other."""
    found = status(engine)
    if found.up_to_date:
        return
    if not found.empty:
        raise SchemaOutOfDate(found.problem(describe_url(url)) or "", found.current, found.head)
    _migrate(url, engine, automatic=True)


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Create or upgrade the staging tables at ``url``; returns the revisions before and after."""
    engine = create_engine(url)
    try:
        return _migrate(url, engine, revision=revision)
    finally:
        engine.dispose()


def upgrade_sql(url: str, revision: str = "head", start: str | None = None) -> str:
    """The SQL an upgrade would run (from ``start``, default: from nothing), without touching the database."""
    output = io.StringIO()
    target = f"{start}:{revision}" if start else revision
    command.upgrade(alembic_config(normalise_url(url), output=output), target, sql=True)
    return output.getvalue()


def _migrate(url: str, engine: Engine, revision: str = "head",
             automatic: bool = False) -> tuple[str | None, str | None]:
    with _locked_transaction(url, engine) as conn:
        found = status(conn)  # again, under the lock: another process may have migrated meanwhile
        if automatic:
            if found.up_to_date:
                return found.current, found.current
            if not found.empty:
                raise SchemaOutOfDate(found.problem(describe_url(url)) or "", found.current, found.head)
        elif not found.known:
            raise SchemaOutOfDate(found.problem(describe_url(url)) or "", found.current, found.head)
        elif found.current is None and found.staging_tables:
            _adopt(conn, url)
        command.upgrade(alembic_config(url, conn), revision)
        return found.current, current_revision(conn)


@contextmanager
def _locked_transaction(url: str, engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that holds the migration lock; committed at the end."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock_class, hashtext(coalesce(current_schema(), '')))"),
                         {"lock_class": _PG_LOCK_CLASS})
            yield conn
        return
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # pysqlite commits around DDL on its own; this engine leaves transactions to SQLite, and BEGIN
        # IMMEDIATE takes the write lock at once, so the whole migration is atomic and serialised.
        migration_engine = create_engine(url)

        @sa.event.listens_for(migration_engine, "connect")
        def _driver_autocommit(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(migration_engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with migration_engine.begin() as conn:
                yield conn
        finally:
            migration_engine.dispose()
        return
    with engine.begin() as conn:
        yield conn


@functools.cache
def _baseline_columns() -> dict[str, frozenset[str]]:
    """Tables and columns of revision 0001, read from an in-memory database migrated to it."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config("sqlite://", conn), BASELINE)
            inspector = sa.inspect(conn)
            return {name: frozenset(c["name"] for c in inspector.get_columns(name))
                    for name in inspector.get_table_names() if name != VERSION_TABLE}
    finally:
        engine.dispose()


def _adopt(conn: Connection, url: str) -> None:
    """Record revision 0001 for a database created before migrations, when its tables match 0001."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    missing: list[str] = []
    for table, columns in sorted(_baseline_columns().items()):
        if table not in present:
            missing.append(f"table {table}")
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        missing += [f"column {table}.{name}" for name in sorted(columns - have)]
    if missing:
        raise SchemaOutOfDate(
            f"The staging database {describe_url(url)} has imocha_pipeline tables but no schema version, "
            f"and they do not match schema revision {BASELINE} (missing: {', '.join(missing[:10])}"
            f"{', ...' if len(missing) > 10 else ''}), so it cannot be adopted. Point "
            f"IMOCHA_PIPELINE_STAGING_DB_URL at a new database and run `{UPGRADE_COMMAND}`.", None, head_revision())
    command.stamp(alembic_config(url, conn), BASELINE)


def new_revision(message: str) -> Path:
    """Write the next revision file from Alembic's comparison of the models with the latest revision."""
    number = f"{int(head_revision()) + 1:04d}"
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config("sqlite://", conn), "head")
            script = command.revision(alembic_config("sqlite://", conn), message=message, autogenerate=True,
                                      rev_id=number)
    finally:
        engine.dispose()
        _script.cache_clear()
    return Path(script.path)
