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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import faust
from mode import CrashingSupervisor

from gridflow import events as ev
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.deadlines import DeadlineBook, DueItem, command_for, follow_event
from gridflow.core.deadlines.follow import FOLLOWED_TYPES
from gridflow.core.sla import SlaPolicy
from gridflow.events import iso, parse_ts
from processors.tablestore import table_options

log = logging.getLogger("gridflow.deadlines")

TICK_INTERVAL_S = 1.0


# The header on a case event whose stage clocks the case processor filed as it decided it
# (GRIDFLOW_DEADLINES_INLINE): the deadline agent skips such events unread.
FOLLOWED_HEADER = "gf-clocks"
FOLLOWED_HEADERS = [(FOLLOWED_HEADER, b"1")]


class ClockFollower:
    """Files the stage clocks of a case's new events into the deadline book of the partition
    that decided them, in the case processor's own step (issue 16, step 4): the events are the
    objects just decided, so nothing is read back from the log or decoded, and the book is
    never behind the cases. The case processor's partition p holds exactly the cases whose
    events land on partition p of case-events (both keyed by case id, the same count), whose
    book the deadline agent keeps under the namespace "p<p>:"."""

    def __init__(self, entries: Any, buckets: Any, policy: SlaPolicy, calendar: WorkingCalendar,
                 department_levels: dict[str, str]) -> None:
        self.entries, self.buckets = entries, buckets
        self.policy, self.calendar = policy, calendar
        self.department_levels = department_levels

    def book(self, partition: int) -> DeadlineBook:
        return DeadlineBook(self.entries, self.buckets, policy=self.policy,
                            calendar=self.calendar, namespace=f"p{partition}:")

    def follow(self, partition: int, events: list[ev.Message]) -> None:
        book = None
        for event in events:
            if event.type in FOLLOWED_TYPES:
                book = book or self.book(partition)
                follow_event(book, event, self.policy, self.calendar, self.department_levels)


class DeadlineRuntime:
    """Installs the deadline agent and the ticker into a faust app."""

    def __init__(self, policy: SlaPolicy, calendar: WorkingCalendar,
                 tick_interval_s: float = TICK_INTERVAL_S) -> None:
        self.policy = policy
        self.calendar = calendar
        self.tick_interval_s = tick_interval_s
        self._follower: ClockFollower | None = None

    def follower(self, app: faust.App, t: dict[str, Any], rt: Any) -> ClockFollower:
        """The book of the app (its two tables, entries and minute buckets, declared once):
        what the case processor files its events' clocks with (GRIDFLOW_DEADLINES_INLINE) and
        the deadline agent ticks and follows the log with."""
        if self._follower is None:
            kind = rt.settings.worker_store
            self._follower = ClockFollower(
                app.Table("deadline-entries", partitions=t["case-events"].partitions,
                          options=table_options(kind)),
                app.Table("deadline-buckets", partitions=t["case-events"].partitions,
                          options=table_options(kind)),
                self.policy, self.calendar,
                {code: dept.level for code, dept in rt.ref.departments.items()})
            for table in (self._follower.entries, self._follower.buckets):
                # the book stores strings and writes new cursors: its reads may be remembered
                table.read_cache = True
            ledger = getattr(app, "send_ledger", None)
            if ledger is not None:  # a case's state waits for its clocks (docs/ARCHITECTURE.md, 8)
                ledger.outputs_first(self._follower.entries, self._follower.buckets)
        return self._follower

    def install(self, app: faust.App, t: dict[str, Any], rt: Any) -> None:
        prefix = rt.settings.topic_prefix
        follower = self.follower(app, t, rt)
        source = app.topic(f"{prefix}.case-events", f"{prefix}.deadline-ticks",
                           key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw")
        ticks_name = f"{prefix}.deadline-ticks"
        commands = t["case-commands"]
        reads_only = getattr(app, "reads_only", None)
        if reads_only is not None:  # the events it skips are not handed to it at all
            reads_only(source.topics, lambda m: m.topic == ticks_name or _needs_following(m))

        async def send(item: DueItem) -> Any:
            cmd = command_for(item)
            return await commands.send(key=item.case_id.encode(), value=cmd.encode())

        # Clocks are started, moved and stopped in the order of a case's events: none is
        # followed before the one ahead of it (processors.delivery.GridflowConsumer.in_order).
        ordered = getattr(app, "in_order", None)
        in_order = (ordered("deadlines", source.topics) if ordered is not None
                    else lambda m: True)

        @app.agent(source, name="deadlines", supervisor_strategy=CrashingSupervisor)
        async def deadlines(stream: Any) -> None:
            async for event in stream.events():
                m = event.message
                if not in_order(m):
                    continue
                if m.topic == ticks_name:
                    now = _tick_time(event.value)
                    if now is None:
                        continue
                    book = follower.book(m.partition)
                    # Every due command acknowledged before the book forgets its clock: a
                    # clock gone from the changelog never leaves its command unsent. Clocks
                    # filed meanwhile (the case processor runs during the awaits) are due too.
                    sent: set[str] = set()
                    while peeked := [i for i in book.peek_due(now) if i.id not in sent]:
                        futures = [await send(item) for item in peeked]
                        for fut in futures:
                            await fut
                        sent.update(item.id for item in peeked)
                    book.pop_due(now)
                    continue
                if not _needs_following(m):
                    continue  # filed by the case processor; or a case filed, a photo archived..
                try:
                    follower.follow(m.partition, [ev.decode_message(event.value,
                                                                     ev.EVENT_TYPES)])
                except (ev.SchemaError, KeyError, TypeError, ValueError) as exc:
                    log.warning("deadlines: skipped %s@%s: %s", m.partition, m.offset, exc)

        ticks = t["deadline-ticks"]
        clock = rt.clock

        @app.timer(self.tick_interval_s, on_leader=True)
        async def tick() -> None:
            value = json.dumps({"now": iso(clock())}).encode()
            for p in range(ticks.partitions or 1):
                await ticks.send(key=str(p).encode(), value=value, partition=p)


def _needs_following(message: Any) -> bool:
    """Whether the deadline agent follows a case event: not filed by the case processor, and
    of a type that may move a clock."""
    return not _followed(message.headers) and _may_move_a_clock(message.value)


def _followed(headers: Any) -> bool:
    """Whether a case event carries FOLLOWED_HEADER (its clocks are filed already)."""
    if not headers:
        return False
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return any(k == FOLLOWED_HEADER for k, _ in pairs)


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
