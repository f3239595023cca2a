"""Who read whose personal data: every unmasked view of a case's residents' names and phone
numbers is a `PersonalDataRead` record on the access-log topic (key: case id), written before
the data is shown (acks=all); auditors list the records per case or per person.

Guarantee: when the record cannot be written, the data is not shown unmasked (the caller gets
the masked view and is told why). Times are wall-clock.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accounts.roles import Principal
from gridflow import topics
from gridflow.clock import wall_clock
from gridflow.events import Message, decode_message, iso

log = logging.getLogger(__name__)

PERSONAL_DATA_READ = "PersonalDataRead"


@dataclass
class AccessLog:
    """Writes access records through `publisher` (producers.publisher.Publisher) to the topic
    of `prefix`; reads them back from `bootstrap`."""

    publisher: Any
    bootstrap: str
    prefix: str
    clock: Callable[[], datetime] = wall_clock

    @property
    def topic(self) -> str:
        return topics.ACCESS_LOG.name(self.prefix)

    def record(self, caller: Principal, case_id: str, fields: list[str], route: str,
               client: str) -> bool:
        """Write who read which personal data of the case; False if the log is unavailable."""
        msg = Message(
            id=uuid.uuid4().hex, type=PERSONAL_DATA_READ, case_id=case_id, at=iso(self.clock()),
            actor=f"account:{caller.account_id}",
            data={"account_id": caller.account_id, "name": caller.name, "via": caller.via,
                  "roles": [{"role": g.role, "scope": g.scope} for g in caller.grants],
                  "fields": list(fields), "route": route, "client": client})
        try:
            self.publisher.publish(self.topic, case_id, msg)
        except Exception as exc:  # noqa: BLE001 - any failure: the data stays masked
            log.warning("access log unavailable, personal data of %s stays masked: %s",
                        case_id, exc)
            return False
        return True

    def entries(self, case_id: str | None = None, account_id: str | None = None,
                limit: int = 1000, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The records, oldest first, of one case and/or one person (at most `limit`, newest
        kept)."""
        return read_entries(self.bootstrap, self.topic, case_id, account_id, limit, timeout_s)


def read_entries(bootstrap: str, topic: str, case_id: str | None = None,
                 account_id: str | None = None, limit: int = 1000,
                 timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every record of the topic up to its current end, filtered."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=500)
    out: list[dict[str, Any]] = []
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp]
                                                  for tp in partitions):
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    entry = _entry(record.value)
                    if entry is None:
                        continue
                    if case_id is not None and entry["case_id"] != case_id:
                        continue
                    if account_id is not None and entry["account_id"] != account_id:
                        continue
                    out.append(entry)
    finally:
        consumer.close()
    out.sort(key=lambda e: e["at"])
    return out[-limit:]


def _entry(raw: bytes) -> dict[str, Any] | None:
    try:
        msg = decode_message(raw)
    except Exception:  # noqa: BLE001 - not ours: skipped
        return None
    if msg.type != PERSONAL_DATA_READ:
        return None
    return {"id": msg.id, "at": msg.at, "case_id": msg.case_id, **msg.data}


