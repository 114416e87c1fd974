"""The staging schema as it stood when migrations began: every table, written out.

Databases created before migrations (by ``metadata.create_all``) have exactly these tables; ``imocha-pipeline
db upgrade`` records this revision for them without touching the tables, then upgrades.

Types: timestamps are ``DateTime(timezone=True)`` (the models' ``UtcDateTime``), JSON is stored as ``Text``
(the models' ``JsonText``), so every backend and every analyst tool reads them the same way.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "imocha_assessments",
        sa.Column("test_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("test_name", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("question_count", sa.Integer(), nullable=True),
        _json("labels"),
        _json("sections"),
        sa.Column("test_link_id", sa.BigInteger(), nullable=True),
        sa.Column("test_link_key", sa.Text(), nullable=True),
        sa.Column("test_link_url", sa.Text(), nullable=True),
        _ts("extracted_at", nullable=False),
        sa.PrimaryKeyConstraint("test_id"),
    )

    op.create_table(
        "degreed_assessments",
        sa.Column("degreed_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("duration_type", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("obsolete", sa.Boolean(), nullable=True),
        sa.Column("provider_code", sa.Text(), nullable=True),
        _ts("modified_at"),
        _ts("snapshot_at", nullable=False),
        sa.PrimaryKeyConstraint("degreed_id"),
    )
    op.create_index("ix_degreed_assessments_external_id", "degreed_assessments", ["external_id"])

    op.create_table(
        "desired_assessments",
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("test_id", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("duration_type", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        _ts("computed_at", nullable=False),
        sa.PrimaryKeyConstraint("external_id"),
    )
    op.create_index("ix_desired_assessments_test_id", "desired_assessments", ["test_id"])

    op.create_table(
        "imocha_completions",
        sa.Column("test_invitation_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("test_id", sa.BigInteger(), nullable=True),
        sa.Column("test_name", sa.Text(), nullable=True),
        sa.Column("learner_email", sa.Text(), nullable=True),
        sa.Column("learner_name", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        _ts("attempted_on"),
        sa.Column("attempt_date", sa.Date(), nullable=True),
        sa.Column("score_percentage", sa.Float(), nullable=True),
        sa.Column("candidate_points", sa.Float(), nullable=True),
        sa.Column("total_points", sa.Float(), nullable=True),
        sa.Column("performance_category", sa.Text(), nullable=True),
        sa.Column("time_taken_seconds", sa.Integer(), nullable=True),
        sa.Column("has_skills", sa.Boolean(), nullable=True),
        _ts("extracted_at", nullable=False),
        sa.PrimaryKeyConstraint("test_invitation_id"),
    )
    op.create_index("ix_imocha_completions_test_id", "imocha_completions", ["test_id"])
    op.create_index("ix_imocha_completions_learner_email", "imocha_completions", ["learner_email"])
    op.create_index("ix_imocha_completions_attempt_date", "imocha_completions", ["attempt_date"])

    op.create_table(
        "imocha_skill_scores",
        sa.Column("test_invitation_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("skill_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("skill_name", sa.Text(), nullable=True),
        sa.Column("learner_email", sa.Text(), nullable=True),
        sa.Column("test_id", sa.BigInteger(), nullable=True),
        _ts("attempted_on"),
        sa.Column("attempt_date", sa.Date(), nullable=True),
        sa.Column("points", sa.Float(), nullable=True),
        sa.Column("max_points", sa.Float(), nullable=True),
        sa.Column("percent", sa.Float(), nullable=True),
        _ts("extracted_at", nullable=False),
        sa.PrimaryKeyConstraint("test_invitation_id", "skill_id"),
    )
    op.create_index("ix_imocha_skill_scores_learner_email", "imocha_skill_scores", ["learner_email"])
    op.create_index("ix_imocha_skill_scores_attempt_date", "imocha_skill_scores", ["attempt_date"])

    op.create_table(
        "degreed_completions",
        sa.Column("degreed_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("employee_id", sa.Text(), nullable=True),
        sa.Column("content_id", sa.Text(), nullable=True),
        _ts("completed_at"),
        sa.Column("percentile", sa.Float(), nullable=True),
        _ts("added_at"),
        _ts("snapshot_at", nullable=False),
        sa.PrimaryKeyConstraint("degreed_id"),
    )
    op.create_index("ix_degreed_completions_user_id", "degreed_completions", ["user_id"])
    op.create_index("ix_degreed_completions_content_id", "degreed_completions", ["content_id"])

    op.create_table(
        "degreed_skill_ratings",
        sa.Column("degreed_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("employee_id", sa.Text(), nullable=True),
        sa.Column("skill_name", sa.Text(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rating_type", sa.Text(), nullable=True),
        _ts("rated_at"),
        _ts("snapshot_at", nullable=False),
        sa.PrimaryKeyConstraint("degreed_id"),
    )
    op.create_index("ix_degreed_skill_ratings_user_id", "degreed_skill_ratings", ["user_id"])
    op.create_index("ix_degreed_skill_ratings_skill_name", "degreed_skill_ratings", ["skill_name"])

    op.create_table(
        "sync_ledger",
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=512), nullable=False),
        sa.Column("degreed_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        _json("payload"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        _ts("claimed_at"),
        _ts("acknowledged_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("entity", "record_key"),
    )
    op.create_index("ix_sync_ledger_degreed_id", "sync_ledger", ["degreed_id"])
    op.create_index("ix_sync_ledger_state", "sync_ledger", ["state"])

    op.create_table(
        "sync_quarantine",
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=True),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("bad_value", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        _ts("first_seen_at", nullable=False),
        _ts("last_seen_at", nullable=False),
        _ts("next_retry_at"),
        _ts("resolved_at"),
        sa.PrimaryKeyConstraint("entity", "record_key"),
    )
    op.create_index("ix_sync_quarantine_status", "sync_quarantine", ["status"])

    op.create_table(
        "sync_plan",
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=512), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _json("changed_fields"),
        sa.Column("degreed_id", sa.String(length=64), nullable=True),
        _json("payload"),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        _ts("planned_at", nullable=False),
        sa.PrimaryKeyConstraint("entity", "record_key"),
    )
    op.create_index("ix_sync_plan_action", "sync_plan", ["action"])

    op.create_table(
        "sync_state",
        sa.Column("name", sa.String(length=128), nullable=False),
        _json("value"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "sync_drift",
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("degreed_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        _ts("found_at", nullable=False),
        sa.PrimaryKeyConstraint("entity", "record_key", "kind"),
    )

    op.create_table(
        "callback_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("test_invitation_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        _json("payload"),
        _ts("received_at", nullable=False),
        _ts("processed_at"),
        sa.Column("run_key", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_callback_inbox_test_invitation_id", "callback_inbox", ["test_invitation_id"])

    op.create_table(
        "rate_budget",
        sa.Column("name", sa.String(length=200), nullable=False),
        _json("sent"),
        sa.Column("paused_until", sa.Float(), nullable=False),
        _json("waiting"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


TABLES = ("rate_budget", "callback_inbox", "sync_drift", "sync_state", "sync_plan", "sync_quarantine", "sync_ledger",
          "degreed_skill_ratings", "degreed_completions", "imocha_skill_scores", "imocha_completions",
          "desired_assessments", "degreed_assessments", "imocha_assessments")


def downgrade() -> None:
    for table in TABLES:  # their indexes go with them
        op.drop_table(table)
