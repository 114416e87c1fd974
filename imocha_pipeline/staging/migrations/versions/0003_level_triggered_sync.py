"""Level-triggered sync: the source attempt of plan and ledger rows, plan ids, and unplanned attempts.

- ``sync_plan.source_id/source_at/source_day``: the iMocha attempt a completion or skill rating row was planned
  from; a row is replaced only by a plan of the same or a later attempt. ``sync_plan.plan_id``: the assessment
  plan the rows belong to (the apply step sends only the plan the guard approved).
- ``sync_ledger.source_id/source_at``: the attempt of what Degreed holds or what is in flight; a claim carrying an
  older attempt is refused.
- ``desired_assessments.title_note``: why a title differs from the iMocha name (HTML tags removed).
- ``imocha_completions.planned_at``: when a plan last took the attempt into account. Rows staged before this
  revision were planned by the run that staged them: they get their ``extracted_at``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("desired_assessments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title_note", sa.Text(), nullable=True))

    with op.batch_alter_table("imocha_completions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_imocha_completions_unplanned", ["planned_at", "attempt_date"], unique=False)
    op.execute("UPDATE imocha_completions SET planned_at = extracted_at")

    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("source_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("sync_plan", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("source_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("source_day", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("plan_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_sync_plan_entity_source_day", ["entity", "source_day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sync_plan", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_plan_entity_source_day")
        batch_op.drop_column("plan_id")
        batch_op.drop_column("source_day")
        batch_op.drop_column("source_at")
        batch_op.drop_column("source_id")

    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.drop_column("source_at")
        batch_op.drop_column("source_id")

    with op.batch_alter_table("imocha_completions", schema=None) as batch_op:
        batch_op.drop_index("ix_imocha_completions_unplanned")
        batch_op.drop_column("planned_at")

    with op.batch_alter_table("desired_assessments", schema=None) as batch_op:
        batch_op.drop_column("title_note")
