"""Deadline processor: keeps every open stage clock in changelog-backed faust tables.

It follows the case events (a task dispatched starts its sign-for clock, signing
stops it and starts the resolve clock, ...) and, on each clock tick, pops only
what is due (the book is indexed by minute) and sends WarnDeadline /
BreachDeadline / EscalateTask commands to the case processor, which drops stale
or repeated ones. Commands carry the instant they were due as their event time,
so a replay decides exactly as the live run did. Ticks come from a leader timer
that stamps the injectable clock's `now` onto every partition of the ticks topic.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

import faust

from gridflow import events as ev
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.deadlines import DeadlineBook, DueItem, command_for, follow_event
from gridflow.core.deadlines.follow import FOLLOWED_TYPES
from gridflow.core.sla import SlaPolicy
from gridflow.events import iso, parse_ts
from processors.app import CrashingSupervisor
from processors.tablestore import table_options

log = logging.getLogger("gridflow.deadlines")

TICK_INTERVAL_S = 1.0


class DeadlineRuntime:
    """Installs the deadline agent and the ticker into a faust app."""

    def __init__(self, policy: SlaPolicy, calendar: WorkingCalendar,
                 tick_interval_s: float = TICK_INTERVAL_S) -> None:
        self.policy = policy
        self.calendar = calendar
        self.tick_interval_s = tick_interval_s

    def install(self, app: faust.App, t: dict[str, Any], rt: Any) -> None:
        prefix = rt.settings.topic_prefix
        kind = rt.settings.worker_store
        entries = app.Table("deadline-entries", partitions=t["case-events"].partitions,
                            options=table_options(kind))
        buckets = app.Table("deadline-buckets", partitions=t["case-events"].partitions,
                            options=table_options(kind))
        source = app.topic(f"{prefix}.case-events", f"{prefix}.deadline-ticks",
                           key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw")
        ticks_name = f"{prefix}.deadline-ticks"
        commands = t["case-commands"]
        policy, calendar = self.policy, self.calendar
        department_levels = {code: dept.level for code, dept in rt.ref.departments.items()}

        def book_for(partition: int) -> DeadlineBook:
            return DeadlineBook(entries, buckets, policy=policy, calendar=calendar,
                                namespace=f"p{partition}:")

        async def send(item: DueItem) -> Any:
            cmd = command_for(item)
            return await commands.send(key=item.case_id.encode(), value=cmd.encode())

        @app.agent(source, name="deadlines", supervisor_strategy=CrashingSupervisor)
        async def deadlines(stream: Any) -> None:
            async for event in stream.events():
                m = event.message
                book = book_for(m.partition)
                if m.topic == ticks_name:
                    now = _tick_time(event.value)
                    if now is None:
                        continue
                    peeked = book.peek_due(now)
                    futures = [await send(item) for item in peeked]
                    for fut in futures:
                        await fut
                    sent = {item.id for item in peeked}
                    for item in book.pop_due(now):
                        if item.id not in sent:
                            await send(item)
                    continue
                if not _may_move_a_clock(event.value):
                    continue  # a case filed, a report merged, a photo archived: no clock
                try:
                    msg = ev.decode_message(event.value, ev.EVENT_TYPES)
                    follow_event(book, msg, policy, calendar, department_levels)
                except (ev.SchemaError, KeyError, TypeError, ValueError) as exc:
                    log.warning("deadlines: skipped %s@%s: %s", m.partition, m.offset, exc)

        ticks = t["deadline-ticks"]
        clock = rt.clock

        @app.timer(self.tick_interval_s, on_leader=True)
        async def tick() -> None:
            value = json.dumps({"now": iso(clock())}).encode()
            for p in range(ticks.partitions or 1):
                await ticks.send(key=str(p).encode(), value=value, partition=p)


# The envelope's type is its last key (canonical JSON, keys sorted): `..."type":"X"}`. What
# precedes the final brace is a member of the outermost object, never a nested one's.
_TYPE_AT_END = re.compile(rb'"type":"([A-Za-z]+)"}\s*$')


def _may_move_a_clock(raw: bytes | None) -> bool:
    """False only for a case event whose type, read off its end, is one no clock follows; a
    record this cheap look cannot place (not canonical, not an event) is decoded in full."""
    if not raw:
        return True
    found = _TYPE_AT_END.search(raw, max(0, len(raw) - 80))
    return found is None or found.group(1).decode() in FOLLOWED_TYPES


def _tick_time(raw: bytes) -> datetime | None:
    try:
        return parse_ts(json.loads(raw)["now"], "tick")
    except (ValueError, KeyError, TypeError, ev.SchemaError):
        return None
