"""The notifier's own tables: one send state per notice, and the notifier's Kafka positions.

Guarantee: separate from the read models (own metadata: `create_notify_tables` makes only
these, `sinks.models.drop_schema` never touches them), same types on SQLite and PostgreSQL;
a notice row is keyed by its id (event id + recipient), so an event is taken in at most once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Engine, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sinks.models import JSONType, UTCDateTime

PENDING = "pending"  # not tried yet
RETRYING = "retrying"  # failed at least once; tried again at next_attempt_at
SENT = "sent"  # delivered (a 2xx from the webhook, or logged)
STATUSES = (PENDING, RETRYING, SENT)
STATUS_ZH = {PENDING: "待发送", RETRYING: "发送失败, 等待重试", SENT: "已送达"}


class NotifyBase(DeclarativeBase):
    pass


class Notification(NotifyBase):
    """A notice to a department and its send state (FixMyStreet's send_fail_count & co.)."""

    __tablename__ = "notifications"

    notice_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(80), default="")
    kind: Mapped[str] = mapped_column(String(24))  # gridflow.core.notify kinds
    recipient: Mapped[str] = mapped_column(String(64))  # department code (or level:<code>)
    payload: Mapped[Any] = mapped_column(JSONType)  # what the webhook receives
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fail_count: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[str | None] = mapped_column(Text)  # the last failure's reason
    method: Mapped[str | None] = mapped_column(String(16))  # used at the last attempt
    target: Mapped[str | None] = mapped_column(Text)  # URL (webhook) used at the last attempt
    event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None once sent
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_task_kind", "task_id", "kind"),
        Index("ix_notifications_recipient", "recipient", "status"),
    )


class NotifyOffset(NotifyBase):
    """Where a notifier resumes on each partition: written with the notices it took in."""

    __tablename__ = "notify_offsets"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


NOTIFICATIONS = cast(Table, Notification.__table__)
NOTIFY_OFFSETS = cast(Table, NotifyOffset.__table__)


def create_notify_tables(engine: Engine) -> None:
    """The notifier's tables (durable: migrated with the others by gridflow.durable; idempotent,
    two processes at once take turns)."""
    from gridflow import durable

    durable.upgrade(engine)
