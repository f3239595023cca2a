"""Hash-chain verification: each case's events in log order, and the ledger against the log.

Pure. Guarantee: every event of the log is checked once, streaming (memory grows with the
number of cases plus one small index entry per event), and every break is reported with its
case id, seq, event id and log position: an event altered, removed or inserted in the log, a
chain link broken, or a ledger row that no longer hashes to what it stored. Exact redeliveries
(same id, same content) are counted, not reported: at-least-once delivery makes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gridflow.events import Message, SchemaError, decode_message, envelope_hash, iso

# Finding kinds (stable codes; tests and scripts match on them).
FIRST_NOT_ONE = "chain_start"  # a case's first event in the log is not seq 1 / has a prev_hash
SEQ_GAP = "seq_gap"  # seq jumps: events between are missing from the log
SEQ_REPEAT = "seq_repeat"  # seq at or below the previous one with another id: inserted
LINK_BROKEN = "link_broken"  # prev_hash is not the hash of the previous event
DUPLICATE_CONFLICT = "duplicate_conflict"  # one event id twice with different content
ALTERED = "altered"  # the log's event hashes differently from what the live sink applied
REMOVED = "removed"  # in the ledger (the live sink applied it), gone from the log
NOT_IN_LEDGER = "not_in_ledger"  # in the log, never applied by the live sink
LEDGER_EDITED = "ledger_edited"  # a ledger row's content does not hash to its stored hash

KIND_ZH = {
    FIRST_NOT_ONE: "链首缺失",
    SEQ_GAP: "序号断档(事件缺失)",
    SEQ_REPEAT: "序号重复(事件插入)",
    LINK_BROKEN: "哈希链断裂",
    DUPLICATE_CONFLICT: "同一事件内容不一致",
    ALTERED: "事件被篡改",
    REMOVED: "事件被删除",
    NOT_IN_LEDGER: "事件不在账本中",
    LEDGER_EDITED: "账本记录被修改",
}


@dataclass(frozen=True)
class Finding:
    kind: str
    case_id: str
    seq: int | None
    event_id: str
    where: str  # log position "p<partition>@<offset>", or "ledger"
    detail: str  # English detail; KIND_ZH gives the Chinese headline

    def render(self) -> str:
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return (
            f"案件 case {self.case_id or '?'}{seq} [{self.where}] "
            f"{KIND_ZH.get(self.kind, self.kind)} / {self.kind}: {self.detail}"
        )


@dataclass(frozen=True)
class _Seen:
    hash: str
    case_id: str
    seq: int
    type: str
    where: str


@dataclass
class ChainReport:
    cases: int = 0
    events: int = 0
    duplicates: int = 0  # exact redeliveries, harmless
    ledger_rows: int = 0
    findings: list[Finding] = field(default_factory=list)
    # records of the case-events topic that are no event: dead letters (the read models hold
    # them, so the table comparison covers them), listed, not findings
    undecodable: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


def position(partition: int, offset: int) -> str:
    return f"p{partition}@{offset}"


class ChainVerifier:
    """Feed the case-events records in log order (per partition); then compare the ledger."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, str, str]] = {}  # case -> (seq, hash, event id)
        self._index: dict[str, _Seen] = {}
        self.report = ChainReport()

    def feed(self, partition: int, offset: int, value: bytes | None) -> None:
        where = position(partition, offset)
        try:
            if value is None:
                raise SchemaError("empty record (tombstone)")
            m = decode_message(value, typed=False)
            if not m.case_id:
                raise SchemaError("a case event needs a case_id")
        except SchemaError as exc:
            self.report.undecodable.append(f"{where}: {exc}")
            return
        self.feed_message(m, where)

    def feed_message(self, m: Message, where: str, digest: str | None = None) -> None:
        digest = digest or m.hash()
        seen = self._index.get(m.id)
        if seen is not None:
            if seen.hash == digest:
                self.report.duplicates += 1
            else:
                self._find(DUPLICATE_CONFLICT, m.case_id, m.seq, m.id, where,
                           f"event id also at {seen.where} with other content "
                           f"(hash {seen.hash[:12]}… there, {digest[:12]}… here)")
            return
        self._index[m.id] = _Seen(digest, m.case_id, m.seq, m.type, where)
        self.report.events += 1
        last = self._last.get(m.case_id)
        inserted = False
        if last is None:
            self.report.cases += 1
            if m.seq != 1 or m.prev_hash:
                self._find(FIRST_NOT_ONE, m.case_id, m.seq, m.id, where,
                           f"the case's first event in the log is seq {m.seq} ({m.type}); "
                           f"seq 1..{m.seq - 1} are missing from the log")
        else:
            last_seq, last_hash, last_id = last
            if m.seq <= last_seq:
                inserted = True  # the chain goes on from the event before it
                self._find(SEQ_REPEAT, m.case_id, m.seq, m.id, where,
                           f"{m.type} claims seq {m.seq} after seq {last_seq} "
                           f"(event {last_id}): an event inserted into the chain")
            elif m.seq > last_seq + 1:
                self._find(SEQ_GAP, m.case_id, m.seq, m.id, where,
                           f"{m.type} has seq {m.seq} right after seq {last_seq}: "
                           f"{m.seq - last_seq - 1} event(s) missing from the log")
            elif m.prev_hash != last_hash:
                self._find(LINK_BROKEN, m.case_id, m.seq, m.id, where,
                           f"{m.type} names prev_hash {m.prev_hash[:12]}… but seq {last_seq} in "
                           f"the log hashes to {last_hash[:12]}…: seq {last_seq} was altered, or "
                           f"seq {m.seq} forged")
        if not inserted:
            self._last[m.case_id] = (m.seq, digest, m.id)

    def compare_ledger(self, rows: Iterable[dict[str, Any]]) -> ChainReport:
        """Check ledger rows (case_events table, any order) against the log fed so far."""
        in_ledger: set[str] = set()
        for row in rows:
            self.report.ledger_rows += 1
            event_id = str(row["event_id"])
            in_ledger.add(event_id)
            stored = str(row["hash"])
            where = "ledger"
            recomputed = ledger_row_hash(row)
            if recomputed != stored:
                self._find(LEDGER_EDITED, str(row["case_id"]), row["seq"], event_id, where,
                           f"the ledger row ({row['type']}) hashes to {recomputed[:12]}… but "
                           f"stores {stored[:12]}…: the row was edited in the database")
            seen = self._index.get(event_id)
            if seen is None:
                self._find(REMOVED, str(row["case_id"]), row["seq"], event_id,
                           f"ledger, read from p{row['partition']}@{row['offset']}",
                           f"{row['type']} was applied by the live sink but is not in the log")
            elif seen.hash != stored:
                self._find(ALTERED, seen.case_id, seen.seq, event_id, seen.where,
                           f"{seen.type} in the log hashes to {seen.hash[:12]}… but the live "
                           f"sink applied {stored[:12]}…: the event was altered in the log")
        for event_id, seen in self._index.items():
            if event_id not in in_ledger:
                self._find(NOT_IN_LEDGER, seen.case_id, seen.seq, event_id, seen.where,
                           f"{seen.type} is in the log but the live database never applied it "
                           "(inserted into the log, or not yet read by the live sink)")
        self.report.findings.sort(key=lambda f: (f.case_id, f.seq or 0, f.kind))
        return self.report

    def _find(self, kind: str, case_id: str, seq: int | None, event_id: str, where: str,
              detail: str) -> None:
        self.report.findings.append(Finding(kind, case_id, seq, event_id, where, detail))


def ledger_row_hash(row: dict[str, Any]) -> str:
    """Message.hash() of the event a ledger row (case_events) holds."""
    at = row["at"]
    return envelope_hash(
        id=row["event_id"], type=row["type"], case_id=row["case_id"],
        at=iso(at) if isinstance(at, datetime) else str(at), actor=row["actor"],
        data=row["data"] if row["data"] is not None else {}, schema=row["schema"],
        causation_id=row["causation_id"] or "", seq=row["seq"], prev_hash=row["prev_hash"] or "",
    )
