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
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
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
    Column("request_hash", String(64), nullable=False),  # the report part / form fields
    Column("photos_hash", String(64), nullable=False, default=""),  # the photos' sha256 list
    Column("response", Text, nullable=False),  # the JSON body answered
    Column("created_at", DateTime(timezone=True), nullable=False),  # event clock
    Column("claimed_at", Float, nullable=False),  # wall clock epoch: the claim's lease
)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class Receipt:
    report_id: str
    state: str
    request_hash: str
    photos_hash: str
    response: dict[str, Any]

    def matches(self, request_hash: str, photos_hash: str | None = None) -> bool:
        if request_hash != self.request_hash:
            return False
        return photos_hash is None or photos_hash == self.photos_hash


@dataclass(frozen=True)
class Claim:
    won: bool  # True: this request holds the claim and must complete or release it
    receipt: Receipt | None  # the existing receipt when not won


def _row_to_receipt(row: Any) -> Receipt:
    return Receipt(row.report_id, row.state, row.request_hash, row.photos_hash,
                   json.loads(row.response))


def get(engine: Engine, report_id: str) -> Receipt | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(ingest_receipts).where(ingest_receipts.c.report_id == report_id)
        ).first()
    return _row_to_receipt(row) if row else None


def claim(engine: Engine, report_id: str, request_hash: str, response: dict[str, Any],
          created_at: datetime, lease_s: float = 120.0) -> Claim:
    """Insert a pending receipt. If one exists: take it over when its lease ran out
    (pending only), else hand it back so the caller can replay or refuse."""
    now = time.time()
    body = json.dumps(response, ensure_ascii=False, sort_keys=True)
    try:
        with engine.begin() as conn:
            conn.execute(insert(ingest_receipts).values(
                report_id=report_id, state=PENDING, request_hash=request_hash, photos_hash="",
                response=body, created_at=created_at, claimed_at=now,
            ))
        return Claim(True, None)
    except IntegrityError:
        pass
    with engine.begin() as conn:
        taken = conn.execute(
            update(ingest_receipts)
            .where(ingest_receipts.c.report_id == report_id)
            .where(ingest_receipts.c.state == PENDING)
            .where(ingest_receipts.c.request_hash == request_hash)
            .where(ingest_receipts.c.claimed_at < now - lease_s)
            .values(claimed_at=now)
        ).rowcount
    if taken == 1:
        return Claim(True, None)
    existing = get(engine, report_id)
    if existing is None:  # released between our insert and read: try once more
        return claim(engine, report_id, request_hash, response, created_at, lease_s)
    return Claim(False, existing)


def complete(engine: Engine, report_id: str, photos_hash: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ingest_receipts)
            .where(ingest_receipts.c.report_id == report_id)
            .values(state=DONE, photos_hash=photos_hash)
        )


def release(engine: Engine, report_id: str) -> None:
    """Forget a pending claim after a failed request, so the client's retry starts afresh."""
    with engine.begin() as conn:
        conn.execute(
            delete(ingest_receipts)
            .where(ingest_receipts.c.report_id == report_id)
            .where(ingest_receipts.c.state == PENDING)
        )
