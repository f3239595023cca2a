"""The deadline book: every pending warning, breach and escalation instant of open task stages,
filed in minute buckets.

Guarantee: `pop_due(now)` returns each due item once, removes it, and reads only the time
buckets between its previous call and `now` plus the entries it fires — never the whole open
book. All state lives in two injected key→value maps (faust tables in the processor) holding
the compact strings of gridflow.core.deadlines.codec, so a worker rebuilt from the same maps
loses nothing and fires nothing twice; item ids are deterministic, so a repeat after a crash is
recognisable downstream.

A clock's key is listed under one bucket: its earliest pending due's. When that due fires, the
key moves on to the bucket of the next one, so filing a clock writes its entry and one shard
(it wrote one per due: the warnings and the breach usually fall in different minutes). A tick
fires every due of a key it reads that is due and filed under a bucket the tick covers, so the
later dues of a clock overdue for hours fire in the same tick, as before. Books written before
this list a key under every due's bucket; a tick reading such a listing where nothing of the
key is due drops it, so they drain as they fire.

Each minute bucket is split into ``SHARDS`` shards by a hash of the entry key (``"<namespace><minute>.<shard>"``):
filing or cancelling a clock rewrites one shard, a sixteenth of the minute's keys, where it
rewrote the whole minute (thousands of keys when a burst of tasks shares a deadline minute;
every rewrite is a changelog record of that size). Books written before the split keep their
unsharded ``"<namespace><minute>"`` buckets; those are still read, and drain as they fire.

A tick reads buckets ``low`` … ``now`` of the cursor (``"<namespace>~cursor"`` →
``{"low": n, "primed": bool}``: every bucket below ``low`` is empty; ``primed`` once ticking
started, before that ``low`` follows the earliest filing) and moves ``low`` to now's minute. A
due whose minute is already below the cursor (planned late, caught up after downtime) is filed
under the cursor bucket, so it fires on the next call. ``bucket_seconds`` must stay the same for
the life of the tables (bucket keys depend on it).

Values are replaced, never mutated in place (faust tables persist on assignment only). Build
faust tables without a ``default`` (a default would make lookups of empty buckets write), and
give each partition's book its own ``namespace`` so bucket keys never collide across partitions.

Escalation is one level at a time: with a policy and calendar, firing a breach (at the task's
base level) schedules the escalation to the next level at ``next_escalation_at(breach instant)``,
firing that schedules the next, and `note_progress` restarts the wait at the current level.
Every instant derives from scheduled instants, never from the tick time, so a replay agrees.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zlib import crc32

from gridflow.core.calendar import WorkingCalendar
from gridflow.core.deadlines.codec import (
    bucket_keys,
    bucket_number,
    bucket_value,
    decode_entry,
    encode_entry,
    holds,
)
from gridflow.core.deadlines.planning import (
    BREACH,
    BUCKET_SECONDS,
    CURSOR,
    ESCALATE,
    KINDS,
    WARN,
    DeadlineEntry,
    Due,
    DueItem,
    due_mark,
    entry_from_deadline,
    entry_key,
)
from gridflow.core.sla import STAGES, SlaPolicy, StageDeadline

JsonMap = MutableMapping[str, Any]

SHARDS = 16  # per minute bucket; like bucket_seconds, fixed for the life of the tables


class DeadlineBook:
    """Pending deadline instants over two key→value maps (dicts, or faust tables)."""

    def __init__(
        self,
        entries: JsonMap | None = None,
        buckets: JsonMap | None = None,
        *,
        policy: SlaPolicy | None = None,
        calendar: WorkingCalendar | None = None,
        namespace: str = "",
        bucket_seconds: int = BUCKET_SECONDS,
    ) -> None:
        if (policy is None) != (calendar is None):
            raise ValueError("give both policy and calendar (escalations) or neither")
        self.entries: JsonMap = {} if entries is None else entries
        self.buckets: JsonMap = {} if buckets is None else buckets
        self.policy = policy
        self.calendar = calendar
        self.namespace = namespace
        self.bucket_seconds = bucket_seconds

    def get(self, task_id: str, stage: str) -> DeadlineEntry | None:
        key = entry_key(task_id, stage)
        raw = self.entries.get(key)
        return None if raw is None else self._decode(key, raw)[0]

    # --- changes (each idempotent) ---------------------------------------------------

    def upsert(self, entry: DeadlineEntry) -> DeadlineEntry:
        """Start or restate a stage clock.

        Restating the same deadline (same due_at: a redelivered event) keeps what already
        fired and any escalation in progress; a different due_at starts the clock afresh.
        A task id with a line break is refused (ValueError): buckets join keys by newlines.
        """
        if "\n" in entry.key:
            raise ValueError(f"a task id with a line break cannot be filed: {entry.task_id!r}")
        old_raw = self.entries.get(entry.key)
        old = None if old_raw is None else self._decode(entry.key, old_raw)[0]
        if old is not None and old.due_at == entry.due_at:
            merged = replace(
                entry, fired=tuple(sorted({*old.fired, *entry.fired})), level=old.level
            )
            kept = tuple(d for d in entry.dues if d.kind != ESCALATE and not merged.has_fired(d))
            pending = tuple(d for d in old.dues if d.kind == ESCALATE)
            entry = replace(merged, dues=kept + pending)
        else:
            entry = replace(entry, dues=tuple(d for d in entry.dues if not entry.has_fired(d)))
        self._write(entry, old_raw)
        return entry

    def reschedule(
        self, task_id: str, stage: str, deadline: StageDeadline, not_before: datetime | None = None
    ) -> DeadlineEntry | None:
        """Move a stage deadline (延期 granted): new warnings and breach, escalation reset.

        Warnings at or before `not_before` (the decision time) are left out. A no-op returning
        None when the stage has no clock (already stopped).
        """
        old = self.get(task_id, stage)
        if old is None:
            return None
        return self.upsert(
            entry_from_deadline(old.case_id, task_id, deadline, old.base_level, not_before)
        )

    def cancel(self, task_id: str, stage: str | None = None) -> int:
        """Stop a stage's clock (signed, resolved, verified) or, with no stage, every one.

        Returns how many clocks were stopped.
        """
        stopped = 0
        for st in STAGES if stage is None else (stage,):
            key = entry_key(task_id, st)
            raw = self.entries.get(key)
            if raw is None:
                continue
            holder = _holder(self._decode(key, raw)[1])
            if holder is not None:  # an older book's other listings drain as they are read
                self._bucket_remove(holder, key)
            del self.entries[key]
            stopped += 1
        return stopped

    def note_progress(self, task_id: str, stage: str, at: datetime) -> DeadlineEntry | None:
        """Progress on a breached task restarts the wait at its current escalation level."""
        entry = self.get(task_id, stage)
        if entry is None or entry.level is None or self.policy is None or self.calendar is None:
            return entry
        next_at = self.policy.next_escalation_at(at, entry.level, self.calendar)
        nxt = () if next_at is None else (Due(ESCALATE, next_at, level=entry.level + 1),)
        return self._replace_escalation(entry, nxt)

    def schedule_escalation(
        self, task_id: str, stage: str, level: int, at: datetime
    ) -> DeadlineEntry | None:
        """Schedule the escalation to `level` by hand (for a book built without a policy)."""
        entry = self.get(task_id, stage)
        if entry is None:
            return None
        return self._replace_escalation(entry, (Due(ESCALATE, at.astimezone(UTC), level=level),))

    def _replace_escalation(
        self, entry: DeadlineEntry, escalation: tuple[Due, ...]
    ) -> DeadlineEntry:
        others = tuple(d for d in entry.dues if d.kind != ESCALATE)
        fresh = tuple(d for d in escalation if not entry.has_fired(d))
        updated = replace(entry, dues=others + fresh)
        self._write(updated, self.entries.get(entry.key))
        return updated

    # --- firing -----------------------------------------------------------------------

    def pop_due(self, now: datetime) -> list[DueItem]:
        """Every item due at or before `now` not returned before, in time order; removes them.

        Firing a breach or escalation files the next escalation no earlier than the next
        bucket, so one call never chains: after downtime the ladder climbs one level per tick,
        and `peek_due(now)` just before returns exactly these items. For at-least-once
        delivery, send what `peek_due` returns, await the acks, then `pop_due` (and send any
        item it returns that the peek did not: a clock planned in between).
        """
        now = now.astimezone(UTC)
        last = self._bucket_of(now)
        cursor = self.buckets.get(self._cursor_key())
        items: list[DueItem] = []
        if cursor is not None and cursor.get("primed") and last < int(cursor["low"]):
            return items  # a late or skewed tick: time never runs backwards, nothing to read
        if cursor is not None:
            # Escalations filed while firing go to buckets after `last`, none read here: each
            # such bucket is written once, not once per fired entry, and before the fired keys
            # leave the buckets read (a key is in its new bucket before it leaves the old one).
            filed: dict[int, list[str]] = {}
            rest: dict[str, list[str]] = {}
            for b in range(int(cursor["low"]), last + 1):
                items.extend(self._pop_bucket(b, now, last + 1, filed, rest))
            for b, keys in sorted(filed.items()):
                self._bucket_extend(b, keys)
            for bkey, keep in rest.items():
                if keep:
                    self.buckets[bkey] = bucket_value(keep)
                else:
                    del self.buckets[bkey]
        if cursor != {"low": last, "primed": True}:
            self.buckets[self._cursor_key()] = {"low": last, "primed": True}
        return sorted(items, key=_item_order)

    def peek_due(self, now: datetime) -> list[DueItem]:
        """What `pop_due(now)` would return, changing nothing."""
        now = now.astimezone(UTC)
        cursor = self.buckets.get(self._cursor_key())
        if cursor is None:
            return []
        last = self._bucket_of(now)
        items: dict[str, DueItem] = {}  # a key of an older book is listed under several
        for b in range(int(cursor["low"]), last + 1):
            for key in self._keys_in(b):
                raw = self.entries.get(key)
                if raw is None:
                    continue
                entry, filed = self._decode(key, raw)
                for d, fb in zip(entry.dues, filed, strict=True):
                    if fb <= last and d.at <= now:
                        item = self._item(entry, d)
                        items[item.id] = item
        return sorted(items.values(), key=_item_order)

    def _pop_bucket(
        self,
        b: int,
        now: datetime,
        next_bucket: int,
        filed: dict[int, list[str]],
        rest: dict[str, list[str]],
    ) -> list[DueItem]:
        """Fire what is due in bucket b; each of its stored parts whose key list changed goes
        to `rest` with its new list."""
        items: list[DueItem] = []
        for bkey in self._parts_of(b):
            keys = bucket_keys(self.buckets.get(bkey))
            if not keys:
                continue
            keep: list[str] = []
            for key in keys:
                raw = self.entries.get(key)
                if raw is None:
                    continue
                fired, still_here = self._fire_entry(key, raw, b, now, next_bucket, filed)
                items.extend(fired)
                if still_here:
                    keep.append(key)
            if keep != keys:
                rest[bkey] = keep
        return items

    def _fire_entry(
        self,
        key: str,
        raw: Any,
        b: int,
        now: datetime,
        next_bucket: int,
        filed: dict[int, list[str]],
    ) -> tuple[list[DueItem], bool]:
        """Fire the entry's dues that are due and filed under a bucket this call reads (up to
        `next_bucket`): the key is listed under its earliest due's bucket only, so the dues
        filed under the later buckets of the call fire with it.

        Returns the items and whether the entry is still to be listed under bucket b.
        """
        entry, buckets = self._decode(key, raw)
        due_now = [d for d, fb in zip(entry.dues, buckets, strict=True)
                   if fb < next_bucket and d.at <= now]
        if not due_now:
            return [], _holder(buckets) == b
        firing = set(due_now)
        remaining = [d for d in entry.dues if d not in firing]
        level = entry.level
        items: list[DueItem] = []
        for due in sorted(due_now, key=lambda d: d.at):
            items.append(self._item(entry, due))
            if due.kind in (BREACH, ESCALATE):
                level = entry.base_level if due.kind == BREACH else due.level
                remaining.extend(self._next_escalation(due.at, level, entry, remaining))
        fired = tuple(sorted({*entry.fired, *(due_mark(d) for d in due_now)}))
        updated = replace(entry, dues=tuple(remaining), level=level, fired=fired)
        new_buckets = self._write(
            updated, raw, floor=next_bucket, owner_bucket=b, filed=filed, old=(entry, buckets)
        )
        return items, _holder(new_buckets) == b

    def _next_escalation(
        self, since: datetime, level: int | None, entry: DeadlineEntry, pending: list[Due]
    ) -> list[Due]:
        if self.policy is None or self.calendar is None or level is None:
            return []
        if any(d.kind == ESCALATE for d in pending):
            return []
        at = self.policy.next_escalation_at(since, level, self.calendar)
        if at is None:
            return []
        due = Due(ESCALATE, at, level=level + 1)
        return [] if entry.has_fired(due) else [due]

    def _item(self, entry: DeadlineEntry, due: Due) -> DueItem:
        level = None if due.kind == WARN else entry.base_level if due.kind == BREACH else due.level
        code = name = ""
        notify: tuple[str, ...] = ()
        ladder = self.policy.escalation_ladder if self.policy else ()
        if level is not None and 0 <= level < len(ladder):
            code, name, notify = ladder[level].code, ladder[level].name, ladder[level].notify
        return DueItem(
            id=entry.due_id(due),
            kind=due.kind,
            case_id=entry.case_id,
            task_id=entry.task_id,
            stage=entry.stage,
            due_at=entry.due_at,
            fire_at=due.at,
            fraction=due.fraction,
            level=level,
            level_code=code,
            level_name=name,
            notify=notify,
        )

    # --- storage ------------------------------------------------------------------------

    def _decode(self, key: str, raw: str) -> tuple[DeadlineEntry, tuple[int, ...]]:
        """A stored entry and the bucket each of its dues is filed under."""
        return decode_entry(key, raw, self.bucket_seconds)

    def _write(
        self,
        entry: DeadlineEntry,
        old_raw: Any,
        floor: int | None = None,
        owner_bucket: int | None = None,
        filed: dict[int, list[str]] | None = None,
        old: tuple[DeadlineEntry, tuple[int, ...]] | None = None,
    ) -> tuple[int, ...]:
        """Store the entry and move its key between buckets; nothing when unchanged.

        Returns the bucket of each due. `owner_bucket` is the bucket `pop_due` is rewriting
        itself, so it is left alone here; with `filed`, keys to add to other buckets are
        collected there instead of written (`pop_due` writes each such bucket once).
        """
        if floor is None:
            floor = self._floor()
        if old is None and old_raw is not None:
            old = self._decode(entry.key, old_raw)
        old_filed = dict(zip(old[0].dues, old[1], strict=True)) if old else {}
        buckets = []
        for d in entry.dues:
            b = old_filed.get(d)  # a due keeps the bucket it was filed under
            if b is None:
                b = self._bucket_of(d.at)
                b = b if floor is None else max(b, floor)
            buckets.append(b)
        new_buckets = tuple(buckets)
        new_raw = encode_entry(entry, new_buckets, self.bucket_seconds)
        if new_raw == old_raw:
            return new_buckets
        # The key is listed under its earliest due's bucket only (`_holder`); it moves on to the
        # next one as that due fires. A key of a book written before that is listed under every
        # due's bucket: its other listings are dropped by the ticks that read them (an entry
        # with nothing due there is not kept in a bucket other than its holder).
        new_holder = _holder(new_buckets)
        old_holder = _holder(old[1]) if old else None
        if old_holder is not None and old_holder not in (new_holder, owner_bucket):
            self._bucket_remove(old_holder, entry.key)
        if new_holder is not None and new_holder != old_holder and new_holder != owner_bucket:
            if filed is None:
                self._bucket_extend(new_holder, [entry.key])
                self._note_filed(new_holder)
            else:
                filed.setdefault(new_holder, []).append(entry.key)
        self.entries[entry.key] = new_raw
        return new_buckets

    def _bucket_extend(self, b: int, keys: list[str]) -> None:
        """File keys under bucket b, each in its shard (one write per shard touched). A key
        still in the bucket's unsharded part (a book from before the split) is not refiled."""
        by_shard: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            by_shard.setdefault(self._shard_key(b, key), []).append(key)
        legacy = self.buckets.get(self._bucket_key(b))
        for bkey, group in by_shard.items():
            stored = self.buckets.get(bkey)
            added = [k for k in group
                     if not (stored and holds(stored, k)) and not (legacy and holds(legacy, k))]
            if not added:
                continue
            if stored:
                self.buckets[bkey] = bucket_value([stored, *added])
            else:
                self.buckets[bkey] = bucket_value(added)

    def _bucket_remove(self, b: int, key: str) -> None:
        for bkey in (self._shard_key(b, key), self._bucket_key(b)):
            stored = self.buckets.get(bkey)
            if not stored or not holds(stored, key):
                continue
            rest = [k for k in bucket_keys(stored) if k != key]
            if rest:
                self.buckets[bkey] = bucket_value(rest)
            else:
                del self.buckets[bkey]
            return

    def _keys_in(self, b: int) -> list[str]:
        return [k for bkey in self._parts_of(b) for k in bucket_keys(self.buckets.get(bkey))]

    def _parts_of(self, b: int) -> list[str]:
        """Where bucket b's keys are stored: the unsharded part of a book from before the split,
        then the shards."""
        return [self._bucket_key(b), *(f"{self.namespace}{b}.{s}" for s in range(SHARDS))]

    def _shard_key(self, b: int, key: str) -> str:
        return f"{self.namespace}{b}.{crc32(key.encode()) % SHARDS}"

    def _floor(self) -> int | None:
        """The lowest bucket a new due may be filed under: the cursor, once ticking started."""
        cursor = self.buckets.get(self._cursor_key())
        return int(cursor["low"]) if cursor and cursor.get("primed") else None

    def _note_filed(self, b: int) -> None:
        """Before the first tick the cursor follows the earliest bucket filed."""
        cursor = self.buckets.get(self._cursor_key())
        if cursor is None or (not cursor.get("primed") and b < int(cursor["low"])):
            self.buckets[self._cursor_key()] = {"low": b, "primed": False}

    def _bucket_of(self, t: datetime) -> int:
        return bucket_number(t, self.bucket_seconds)

    def _bucket_key(self, b: int) -> str:
        return f"{self.namespace}{b}"

    def _cursor_key(self) -> str:
        return f"{self.namespace}{CURSOR}"


def _holder(buckets: tuple[int, ...]) -> int | None:
    """The bucket that lists an entry's key: its earliest due's (None: no due left)."""
    return min(buckets) if buckets else None


def _item_order(item: DueItem) -> tuple[Any, ...]:
    return (
        item.fire_at,
        item.task_id,
        item.stage,
        KINDS.index(item.kind),
        item.fraction or 0.0,
        item.level or 0,
    )


