"""History indexes: a run's cost follows its own attempts, not the size of the ledger, plan or quarantine.

- ``sync_plan.delivered_at``: when the ledger showed Degreed acknowledged exactly the plan row's values (set after
  each delivery, cleared by a later claim); the catch-up looks for outstanding records among unmarked rows only
  (``ix_sync_plan_outstanding``: entity, delivered_at, action), instead of every plan row ever staged. Rows
  already delivered when this revision runs are marked from the ledger.
- ``ix_sync_plan_plan_id``: an assessment plan's rows.
- ``ix_sync_ledger_entity_state``: an entity's ledger rows in one state (the few not acknowledged).
- ``ix_sync_quarantine_open``: an entity's open entries by kind and retry time (what waits, what is due).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The plan rows whose values the ledger shows acknowledged (the same test as ``sync/core/plan_store.delivered``).
_MARK_DELIVERED = """
UPDATE sync_plan SET delivered_at = (
    SELECT l.acknowledged_at FROM sync_ledger l
    WHERE l.entity = sync_plan.entity AND l.record_key = sync_plan.record_key)
WHERE EXISTS (
    SELECT 1 FROM sync_ledger l
    WHERE l.entity = sync_plan.entity AND l.record_key = sync_plan.record_key
      AND l.state = 'acknowledged' AND l.acknowledged_at IS NOT NULL
      AND coalesce(l.payload_hash, '') = coalesce(sync_plan.payload_hash, '')
      AND (coalesce(l.action, '') = 'retire') = (sync_plan.action = 'retire'))
"""


def upgrade() -> None:
    with op.batch_alter_table("sync_plan", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_sync_plan_outstanding", ["entity", "delivered_at", "action"], unique=False)
        batch_op.create_index("ix_sync_plan_plan_id", ["plan_id"], unique=False)
    op.execute(_MARK_DELIVERED)

    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_sync_ledger_entity_state", ["entity", "state"], unique=False)

    with op.batch_alter_table("sync_quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_sync_quarantine_open", ["entity", "status", "kind", "next_retry_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sync_quarantine", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_quarantine_open")

    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_ledger_entity_state")

    with op.batch_alter_table("sync_plan", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_plan_plan_id")
        batch_op.drop_index("ix_sync_plan_outstanding")
        batch_op.drop_column("delivered_at")
