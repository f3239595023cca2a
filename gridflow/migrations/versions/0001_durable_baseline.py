"""The durable tables as they were before migrations: ingest receipts and the notifier's tables.

Databases from before Alembic already hold these (made by create_all): each table is created
only when missing, so such a database is adopted as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# sinks.models.UTCDateTime and JSONType as stored: timestamptz / JSONB on PostgreSQL, fixed-width
# UTC text / JSON text on SQLite.
UTC_TS = sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing("ingest_receipts"):
        op.create_table(
            "ingest_receipts",
            sa.Column("report_id", sa.String(128), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("ticket", sa.String(64), nullable=False),
            sa.Column("request_hash", sa.String(64), nullable=False),
            sa.Column("photos_hash", sa.String(64), nullable=False),
            sa.Column("response", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("claimed_at", sa.Float, nullable=False),
        )
        op.create_index("ix_ingest_receipts_ticket", "ingest_receipts", ["ticket"])
    if _missing("notifications"):
        op.create_table(
            "notifications",
            sa.Column("notice_id", sa.String(32), primary_key=True),
            sa.Column("event_id", sa.String(64), nullable=False),
            sa.Column("event_type", sa.String(40), nullable=False),
            sa.Column("case_id", sa.String(64), nullable=False),
            sa.Column("task_id", sa.String(80), nullable=False),
            sa.Column("kind", sa.String(24), nullable=False),
            sa.Column("recipient", sa.String(64), nullable=False),
            sa.Column("payload", JSON),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("fail_count", sa.Integer, nullable=False),
            sa.Column("last_failure", sa.Text),
            sa.Column("method", sa.String(16)),
            sa.Column("target", sa.Text),
            sa.Column("event_at", UTC_TS, nullable=False),
            sa.Column("created_at", UTC_TS, nullable=False),
            sa.Column("last_attempt_at", UTC_TS),
            sa.Column("next_attempt_at", UTC_TS),
            sa.Column("sent_at", UTC_TS),
        )
        op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
        op.create_index("ix_notifications_task_kind", "notifications", ["task_id", "kind"])
        op.create_index("ix_notifications_recipient", "notifications", ["recipient", "status"])
    if _missing("notify_offsets"):
        op.create_table(
            "notify_offsets",
            sa.Column("consumer", sa.String(128), primary_key=True),
            sa.Column("topic", sa.String(255), primary_key=True),
            sa.Column("partition", sa.Integer, primary_key=True),
            sa.Column("next_offset", sa.BigInteger, nullable=False),
            sa.Column("updated_at", UTC_TS),
        )


def downgrade() -> None:
    op.drop_table("notify_offsets")
    op.drop_table("notifications")
    op.drop_table("ingest_receipts")
