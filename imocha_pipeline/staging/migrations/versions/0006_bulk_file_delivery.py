"""Bulk file delivery: a ledger row can say its record went to Degreed in a Completions Template file.

- ``sync_ledger.file_name``: the file (``{Client}_Completions_File_YYYYMMDDHHMMSS.csv``) that carried the record
  while the row is ``sent_by_file``; kept after Degreed's confirmation, for the audit trail.
- ``sync_ledger.file_sent_at``: when that file was handed over (written to the directory or uploaded over SFTP);
  the grace period before a record Degreed did not take is sent again by API counts from it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("file_name", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("file_sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_ledger", schema=None) as batch_op:
        batch_op.drop_column("file_sent_at")
        batch_op.drop_column("file_name")
