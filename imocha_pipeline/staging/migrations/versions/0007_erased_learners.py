"""Right to erasure: the learners erased with ``imocha-pipeline forget``.

- ``erased_learners``: one row per erased learner, keyed by the HMAC-SHA256 of the normalised email (the key is the
  setting IMOCHA_PIPELINE_ERASURE_KEY; the email itself is not stored), when it was erased and, when an operator
  lifted the erasure (``forget --undo``), when; and when iMocha accepted the request to mask the candidate
  (``--in-imocha``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_learners",
        sa.Column("email_hmac", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("masked_in_imocha_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email_hmac"),
    )


def downgrade() -> None:
    op.drop_table("erased_learners")
