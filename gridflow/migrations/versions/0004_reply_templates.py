"""Reply templates (常用回复) of each department: configuration its head keeps, which staff pick
from to fill progress notes and resolutions (as FixMyStreet's response templates).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reply_templates",
        sa.Column("template_id", sa.String(32), primary_key=True),
        sa.Column("department", sa.String(64), nullable=False, index=True),
        sa.Column("title", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # progress | resolve | any
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reply_templates")
