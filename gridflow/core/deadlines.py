"""The deadline book: every pending warning, breach and escalation instant of open task stages.

Guarantee: `pop_due(now)` returns each due item once, removes it, and reads only the time
buckets between its previous call and `now` plus the entries it fires — never the whole open
book. All state lives in two injected key→value maps with JSON values (faust tables in the
processor), so a worker rebuilt from the same maps loses nothing and fires nothing twice;
item ids are deterministic, so a repeat after a crash is recognisable downstream.

Storage
-------
* ``entries``: ``"<task_id>#<stage>"`` → entry dict (see `DeadlineEntry.to_dict`; each stored
  due also carries the ``bucket`` it is indexed under).
* ``buckets``: ``"<namespace><minute number>"`` → sorted list of entry keys with a due in that
  minute, plus ``"<namespace>~cursor"`` → ``{"low": n, "primed": bool}``: every bucket below
  ``low`` is empty (``primed`` once ticking started; before that ``low`` follows the earliest
  filing). A tick reads buckets ``low`` … ``now`` and moves ``low`` to now's minute.
  A due whose minute is already below the cursor (planned late, caught up after downtime) is
  filed under the cursor bucket, so it fires on the next call.

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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from gridflow import events as ev
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.sla import STAGES, SlaPolicy, StageDeadline
from gridflow.events import Message, derived_id, iso, parse_ts

WARN, BREACH, ESCALATE = "warn", "breach", "escalate"
KINDS: tuple[str, ...] = (WARN, BREACH, ESCALATE)
COMMAND_OF_KIND = {WARN: ev.WARN_DEADLINE, BREACH: ev.BREACH_DEADLINE, ESCALATE: ev.ESCALATE_TASK}
BUCKET_SECONDS = 60
CURSOR = "~cursor"

JsonMap = MutableMapping[str, Any]


@dataclass(frozen=True)
class Due:
    """One instant at which a stage's clock wants attention."""

    kind: str  # warn | breach | escalate
    at: datetime  # when it fires (UTC)
    fraction: float | None = None  # warn: share of the working time used
    level: int | None = None  # escalate: the ladder index the task goes up to

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "at": iso(self.at)}
        if self.fraction is not None:
            d["fraction"] = self.fraction
        if self.level is not None:
            d["level"] = self.level
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Due:
        return cls(
            kind=d["kind"],
            at=parse_ts(d["at"], "due at"),
            fraction=d.get("fraction"),
            level=d.get("level"),
        )


@dataclass(frozen=True)
class DeadlineEntry:
    """The pending instants of one task stage (keyed by task_id and stage)."""

    task_id: str
    stage: str  # sign | resolve | verify
    case_id: str
    start: datetime
    due_at: datetime  # the stage deadline, as the case holds it (e.g. TaskState.resolve_due)
    dues: tuple[Due, ...]
    base_level: int = 0  # ladder index a breach is reported at
    level: int | None = None  # ladder level reached since the breach; None before it
    fired: tuple[str, ...] = ()  # ids of items already returned for this deadline

    @property
    def key(self) -> str:
        return entry_key(self.task_id, self.stage)

    def due_id(self, due: Due) -> str:
        return item_id(self.task_id, self.stage, due.kind, self.due_at, due.fraction, due.level)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "stage": self.stage,
            "case_id": self.case_id,
            "start": iso(self.start),
            "due_at": iso(self.due_at),
            "dues": [d.to_dict() for d in self.dues],
            "base_level": self.base_level,
            "level": self.level,
            "fired": list(self.fired),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeadlineEntry:
        return cls(
            task_id=d["task_id"],
            stage=d["stage"],
            case_id=d["case_id"],
            start=parse_ts(d["start"], "start"),
            due_at=parse_ts(d["due_at"], "due_at"),
            dues=tuple(Due.from_dict(x) for x in d["dues"]),
            base_level=int(d["base_level"]),
            level=d.get("level"),
            fired=tuple(d.get("fired", ())),
        )


@dataclass(frozen=True)
class DueItem:
    """Something `pop_due` found due: turn it into a deadline command for the case."""

    id: str  # deterministic: the same deadline, kind and fraction/level always give this id
    kind: str
    case_id: str
    task_id: str
    stage: str
    due_at: datetime  # the stage deadline the item is about (what the case checks against)
    fire_at: datetime  # the instant it was scheduled for: use as the command's event time
    fraction: float | None = None
    level: int | None = None  # breach: the base level reported to; escalate: the new level
    level_code: str = ""
    level_name: str = ""
    notify: tuple[str, ...] = field(default=())

    @property
    def command_type(self) -> str:
        return COMMAND_OF_KIND[self.kind]

    def command_data(self) -> dict[str, Any]:
        """The payload of the WarnDeadline / BreachDeadline / EscalateTask command."""
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "stage": self.stage,
            "due_at": iso(self.due_at),
            "item_id": self.id,
        }
        if self.kind == WARN:
            data["fraction"] = self.fraction
        if self.kind == ESCALATE:
            data.update(
                level=self.level,
                level_code=self.level_code,
                level_name=self.level_name,
                notify=list(self.notify),
                reason="超时未处置, 升级督办 / breached without progress",
            )
        return data


def entry_key(task_id: str, stage: str) -> str:
    return f"{task_id}#{stage}"


def item_id(
    task_id: str, stage: str, kind: str, due_at: datetime, fraction: float | None, level: int | None
) -> str:
    detail = f"{fraction:g}" if fraction is not None else str(level if level is not None else "")
    return derived_id("deadline", task_id, stage, kind, iso(due_at), detail)


def plan_deadlines(
    *,
    case_id: str,
    task_id: str,
    stage: str,
    start: datetime,
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    category_code: str = "",
    severity: int = 1,
    due_at: datetime | None = None,
    base_level: int = 0,
    not_before: datetime | None = None,
) -> DeadlineEntry:
    """The entry for one stage: warning instants and the breach instant.

    Pass `due_at` when the deadline is already decided (the events carry it: TaskDispatched
    sign_due, TaskSigned resolve_due, TaskResolved verify_due, ExtensionGranted, TaskReopened);
    otherwise the policy computes it. Warnings at or before `not_before` are left out (a clock
    picked up late need not replay its old warnings). Escalations are scheduled after the breach.
    """
    if due_at is None:
        deadline = policy.stage_deadline(category_code, severity, stage, start, calendar)
    else:
        deadline = policy.deadline_until(category_code, stage, start, due_at, calendar)
    return entry_from_deadline(case_id, task_id, deadline, base_level, not_before)


def entry_from_deadline(
    case_id: str,
    task_id: str,
    deadline: StageDeadline,
    base_level: int = 0,
    not_before: datetime | None = None,
) -> DeadlineEntry:
    warns = [
        Due(WARN, at.astimezone(UTC), fraction=f)
        for f, at in zip(deadline.warn_fractions, deadline.warn_at, strict=False)
        if not_before is None or at > not_before
    ]
    return DeadlineEntry(
        task_id=task_id,
        stage=deadline.stage,
        case_id=case_id,
        start=deadline.start.astimezone(UTC),
        due_at=deadline.due_at.astimezone(UTC),
        dues=(*warns, Due(BREACH, deadline.due_at.astimezone(UTC))),
        base_level=base_level,
    )


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
        raw = self.entries.get(entry_key(task_id, stage))
        return None if raw is None else DeadlineEntry.from_dict(raw)

    # --- changes (each idempotent) ---------------------------------------------------

    def upsert(self, entry: DeadlineEntry) -> DeadlineEntry:
        """Start or restate a stage clock.

        Restating the same deadline (same due_at: a redelivered event) keeps what already
        fired and any escalation in progress; a different due_at starts the clock afresh.
        """
        old_raw = self.entries.get(entry.key)
        old = None if old_raw is None else DeadlineEntry.from_dict(old_raw)
        if old is not None and old.due_at == entry.due_at:
            fired = set(old.fired) | set(entry.fired)
            kept = tuple(
                d for d in entry.dues if d.kind != ESCALATE and entry.due_id(d) not in fired
            )
            pending = tuple(d for d in old.dues if d.kind == ESCALATE)
            entry = replace(entry, dues=kept + pending, fired=tuple(sorted(fired)), level=old.level)
        else:
            fired = set(entry.fired)
            entry = replace(
                entry, dues=tuple(d for d in entry.dues if entry.due_id(d) not in fired)
            )
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
            for b in sorted({s["bucket"] for s in raw["dues"]}):
                self._bucket_remove(b, key)
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
        fresh = tuple(d for d in escalation if entry.due_id(d) not in entry.fired)
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
            for b in range(int(cursor["low"]), last + 1):
                items.extend(self._pop_bucket(b, now, last + 1))
        if cursor != {"low": last, "primed": True}:
            self.buckets[self._cursor_key()] = {"low": last, "primed": True}
        return sorted(items, key=_item_order)

    def peek_due(self, now: datetime) -> list[DueItem]:
        """What `pop_due(now)` would return, changing nothing."""
        now = now.astimezone(UTC)
        cursor = self.buckets.get(self._cursor_key())
        if cursor is None:
            return []
        items: list[DueItem] = []
        for b in range(int(cursor["low"]), self._bucket_of(now) + 1):
            for key in self.buckets.get(self._bucket_key(b)) or []:
                raw = self.entries.get(key)
                if raw is None:
                    continue
                due = [Due.from_dict(s) for s in raw["dues"] if _due_in(s, b, now)]
                if due:
                    entry = DeadlineEntry.from_dict(raw)
                    items.extend(self._item(entry, d) for d in due)
        return sorted(items, key=_item_order)

    def _pop_bucket(self, b: int, now: datetime, next_bucket: int) -> list[DueItem]:
        """Fire what is due in bucket b and rewrite its key list once."""
        bkey = self._bucket_key(b)
        keys = self.buckets.get(bkey)
        if not keys:
            return []
        items: list[DueItem] = []
        keep: list[str] = []
        for key in keys:
            raw = self.entries.get(key)
            if raw is None:
                continue
            fired, raw = self._fire_entry(raw, b, now, next_bucket)
            items.extend(fired)
            if any(s["bucket"] == b for s in raw["dues"]):
                keep.append(key)
        if keep != list(keys):
            if keep:
                self.buckets[bkey] = keep
            else:
                del self.buckets[bkey]
        return items

    def _fire_entry(
        self, raw: dict[str, Any], b: int, now: datetime, next_bucket: int
    ) -> tuple[list[DueItem], dict[str, Any]]:
        """Fire the entry's dues filed under bucket b that are due; returns the stored entry."""
        due_now = [Due.from_dict(s) for s in raw["dues"] if _due_in(s, b, now)]
        if not due_now:
            return [], raw
        entry = DeadlineEntry.from_dict(raw)
        firing = set(due_now)
        remaining = [d for d in entry.dues if d not in firing]
        level = entry.level
        items: list[DueItem] = []
        for due in sorted(due_now, key=lambda d: d.at):
            items.append(self._item(entry, due))
            if due.kind in (BREACH, ESCALATE):
                level = entry.base_level if due.kind == BREACH else due.level
                remaining.extend(self._next_escalation(due.at, level, entry, remaining))
        fired = tuple(sorted({*entry.fired, *(i.id for i in items)}))
        updated = replace(entry, dues=tuple(remaining), level=level, fired=fired)
        return items, self._write(updated, raw, floor=next_bucket, owner_bucket=b)

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
        return [] if entry.due_id(due) in entry.fired else [due]

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

    def _write(
        self,
        entry: DeadlineEntry,
        old_raw: dict[str, Any] | None,
        floor: int | None = None,
        owner_bucket: int | None = None,
    ) -> dict[str, Any]:
        """Store the entry and move its key between buckets; nothing when unchanged.

        `owner_bucket` is the bucket `pop_due` is rewriting itself, so it is left alone here.
        """
        if floor is None:
            floor = self._floor()
        new_raw = self._stored_form(entry, old_raw, floor)
        if new_raw == old_raw:
            return new_raw
        old_buckets = {s["bucket"] for s in old_raw["dues"]} if old_raw else set()
        new_buckets = {s["bucket"] for s in new_raw["dues"]}
        for b in sorted(old_buckets - new_buckets - {owner_bucket}):
            self._bucket_remove(b, entry.key)
        for b in sorted(new_buckets - old_buckets - {owner_bucket}):
            self._bucket_add(b, entry.key)
        self.entries[entry.key] = new_raw
        if new_buckets - old_buckets:
            self._note_filed(min(new_buckets - old_buckets))
        return new_raw

    def _stored_form(
        self, entry: DeadlineEntry, old_raw: dict[str, Any] | None, floor: int | None
    ) -> dict[str, Any]:
        """The entry as stored: each due with its bucket.

        A due keeps the bucket it was filed under; a new one goes to its own minute, or to
        `floor` when that minute is already behind the cursor.
        """
        previous = {_signature(s): s["bucket"] for s in (old_raw or {}).get("dues", [])}
        raw = entry.to_dict()
        for d in raw["dues"]:
            b = previous.get(_signature(d))
            if b is None:
                b = self._bucket_of(parse_ts(d["at"]))
                b = b if floor is None else max(b, floor)
            d["bucket"] = b
        return raw

    def _bucket_add(self, b: int, key: str) -> None:
        bkey = self._bucket_key(b)
        keys = self.buckets.get(bkey) or []
        if key not in keys:
            self.buckets[bkey] = sorted([*keys, key])

    def _bucket_remove(self, b: int, key: str) -> None:
        bkey = self._bucket_key(b)
        keys = self.buckets.get(bkey)
        if not keys or key not in keys:
            return
        rest = [k for k in keys if k != key]
        if rest:
            self.buckets[bkey] = rest
        else:
            del self.buckets[bkey]

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
        return int(t.timestamp() // self.bucket_seconds)

    def _bucket_key(self, b: int) -> str:
        return f"{self.namespace}{b}"

    def _cursor_key(self) -> str:
        return f"{self.namespace}{CURSOR}"


def _due_in(stored: dict[str, Any], b: int, now: datetime) -> bool:
    return bool(stored["bucket"] == b and parse_ts(stored["at"]) <= now)


def _signature(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["kind"], d["at"], d.get("fraction"), d.get("level"))


def _item_order(item: DueItem) -> tuple[Any, ...]:
    return (
        item.fire_at,
        item.task_id,
        item.stage,
        KINDS.index(item.kind),
        item.fraction or 0.0,
        item.level or 0,
    )


# --- following a case's events (what the deadline processor does with each) -----------


def command_for(item: DueItem) -> Message:
    return Message(id=item.id, type=item.command_type, case_id=item.case_id, at=iso(item.fire_at),
                   actor="system:deadlines", data=item.command_data(), causation_id=item.id)


def follow_event(book: DeadlineBook, event: Message, policy: SlaPolicy,
                 calendar: WorkingCalendar, department_levels: dict[str, str]) -> None:
    """Start, move or stop stage clocks as the case's events say. Idempotent.

    Breaches are first reported at the ladder level of the task's department (a county
    department's overdue task goes to county leadership next, not to the village).
    Warnings already past when a clock is picked up (the resolve clock runs from
    dispatch but is watched from signing) are not replayed.
    """
    d = event.data
    task_id = str(d.get("task_id", ""))
    at = event.at_dt
    base_level = policy.start_level(department_levels.get(str(d.get("department", "")), ""))

    def start(stage: str, start_at: str | datetime, due: str) -> None:
        start_dt = parse_ts(start_at) if isinstance(start_at, str) else start_at
        book.upsert(plan_deadlines(
            case_id=event.case_id, task_id=task_id, stage=stage, start=start_dt, policy=policy,
            calendar=calendar, category_code=str(d.get("category_code", "")),
            due_at=parse_ts(due), base_level=base_level, not_before=at,
        ))

    match event.type:
        case ev.TASK_DISPATCHED:
            start("sign", event.at, d["sign_due"])
        case ev.TASK_SIGNED:
            book.cancel(task_id, "sign")
            start("resolve", d.get("dispatched_at") or event.at, d["resolve_due"])
        case ev.TASK_PROGRESS_NOTED:
            book.note_progress(task_id, "resolve", at)
        case ev.TASK_RESOLVED:
            book.cancel(task_id, "resolve")
            start("verify", event.at, d["verify_due"])
        case ev.TASK_REOPENED:
            book.cancel(task_id)
            start("resolve", event.at, d["resolve_due"])
        case ev.EXTENSION_GRANTED:
            entry = book.get(task_id, "resolve")
            if entry is not None:
                book.cancel(task_id, "resolve")
                book.upsert(plan_deadlines(
                    case_id=event.case_id, task_id=task_id, stage="resolve", start=entry.start,
                    policy=policy, calendar=calendar, category_code=str(d.get("category_code", "")),
                    due_at=parse_ts(d["resolve_due"]),
                    base_level=entry.base_level, not_before=at,
                ))
        case ev.TASK_VERIFIED | ev.TASK_CANCELLED | ev.TASK_SENT_BACK | ev.TASK_CLOSED:
            book.cancel(task_id)
        case _:
            pass
