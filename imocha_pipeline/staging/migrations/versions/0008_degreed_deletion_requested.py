"""Right to erasure, level-triggered in Degreed: ``erased_learners.degreed_deletion_requested_at``.

Set when an erasure asks for the learner's records to be deleted in Degreed (``forget --in-degreed``); from then on
each reconcile deletes what is still there (a delete that failed, a record written back by a run in flight), until
the erasure is lifted. Learners erased before this revision count as asked where the ledger shows one of their
records deleted in Degreed (the only trace the request left).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("erased_learners") as batch:
        batch.add_column(sa.Column("degreed_deletion_requested_at", sa.DateTime(timezone=True), nullable=True))
    erased = sa.table("erased_learners", sa.column("email_hmac", sa.String), sa.column("erased_at", sa.DateTime),
                      sa.column("lifted_at", sa.DateTime),
                      sa.column("degreed_deletion_requested_at", sa.DateTime))
    ledger = sa.table("sync_ledger", sa.column("record_key", sa.String), sa.column("state", sa.String))
    deleted_one = sa.exists().where(ledger.c.state == "deleted",
                                    ledger.c.record_key.like(sa.literal("erased:") + erased.c.email_hmac + "|%"))
    op.execute(erased.update().where(erased.c.lifted_at.is_(None), deleted_one).values(
        degreed_deletion_requested_at=erased.c.erased_at))


def downgrade() -> None:
    with op.batch_alter_table("erased_learners") as batch:
        batch.drop_column("degreed_deletion_requested_at")
