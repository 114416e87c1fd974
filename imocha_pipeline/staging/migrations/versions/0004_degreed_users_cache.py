"""Degreed users cache: Degreed's read answers name a learner only by the Degreed user id, so the pipeline keeps
the mapping from its users endpoint (``degreed_users``: Degreed id, email, employee id), refreshed on a miss; the
snapshots of completions and skill ratings keep the Degreed ids next to the mapped email and external id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "degreed_users",
        sa.Column("degreed_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("employee_id", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("degreed_id"),
    )
    op.create_index("ix_degreed_users_email", "degreed_users", ["email"])
    op.create_index("ix_degreed_users_employee_id", "degreed_users", ["employee_id"])
    with op.batch_alter_table("degreed_completions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("degreed_user_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("degreed_content_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("degreed_skill_ratings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("degreed_user_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("degreed_skill_ratings", schema=None) as batch_op:
        batch_op.drop_column("degreed_user_id")
    with op.batch_alter_table("degreed_completions", schema=None) as batch_op:
        batch_op.drop_column("degreed_content_id")
        batch_op.drop_column("degreed_user_id")
    op.drop_index("ix_degreed_users_employee_id", table_name="degreed_users")
    op.drop_index("ix_degreed_users_email", table_name="degreed_users")
    op.drop_table("degreed_users")
