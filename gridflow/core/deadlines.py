"""The deadline book: every pending warning, breach and escalation instant of open task stages.

Guarantee: `pop_due(now)` returns each due item once, removes it, and reads only the time
buckets between its previous call and `now` plus the entries it fires — never the whole open
book. All state lives in two injected key→value maps with JSON values (faust tables in the
processor), so a worker rebuilt from the same maps loses nothing and fires nothing twice;
item ids are deterministic, so a repeat after a crash is recognisable downstream.

Storage
-------
Both maps hold compact strings, so a million open stages take about 350 MB resident, not the
2 GB of a dict of ISO strings per entry (bench/deadlines.py; docs/PERFORMANCE.md):

* ``entries``: ``"<task_id>#<stage>"`` →
  ``"<start>|<due_at>|<base_level>|<level>|<dues>|<fired>|<case>"`` (`encode_entry`). Instants are epoch seconds (``1793581210``, or with six decimals when
  they carry microseconds); ``level`` is empty before the breach. ``dues`` are comma-separated
  ``<k><at>[f<fraction>][l<level>][@<bucket>]`` with ``k`` = ``w``/``b``/``e`` (warn, breach,
  escalate); ``@<bucket>`` is written only when the due is filed under another bucket than its
  own minute. ``fired`` are comma-separated marks of the items already returned for this
  deadline: ``k`` plus the item id's detail (``w0.5``, ``b``, ``e2``). ``case`` is empty when
  the case id is the task id up to its last ``-`` (``AJ…-T01`` → ``AJ…``), else ``=<case_id>``.
* ``buckets``: ``"<namespace><minute number>"`` → the keys of the entries with a due in that
  minute, joined by newlines, plus ``"<namespace>~cursor"`` → ``{"low": n, "primed": bool}``:
  every bucket below ``low`` is empty (``primed`` once ticking started; before that ``low``
  follows the earliest filing). A tick reads buckets ``low`` … ``now`` and moves ``low`` to now's
  minute. A due whose minute is already below the cursor (planned late, caught up after
  downtime) is filed under the cursor bucket, so it fires on the next call.

The earlier format (an entry as a dict of ISO strings with each due's ``bucket`` and the fired
item ids, a bucket as a list of keys) is still read, so a worker restoring an older changelog
goes on where it was; every entry or bucket written again is written in the compact form.
``bucket_seconds`` must stay the same for the life of the tables (bucket keys depend on it).

Values are replaced, never mutated in place (faust tables persist on assignment only). Build
faust tables without a ``default`` (a default would make lookups of empty buckets write), and
give each partition's book its own ``namespace`` so bucket keys never collide across partitions.

Escalation is one level at a time: with a policy and calendar, firing a breach (at the task's
base level) schedules the escalation to the next level at ``next_escalation_at(breach instant)``,
firing that schedules the next, and `note_progress` restarts the wait at the current level.
Every instant derives from scheduled instants, never from the tick time, so a replay agrees.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
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
KIND_LETTER = {WARN: "w", BREACH: "b", ESCALATE: "e"}
KIND_OF_LETTER = {v: k for k, v in KIND_LETTER.items()}
ID_LENGTH = 32  # derived_id: a mark is never this long

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
    # marks (`due_mark`) of the items already returned for this deadline; an entry stored in
    # the earlier format may also hold their full item ids
    fired: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return entry_key(self.task_id, self.stage)

    def due_id(self, due: Due) -> str:
        return item_id(self.task_id, self.stage, due.kind, self.due_at, due.fraction, due.level)

    def has_fired(self, due: Due) -> bool:
        """Whether the item of `due` was already returned for this deadline."""
        if due_mark(due) in self.fired:
            return True
        return any(len(f) == ID_LENGTH for f in self.fired) and self.due_id(due) in self.fired

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
    return derived_id("deadline", task_id, stage, kind, iso(due_at), _detail(fraction, level))


def _detail(fraction: float | None, level: int | None) -> str:
    return f"{fraction:g}" if fraction is not None else str(level if level is not None else "")


def due_mark(due: Due) -> str:
    """Short for the item id of `due` within one deadline: kind letter plus the id's detail."""
    return KIND_LETTER[due.kind] + _detail(due.fraction, due.level)


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
            for b in sorted(set(self._decode(key, raw)[1])):
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
            rest: dict[int, list[str]] = {}
            for b in range(int(cursor["low"]), last + 1):
                items.extend(self._pop_bucket(b, now, last + 1, filed, rest))
            for b, keys in sorted(filed.items()):
                self._bucket_extend(b, keys)
            for b, keep in rest.items():
                if keep:
                    self.buckets[self._bucket_key(b)] = _bucket_value(keep)
                else:
                    del self.buckets[self._bucket_key(b)]
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
            for key in _bucket_keys(self.buckets.get(self._bucket_key(b))):
                raw = self.entries.get(key)
                if raw is None:
                    continue
                entry, filed = self._decode(key, raw)
                items.extend(
                    self._item(entry, d)
                    for d, fb in zip(entry.dues, filed, strict=True)
                    if fb == b and d.at <= now
                )
        return sorted(items, key=_item_order)

    def _pop_bucket(
        self,
        b: int,
        now: datetime,
        next_bucket: int,
        filed: dict[int, list[str]],
        rest: dict[int, list[str]],
    ) -> list[DueItem]:
        """Fire what is due in bucket b; its new key list (if it changed) goes to `rest`."""
        stored = self.buckets.get(self._bucket_key(b))
        keys = _bucket_keys(stored)
        if not keys:
            return []
        items: list[DueItem] = []
        keep: list[str] = []
        for key in keys:
            raw = self.entries.get(key)
            if raw is None:
                continue
            fired, still_here = self._fire_entry(key, raw, b, now, next_bucket, filed)
            items.extend(fired)
            if still_here:
                keep.append(key)
        if keep != keys or not isinstance(stored, str):
            rest[b] = keep
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
        """Fire the entry's dues filed under bucket b that are due.

        Returns the items and whether the entry still has a due filed under bucket b.
        """
        entry, buckets = self._decode(key, raw)
        due_now = [d for d, fb in zip(entry.dues, buckets, strict=True) if fb == b and d.at <= now]
        if not due_now:
            return [], b in buckets
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
        return items, b in new_buckets

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

    def _decode(self, key: str, raw: Any) -> tuple[DeadlineEntry, tuple[int, ...]]:
        """A stored entry and the bucket each of its dues is filed under (either format)."""
        if isinstance(raw, str):
            return decode_entry(key, raw, self.bucket_seconds)
        entry = DeadlineEntry.from_dict(raw)  # the earlier format: a dict of ISO strings
        return entry, tuple(int(s["bucket"]) for s in raw["dues"])

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
        old_set = set(old[1]) if old else set()
        new_set = set(new_buckets)
        for b in sorted(old_set - new_set - {owner_bucket}):
            self._bucket_remove(b, entry.key)
        for b in sorted(new_set - old_set - {owner_bucket}):
            if filed is None:
                self._bucket_extend(b, [entry.key])
            else:
                filed.setdefault(b, []).append(entry.key)
        self.entries[entry.key] = new_raw
        if new_set - old_set and filed is None:
            self._note_filed(min(new_set - old_set))
        return new_buckets

    def _bucket_extend(self, b: int, keys: list[str]) -> None:
        bkey = self._bucket_key(b)
        stored = self.buckets.get(bkey)
        if len(keys) == 1 and stored and isinstance(stored, str):
            if not _holds(stored, keys[0]):
                self.buckets[bkey] = f"{stored}\n{keys[0]}"
            return
        present = _bucket_keys(stored)
        seen = set(present)
        added = [k for k in dict.fromkeys(keys) if k not in seen]
        if added:
            self.buckets[bkey] = _bucket_value([*present, *added])

    def _bucket_remove(self, b: int, key: str) -> None:
        bkey = self._bucket_key(b)
        stored = self.buckets.get(bkey)
        if not stored:
            return
        if isinstance(stored, str) and not _holds(stored, key):
            return
        rest = [k for k in _bucket_keys(stored) if k != key]
        if rest:
            self.buckets[bkey] = _bucket_value(rest)
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
        return _bucket_number(t, self.bucket_seconds)

    def _bucket_key(self, b: int) -> str:
        return f"{self.namespace}{b}"

    def _cursor_key(self) -> str:
        return f"{self.namespace}{CURSOR}"


# --- the stored forms -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MICRO = timedelta(microseconds=1)


def encode_entry(entry: DeadlineEntry, buckets: tuple[int, ...], bucket_seconds: int) -> str:
    """The stored string of an entry whose dues are filed under `buckets` (module docstring)."""
    dues = []
    for d, b in zip(entry.dues, buckets, strict=True):
        token = KIND_LETTER[d.kind] + _instant(d.at)
        if d.fraction is not None:
            token += f"f{d.fraction!r}"
        if d.level is not None:
            token += f"l{d.level}"
        if b != _bucket_number(d.at, bucket_seconds):
            token += f"@{b}"
        dues.append(token)
    case = "" if entry.case_id and _case_of(entry.task_id) == entry.case_id else f"={entry.case_id}"
    level = "" if entry.level is None else str(entry.level)
    return (
        f"{_instant(entry.start)}|{_instant(entry.due_at)}|{entry.base_level}|{level}|"
        f"{','.join(dues)}|{','.join(entry.fired)}|{case}"
    )


def decode_entry(
    key: str, raw: str, bucket_seconds: int
) -> tuple[DeadlineEntry, tuple[int, ...]]:
    """The entry stored under `key` as `raw`, and the bucket each of its dues is filed under."""
    task_id, _, stage = key.rpartition("#")
    start, due_at, base_level, level, dues_s, fired, case = raw.split("|", 6)
    dues: list[Due] = []
    buckets: list[int] = []
    for token in dues_s.split(",") if dues_s else ():
        m = _DUE_TOKEN.fullmatch(token)
        if m is None:
            raise ValueError(f"deadline entry {key!r}: unreadable due {token!r}")
        letter, at_s, fraction, lvl, bucket = m.groups()
        at = _parse_instant(at_s)
        dues.append(Due(
            KIND_OF_LETTER[letter], at,
            fraction=None if fraction is None else float(fraction),
            level=None if lvl is None else int(lvl),
        ))
        buckets.append(_bucket_number(at, bucket_seconds) if bucket is None else int(bucket))
    entry = DeadlineEntry(
        task_id=task_id,
        stage=stage,
        case_id=case[1:] if case else _case_of(task_id),
        start=_parse_instant(start),
        due_at=_parse_instant(due_at),
        dues=tuple(dues),
        base_level=int(base_level),
        level=int(level) if level else None,
        fired=tuple(fired.split(",")) if fired else (),
    )
    return entry, tuple(buckets)


_DUE_TOKEN = re.compile(r"([wbe])(-?[0-9]+(?:\.[0-9]+)?)(?:f([^l@]+))?(?:l(-?[0-9]+))?(?:@(-?[0-9]+))?")


def _case_of(task_id: str) -> str:
    """The case id a task id starts with: task ids are ``<case_id>-T<nn>``."""
    return task_id.rpartition("-")[0]


def _instant(t: datetime) -> str:
    us = (t - _EPOCH) // _MICRO
    sec, frac = divmod(us, 1_000_000)
    return f"{sec}.{frac:06d}" if frac else str(sec)


def _parse_instant(s: str) -> datetime:
    sec, _, frac = s.partition(".")
    return _EPOCH + timedelta(seconds=int(sec), microseconds=int(frac.ljust(6, "0")) if frac else 0)


def _bucket_number(t: datetime, bucket_seconds: int) -> int:
    return int(t.timestamp() // bucket_seconds)


def _bucket_keys(stored: Any) -> list[str]:
    """The keys of a stored bucket: newline-joined, or a list in the earlier format."""
    if not stored:
        return []
    return stored.split("\n") if isinstance(stored, str) else list(stored)


def _bucket_value(keys: list[str]) -> str:
    return "\n".join(keys)


def _holds(stored: str, key: str) -> bool:
    """Whether a newline-joined bucket holds `key`."""
    return (
        stored == key
        or stored.startswith(key + "\n")
        or stored.endswith("\n" + key)
        or f"\n{key}\n" in stored
    )


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
