"""Two PostgreSQL roles for the staging schema: the pipeline's writer and a read-only analyst.

``imocha-pipeline db roles --analyst NAME --writer NAME`` calls :func:`create_roles`. It works in the schema the
URL selects (the first schema of its ``search_path``, i.e. ``current_schema()``) and may be run again at any
time: a role that exists is kept (its password and attributes are not touched) and its grants on the schema are
set again from scratch, so a re-run also takes back what an earlier, broader grant gave.

- The writer may read and write every pipeline table (``tables.metadata``, the schema version table) and use
  their sequences; it may read the analyst views. It does not own the tables: migrations (``imocha-pipeline db
  upgrade``) stay with the role that created the schema.
- The analyst may SELECT the analyst views (migration 0002) and nothing else in the schema: no raw tables, no
  ledger payloads, no callback bodies, no rate budgets, no settings, no Dagster tables, no writes. PostgreSQL
  runs a view with its owner's rights, so the views read the tables the analyst cannot.

New roles are created ``LOGIN`` without a password: the operator sets one (``ALTER ROLE ... PASSWORD``) or maps
them in ``pg_hba.conf``. SQLite has no roles: :class:`RolesUnsupported`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from imocha_pipeline.staging.tables import metadata
from imocha_pipeline.staging.versions import VERSION_TABLE

# The views analysts query (migration 0002_analyst_views; a later view is added here when it is created).
ANALYST_VIEWS = ("v_sync_status", "v_open_quarantine", "v_skill_ratings_current", "v_drift_last_reconcile",
                 "v_unmapped_skills")

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RolesUnsupported(Exception):
    """The database has no roles (SQLite)."""


@dataclass
class RolesReport:
    schema: str
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    writer_tables: list[str] = field(default_factory=list)
    analyst_views: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"schema {self.schema}:"]
        lines += [f"  created role {name} (LOGIN, no password: set one with ALTER ROLE {name} PASSWORD '...')"
                  for name in self.created]
        lines += [f"  role {name} exists: kept as it is, grants set again" for name in self.existing]
        lines.append(f"  writer: read/write on {len(self.writer_tables)} pipeline tables, read on the views")
        lines.append(f"  analyst: SELECT on {', '.join(self.analyst_views)}; nothing else")
        return "\n".join(lines)


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name or ""):
        raise ValueError(f"{what} role name {name!r}: use lower-case letters, digits and _ (at most 63, "
                         "not starting with a digit)")
    return name


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ensure_role(conn: Connection, name: str, report: RolesReport) -> None:
    exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
    if exists:
        report.existing.append(name)
        return
    conn.execute(sa.text(f"CREATE ROLE {_q(name)} LOGIN"))
    report.created.append(name)


def create_roles(url_or_engine, analyst: str, writer: str) -> RolesReport:
    """Create (if missing) the analyst and writer roles and set their grants on the URL's schema."""
    from imocha_pipeline.staging.connect import get_engine

    _check_name(analyst, "analyst")
    _check_name(writer, "writer")
    if analyst == writer:
        raise ValueError("the analyst and the writer must be two different roles")
    engine = get_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    if engine.dialect.name != "postgresql":
        raise RolesUnsupported(
            f"{engine.dialect.name} has no database roles: anyone who can read the file reads everything. "
            "Database roles need PostgreSQL (IMOCHA_PIPELINE_STAGING_DB_URL=postgresql://...); on SQLite, "
            "protect the file with the operating system's permissions.")
    with engine.begin() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        if not schema:
            raise ValueError("the URL selects no existing schema (check search_path)")
        report = RolesReport(schema=schema)
        for name in (writer, analyst):
            _ensure_role(conn, name, report)
        present = {row[0] for row in conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'v', 'm', 'p')"), {"s": schema})}
        tables = [t for t in [*sorted(metadata.tables), VERSION_TABLE] if t in present]
        views = [v for v in ANALYST_VIEWS if v in present]
        s = _q(schema)
        for role in (writer, analyst):  # start from nothing in this schema, then grant what each needs
            r = _q(role)
            conn.execute(sa.text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}"))
            conn.execute(sa.text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}"))
            conn.execute(sa.text(f"REVOKE ALL ON SCHEMA {s} FROM {r}"))
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {s} TO {r}"))
        w, a = _q(writer), _q(analyst)
        for table in tables:
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.{_q(table)} TO {w}"))
        conn.execute(sa.text(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {w}"))
        for view in views:
            conn.execute(sa.text(f"GRANT SELECT ON {s}.{_q(view)} TO {w}, {a}"))
        report.writer_tables, report.analyst_views = tables, views
    return report
