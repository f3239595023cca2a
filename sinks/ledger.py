"""The ledger side of folding an event: the case's hash-chain position and the ledger row.

Guarantee: an event is recorded as it was written (its data and its hash, gridflow.contract
.envelope_hash, computed by the caller), whether or not this build knows its type; a break in
a case's chain (a seq out of turn, a prev_hash that is not the previous event's hash) is
flagged on the case row at the first seq it shows, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gridflow.contract import CommandRefused, Message, Payload


@dataclass(frozen=True)
class Position:
    """Where an event was read from (kept in the ledger)."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


def advance_chain(case: dict[str, Any], m: Message, digest: str, at: datetime) -> None:
    """Move the case row's chain position to `m` (hash `digest`), flagging a broken link."""
    if case["chain_broken_at_seq"] is None and (
        m.seq != case["last_seq"] + 1 or m.prev_hash != case["last_hash"]
    ):
        case["chain_broken_at_seq"] = m.seq
    if m.seq >= case["last_seq"]:
        case["last_seq"], case["last_hash"] = m.seq, digest
    case["event_count"] += 1
    case["updated_at"] = at


def ledger_row(m: Message, at: datetime, digest: str, where: Position) -> dict[str, Any]:
    """The case_events row of `m`: the event as written, its hash and where it was read."""
    return {
        "event_id": m.id,
        "case_id": m.case_id,
        "seq": m.seq,
        "type": m.type,
        "at": at,
        "actor": m.actor,
        "data": m.data,
        "schema": m.schema,
        "causation_id": m.causation_id,
        "prev_hash": m.prev_hash,
        "hash": digest,
        "topic": where.topic,
        "partition": where.partition,
        "offset": where.offset,
    }


def command_id(m: Message, body: Payload | None) -> str:
    """The command an event answers: a refusal names it, any other event is caused by it."""
    if isinstance(body, CommandRefused):
        return body.command_id or m.causation_id
    return m.causation_id
