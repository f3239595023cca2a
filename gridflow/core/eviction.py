"""Closed cases leave the worker's hot state (issue 15, "Restart time does not grow with
history").

A case that is finished — closed after verification, or never filed — and has had no new
event for `evict_days` (domain time) is deleted from the case processor's table: a tombstone
on the table's changelog, which compaction then drops, so neither a restart nor a new
machine reads it again. The log keeps every event; replay and the audit never read this
table.

**Finding them without a scan.** Whenever a decision leaves a case finished, its id is added
to an index bucket of the hour of its last event (`<namespace><YYYY-MM-DDTHH>`, one list per
hour and partition), and the list of buckets in use is kept under `<namespace>slots`. A tick
pops only the buckets older than the horizon, a bounded number of ids at a time, and checks
each case again (a case reopened or touched since is left alone: it is indexed again at its
next finish).

**An evicted case is not an unknown case.** Its chain goes on in the log, so a late command
for it (a rating months later, a retried click) cannot start a new case with seq 1: that would
be a second chain under the same case id. An evicted case leaves a stub (`stub_of`: its last
seq, hash and event time and its last command ids, ~200 bytes) in a table of its own; a command
for it is refused with code `case_evicted` as the next link of its chain
(`gridflow.core.case.refuse`), and a near-duplicate report for it is filed as its own case, as
for any closed case. The case id's filing date (`filed_on`, from `intake.case_id_for`) cannot
tell the two apart on its own — a case filed long ago may still be open, and an id that was
never filed may carry any date — so the stub is what is kept. Stubs live in the worker's
RocksDB store on disk, not in its memory (processors.tablestore).
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gridflow.core.case import CaseState, Decision, refuse
from gridflow.events import Message, SchemaError, parse_ts

FINISHED = ("closed", "not_filed")
EVICTED_CODE = "case_evicted"
EVICTED_ZH = "案件已办结归档，不再受理新的操作；如问题再次出现，请重新上报"
EVICTED_EN = "the case was closed and archived; it takes no more commands (report a new problem anew)"
STUB_RECENT_KEPT = 8
SLOTS = "slots"
_CASE_DATE = re.compile(r"^AJ(\d{8})-")

JsonMap = MutableMapping[str, Any]


def filed_on(case_id: str) -> date | None:
    """The filing date (UTC+8) a case id carries (`intake.case_id_for`), or None."""
    m = _CASE_DATE.match(case_id)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def is_finished(state: dict[str, Any] | None) -> bool:
    return state is not None and state.get("status") in FINISHED


def slot_of(at: datetime) -> str:
    """The index bucket of an instant: its UTC hour."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _slot_end(slot: str) -> datetime:
    return datetime.strptime(slot, "%Y-%m-%dT%H").replace(tzinfo=UTC) + timedelta(hours=1)


def stub_of(state: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is kept of an evicted case: enough to refuse a late command on its chain (the
    status it was evicted in comes from `before`, the previous stub, when there is one)."""
    return {
        "case_id": state["case_id"],
        "status": (before or state).get("status", ""),
        "seq": state.get("seq", 0), "last_hash": state.get("last_hash", ""),
        "last_at": state.get("last_at", ""),
        "recent_commands": list(state.get("recent_commands", ()))[-STUB_RECENT_KEPT:],
        "evicted": True,
    }


def refuse_evicted(stub: dict[str, Any], command: Message) -> Decision:
    """`command` for an evicted case: one CommandRefused (code case_evicted) continuing the
    case's chain from its stub; nothing for a command id the stub has seen."""
    state = CaseState(case_id=stub["case_id"], status=str(stub.get("status", "closed")),
                      seq=int(stub.get("seq", 0)), last_hash=str(stub.get("last_hash", "")),
                      last_at=str(stub.get("last_at", "")),
                      recent_commands=tuple(stub.get("recent_commands", ())))
    return refuse(state, command, EVICTED_CODE, EVICTED_ZH, EVICTED_EN)


@dataclass
class EvictionIndex:
    """The index of finished cases of one partition, over a key→value table (a faust table
    in the worker, a dict in tests)."""

    table: JsonMap
    namespace: str = ""

    def _key(self, slot: str) -> str:
        return f"{self.namespace}{slot}"

    def note(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
        """Index `after` if this decision left the case finished with new events."""
        if not is_finished(after) or not after or not after.get("last_at"):
            return False
        if before and before.get("seq") == after.get("seq") and is_finished(before):
            return False  # nothing new happened to a case already indexed
        slot = slot_of(parse_ts(after["last_at"], "last event time"))
        key = self._key(slot)
        ids = list(self.table.get(key) or [])
        case_id = after["case_id"]
        if case_id in ids:
            return False
        self.table[key] = [*ids, case_id]
        slots = list(self.table.get(self._key(SLOTS)) or [])
        if slot not in slots:
            slots.append(slot)
            slots.sort()
            self.table[self._key(SLOTS)] = slots
        return True

    def take_due(self, now: datetime, evict_days: float, limit: int) -> list[str]:
        """Pop up to `limit` case ids from the buckets that ended before `now - evict_days`."""
        horizon = now - timedelta(days=evict_days)
        slots = list(self.table.get(self._key(SLOTS)) or [])
        taken: list[str] = []
        done = 0
        for slot in slots:
            if _slot_end(slot) > horizon or len(taken) >= limit:
                break
            key = self._key(slot)
            ids = list(self.table.get(key) or [])
            room = limit - len(taken)
            taken += ids[:room]
            if len(ids) > room:
                self.table[key] = ids[room:]
                break
            if key in self.table:
                del self.table[key]
            done += 1
        if done:
            self.table[self._key(SLOTS)] = slots[done:]
        return taken


def tick_time(raw: bytes) -> datetime | None:
    """The domain time a deadline tick carries (processors.deadlines), or None."""
    try:
        return parse_ts(json.loads(raw)["now"], "tick")
    except (ValueError, KeyError, TypeError, SchemaError):
        return None


def evict_due(cases: JsonMap, evicted: JsonMap, index: EvictionIndex, now: datetime,
              evict_days: float, limit: int = 500) -> list[str]:
    """Evict the finished cases untouched since before the horizon (at most `limit` looked
    at): a stub into `evicted`, the case deleted from `cases`. Returns the evicted ids."""
    if evict_days <= 0:
        return []
    horizon = now - timedelta(days=evict_days)
    gone = []
    for case_id in index.take_due(now, evict_days, limit):
        state = cases.get(case_id)
        if not is_finished(state) or not state:
            continue  # reopened (indexed again when it finishes) or already gone
        if parse_ts(state["last_at"], "last event time") > horizon:
            continue  # touched since: its later bucket holds it
        evicted[case_id] = stub_of(state)
        del cases[case_id]
        gone.append(case_id)
    return gone
