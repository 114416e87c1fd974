"""Analyst views over the staged tables, and the staged skill mapping table.

- ``skill_mapping``: the IMOCHA_PIPELINE_SKILL_MAP CSV as the last completion plan read it.
- ``v_sync_status``: per learner and assessment, the latest attempt and where its completion stands.
- ``v_open_quarantine``: records held back, with the reason and how long they have waited.
- ``v_skill_ratings_current``: per learner and Degreed skill, the rating we last sent and its ledger state.
- ``v_drift_last_reconcile``: what the last nightly reconcile found.
- ``v_unmapped_skills``: iMocha skills without a mapping, while a mapping table is configured.

The views read the same on SQLite and PostgreSQL (same names, columns and meaning); the SQL differs only
where the dialects do (JSON, string splitting, time arithmetic). Timestamps taken from JSON payloads are
``timestamptz`` on PostgreSQL and ``YYYY-MM-DD HH:MM:SS`` UTC text on SQLite; booleans are 0/1 on SQLite.
The SQL is frozen here: a later change to a view is a new revision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = ("v_sync_status", "v_open_quarantine", "v_skill_ratings_current", "v_drift_last_reconcile",
         "v_unmapped_skills")


class _Postgres:
    INTEGER, BIGINT, FLOAT = "integer", "bigint", "double precision"

    @staticmethod
    def json(column: str, key: str, cast: str | None = None) -> str:
        text = f"(CAST({column} AS json) ->> '{key}')"
        if cast in ("integer", "bigint"):  # payloads may hold whole numbers as 123.0
            return f"CAST(CAST({text} AS numeric) AS {cast})"
        return f"CAST({text} AS {cast})" if cast else text

    @staticmethod
    def json_time(column: str, key: str) -> str:
        return f"CAST(CAST({column} AS json) ->> '{key}' AS timestamptz)"

    @staticmethod
    def before_bar(column: str) -> str:
        return f"split_part({column}, '|', 1)"

    @staticmethod
    def attempt_id(column: str) -> str:
        """The attempt id of a key ``attempt:{id}`` or ``attempt:{id}|skill:{skill id}`` (else NULL)."""
        return (f"CASE WHEN {column} ~ '^attempt:[0-9]+(\\||$)' "
                f"THEN CAST(substring({column} FROM '^attempt:([0-9]+)') AS bigint) END")

    @staticmethod
    def hours_since(column: str) -> str:
        return f"CAST(EXTRACT(EPOCH FROM (now() - {column})) / 3600.0 AS double precision)"

    @staticmethod
    def is_past(column: str) -> str:
        return f"({column} <= now())"


class _Sqlite:
    INTEGER, BIGINT, FLOAT = "INTEGER", "INTEGER", "REAL"

    @staticmethod
    def json(column: str, key: str, cast: str | None = None) -> str:
        text = f"json_extract({column}, '$.{key}')"
        return f"CAST({text} AS {cast})" if cast else text

    @staticmethod
    def json_time(column: str, key: str) -> str:
        return f"datetime(json_extract({column}, '$.{key}'))"

    @staticmethod
    def before_bar(column: str) -> str:
        return f"substr({column}, 1, instr({column}, '|') - 1)"

    @staticmethod
    def attempt_id(column: str) -> str:
        return (f"CASE WHEN {column} LIKE 'attempt:%' THEN CAST(substr({column}, 9, CASE WHEN instr({column}, '|') > 0 "
                f"THEN instr({column}, '|') - 9 ELSE length({column}) END) AS INTEGER) END")

    @staticmethod
    def hours_since(column: str) -> str:
        return f"((julianday('now') - julianday({column})) * 24.0)"

    @staticmethod
    def is_past(column: str) -> str:
        return f"(julianday({column}) <= julianday('now'))"


def view_sql(dialect: str) -> dict[str, str]:
    """The SELECT of every view for ``dialect`` ("postgresql" or "sqlite")."""
    d = _Postgres if dialect == "postgresql" else _Sqlite
    return {
        "v_sync_status": f"""
WITH attempts AS (
    SELECT c.*,
           lower(trim(c.learner_email)) AS learner_key,
           ROW_NUMBER() OVER (PARTITION BY lower(trim(c.learner_email)), c.test_id
                              ORDER BY c.attempted_on DESC NULLS LAST, c.test_invitation_id DESC) AS recency,
           COUNT(*) OVER (PARTITION BY lower(trim(c.learner_email)), c.test_id) AS attempt_count
    FROM imocha_completions c
),
latest AS (
    SELECT a.*, a.learner_key || '|imocha-' || CAST(a.test_id AS TEXT) AS completion_key
    FROM attempts a
    WHERE a.recency = 1
),
open_quarantine AS (
    SELECT record_key, kind, reason FROM sync_quarantine WHERE entity = 'completion' AND status = 'open'
)
SELECT l.learner_key AS learner_email,
       l.test_id,
       l.test_name,
       l.attempt_count AS attempts,
       l.test_invitation_id AS latest_test_invitation_id,
       l.status AS latest_status,
       l.attempted_on AS latest_attempted_on,
       l.score_percentage AS latest_score_percentage,
       l.completion_key AS record_key,
       g.state AS ledger_state,
       g.degreed_id,
       g.acknowledged_at,
       g.last_error,
       CASE WHEN g.state = 'acknowledged'
            THEN {d.json('g.payload', 'test_invitation_id', d.BIGINT)} END AS degreed_test_invitation_id,
       CASE WHEN g.state = 'acknowledged'
            THEN {d.json('g.payload', 'percentile', d.FLOAT)} END AS degreed_percentile,
       COALESCE(g.state = 'acknowledged'
                AND {d.json('g.payload', 'test_invitation_id', d.BIGINT)} = l.test_invitation_id,
                FALSE) AS latest_attempt_in_degreed,
       COALESCE(qa.kind, qc.kind) AS quarantine_kind,
       COALESCE(qa.reason, qc.reason) AS quarantine_reason,
       CASE WHEN COALESCE(qa.kind, qc.kind) IS NOT NULL THEN COALESCE(qa.kind, qc.kind)
            WHEN g.state = 'acknowledged' THEN 'synced'
            WHEN g.state IS NOT NULL THEN g.state
            ELSE 'not_sent' END AS sync_status
FROM latest l
LEFT JOIN sync_ledger g ON g.entity = 'completion' AND g.record_key = l.completion_key
LEFT JOIN open_quarantine qa ON qa.record_key = 'attempt:' || CAST(l.test_invitation_id AS TEXT)
LEFT JOIN open_quarantine qc ON qc.record_key = l.completion_key
""",
        "v_open_quarantine": f"""
SELECT q.entity,
       q.record_key,
       q.kind,
       q.reason,
       q.column_name,
       q.rule,
       q.bad_value,
       COALESCE(lower(trim(c.learner_email)),
                CASE WHEN q.record_key NOT LIKE 'attempt:%' AND q.record_key LIKE '%|%'
                     THEN {d.before_bar('q.record_key')} END) AS learner_email,
       c.test_invitation_id,
       c.test_id AS attempt_test_id,
       q.attempts,
       q.first_seen_at,
       q.last_seen_at,
       q.next_retry_at,
       {d.hours_since('q.first_seen_at')} AS age_hours,
       COALESCE(q.next_retry_at IS NOT NULL AND {d.is_past('q.next_retry_at')}, FALSE) AS retry_due,
       q.run_id
FROM (SELECT sq.*, {d.attempt_id('sq.record_key')} AS attempt_id
      FROM sync_quarantine sq
      WHERE sq.status = 'open') q
LEFT JOIN imocha_completions c ON c.test_invitation_id = q.attempt_id
""",
        "v_skill_ratings_current": f"""
SELECT {d.before_bar('g.record_key')} AS learner_email,
       {d.json('g.payload', 'skill_name')} AS skill_name,
       {d.json('g.payload', 'rating', d.INTEGER)} AS rating,
       {d.json('g.payload', 'percent', d.FLOAT)} AS percent,
       {d.json_time('g.payload', 'rated_at')} AS rated_at,
       {d.json('g.payload', 'test_invitation_id', d.BIGINT)} AS test_invitation_id,
       {d.json('g.payload', 'user_id')} AS degreed_user_id,
       {d.json('g.payload', 'user_identifier_type')} AS user_identifier_type,
       {d.json('g.payload', 'rating_type')} AS rating_type,
       g.state AS ledger_state,
       g.state = 'acknowledged' AS in_degreed,
       g.degreed_id,
       g.acknowledged_at,
       g.last_error,
       g.record_key
FROM sync_ledger g
WHERE g.entity = 'skill_rating'
""",
        "v_drift_last_reconcile": f"""
SELECT dr.entity,
       dr.kind,
       dr.record_key,
       CASE WHEN dr.entity IN ('completion', 'skill_rating') AND dr.record_key NOT LIKE 'degreed:%'
            THEN {d.before_bar('dr.record_key')} END AS learner_email,
       dr.degreed_id,
       dr.detail,
       dr.repaired,
       dr.found_at,
       dr.run_id
FROM sync_drift dr
WHERE dr.found_at = (SELECT MAX(found_at) FROM sync_drift)
""",
        "v_unmapped_skills": """
SELECT s.skill_name,
       COUNT(DISTINCT s.test_invitation_id) AS attempts,
       COUNT(DISTINCT lower(trim(s.learner_email))) AS learners,
       COUNT(DISTINCT s.test_id) AS tests,
       MIN(s.attempted_on) AS first_attempted_on,
       MAX(s.attempted_on) AS last_attempted_on
FROM imocha_skill_scores s
WHERE EXISTS (SELECT 1 FROM sync_state st WHERE st.name = 'skill_mapping')
  AND NOT EXISTS (SELECT 1 FROM skill_mapping m WHERE lower(m.imocha_skill) = lower(trim(s.skill_name)))
GROUP BY s.skill_name
""",
    }


def upgrade() -> None:
    op.create_table(
        "skill_mapping",
        sa.Column("imocha_skill_key", sa.String(length=512), nullable=False),
        sa.Column("imocha_skill", sa.Text(), nullable=False),
        sa.Column("degreed_skill", sa.Text(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("imocha_skill_key"),
    )
    for name, select in view_sql(op.get_context().dialect.name).items():
        op.execute(f"CREATE VIEW {name} AS {select.strip()}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("skill_mapping")
