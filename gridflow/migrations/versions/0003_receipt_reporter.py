"""Ingest receipts remember who submitted: a report accepted but not filed yet is shown only
to its reporter (and auditors). Older receipts have none ('').

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_receipts") as batch:
        batch.add_column(sa.Column("reporter", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ingest_receipts") as batch:
        batch.drop_column("reporter")
