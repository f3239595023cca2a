"""Ingest receipts: the API's memory of which report ids it has accepted, and what it answered.

Guarantee: at most one request at a time holds the claim on a report id (the primary key
decides), and a report id answered once is answered the same way forever. A claim whose
holder died (no completion within `lease_s`) can be taken over by the next retry; the event
it may already have published has a deterministic id, so a second publish is a duplicate
the pipeline drops.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

PENDING = "pending"
DONE = "done"

metadata = MetaData()

ingest_receipts = Table(
    "ingest_receipts",
    metadata,
    Column("report_id", String(128), primary_key=True),
    Column("state", String(16), nullable=False),  # pending | done
    # The ticket number answered (intake.case_id_for): residents look their request up by it.
    Column("ticket", String(64), nullable=False, index=True),
    Column("request_hash", String(64), nullable=False),  # the report part / form fields
    Column("photos_hash", String(64), nullable=False, default=""),  # the photos' sha256 list
    Column("response", Text, nullable=False),  # the JSON body answered
    Column("created_at", DateTime(timezone=True), nullable=False),  # event clock
    Column("claimed_at", Float, nullable=False),  # wall clock epoch: the claim's lease
    # Who submitted (the reporter's actor; '' for residents and older receipts): a report not
    # filed yet is shown to its reporter only (gridflow/migrations 0003).
    Column("reporter", String(128), nullable=False, default=""),
)


def create_tables(engine: Engine) -> None:
    """The durable tables, this one included, at this build's revision (gridflow.durable)."""
    from gridflow import durable

    durable.upgrade(engine)


# Every write below is one statement, so each runs on its own in autocommit: one round trip,
# instead of BEGIN, the statement and COMMIT. The statements are built once (SQLAlchemy then
# takes each one's compiled form from its cache without working out a cache key per call).
_r = ingest_receipts.c
_INSERT = insert(ingest_receipts)
_GET = select(ingest_receipts).where(_r.report_id == bindparam("rid"))
_BY_TICKET = select(ingest_receipts).where(_r.ticket == bindparam("t")).limit(1)
_TAKE_OVER = (
    update(ingest_receipts)
    .where(_r.report_id == bindparam("rid"))
    .where(_r.state == PENDING)
    .where(_r.claimed_at < bindparam("expired_before"))
    .values(claimed_at=bindparam("now"))
)
_COMPLETE = (
    update(ingest_receipts)
    .where(_r.report_id == bindparam("rid"))
    .values(state=DONE, photos_hash=bindparam("ph"))
)
_EXPIRE = (
    update(ingest_receipts)
    .where(_r.report_id == bindparam("rid"))
    .where(_r.state == PENDING)
    .values(claimed_at=0.0)
)
_EXPIRE_KNOWN = _EXPIRE.values(photos_hash=bindparam("ph"))
_RELEASE = delete(ingest_receipts).where(_r.report_id == bindparam("rid")).where(
    _r.state == PENDING
)


def _autocommit(engine: Engine) -> Connection:
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


class ClaimLost(Exception):
    """The receipt in the way vanished while we looked (its holder gave up): retry."""


@dataclass(frozen=True)
class Receipt:
    report_id: str
    state: str
    request_hash: str
    photos_hash: str
    response: Any  # the JSON body answered
    created_at: datetime
    reporter: str = ""

    def same_photos(self, photos_hash: str) -> bool:
        """Whether a retry carries the photos this receipt was written for ('' = not known yet)."""
        return not self.photos_hash or self.photos_hash == photos_hash


@dataclass(frozen=True)
class Claim:
    won: bool  # True: this request holds the claim and must complete, expire or release it
    # When won: None for a fresh claim, or the receipt taken over (publish exactly its answer,
    # with its time). When not won: the receipt in the way (replay it, wait, or refuse).
    receipt: Receipt | None


def _row_to_receipt(row: Any) -> Receipt:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Receipt(
        row.report_id,
        row.state,
        row.request_hash,
        row.photos_hash,
        json.loads(row.response),
        created,
        row.reporter or "",
    )


def get(engine: Engine, report_id: str) -> Receipt | None:
    with _autocommit(engine) as conn:
        row = conn.execute(_GET, {"rid": report_id}).first()
    return _row_to_receipt(row) if row else None


def by_ticket(engine: Engine, ticket: str) -> Receipt | None:
    with _autocommit(engine) as conn:
        row = conn.execute(_BY_TICKET, {"t": ticket}).first()
    return _row_to_receipt(row) if row else None


def claim(
    engine: Engine,
    report_id: str,
    ticket: str,
    request_hash: str,
    response: Any,
    created_at: datetime,
    lease_s: float = 120.0,
    reporter: str = "",
) -> Claim:
    """Insert a pending receipt. If one exists: take it over when its lease ran out
    (pending only), else hand it back so the caller can replay or refuse."""
    now = time.time()
    body = json.dumps(response, ensure_ascii=False, sort_keys=True)
    with _autocommit(engine) as conn:
        try:
            conn.execute(
                _INSERT,
                {
                    "report_id": report_id,
                    "state": PENDING,
                    "ticket": ticket,
                    "request_hash": request_hash,
                    "photos_hash": "",
                    "response": body,
                    "created_at": created_at,
                    "claimed_at": now,
                    "reporter": reporter,
                },
            )
            return Claim(True, None)
        except IntegrityError:
            pass
        row = conn.execute(_GET, {"rid": report_id}).first()
        if row is None:  # released between our insert and read: the next retry claims it
            raise ClaimLost(report_id)
        existing = _row_to_receipt(row)
        if existing.state == PENDING and existing.request_hash == request_hash:
            taken = conn.execute(
                _TAKE_OVER, {"rid": report_id, "expired_before": now - lease_s, "now": now}
            ).rowcount
            if taken == 1:
                return Claim(True, existing)
    return Claim(False, existing)


def complete(engine: Engine, report_id: str, photos_hash: str) -> None:
    with _autocommit(engine) as conn:
        conn.execute(_COMPLETE, {"rid": report_id, "ph": photos_hash})


def expire(engine: Engine, report_id: str, photos_hash: str = "") -> None:
    """End a pending claim's lease now, keeping its answer: the publish may have reached the log,
    so the retry must take the claim over and publish the very same event again. The photos
    it was published with are recorded (never forgotten once known)."""
    with _autocommit(engine) as conn:
        if photos_hash:
            conn.execute(_EXPIRE_KNOWN, {"rid": report_id, "ph": photos_hash})
        else:
            conn.execute(_EXPIRE, {"rid": report_id})


def release(engine: Engine, report_id: str) -> None:
    """Forget a pending claim after a failed request, so the client's retry starts afresh."""
    with _autocommit(engine) as conn:
        conn.execute(_RELEASE, {"rid": report_id})
