"""The deadline book's stored forms: compact strings in two key→value maps.

Both maps hold compact strings, so a million open stages take about 350 MB resident, not the
2 GB of a dict of ISO strings per entry (bench/deadlines.py; docs/PERFORMANCE.md):

* ``entries``: ``"<task_id>#<stage>"`` →
  ``"<start>|<due_at>|<base_level>|<level>|<dues>|<fired>|<case>"`` (`encode_entry`). Instants
  are epoch seconds (``1793581210``, or with six decimals when they carry microseconds);
  ``level`` is empty before the breach. ``dues`` are comma-separated
  ``<k><at>[f<fraction>][l<level>][@<bucket>]`` with ``k`` = ``w``/``b``/``e`` (warn, breach,
  escalate); ``@<bucket>`` is written only when the due is filed under another bucket than its
  own minute. ``fired`` are comma-separated marks of the items already returned for this
  deadline: ``k`` plus the item id's detail (``w0.5``, ``b``, ``e2``). ``case`` is empty when
  the case id is the task id up to its last ``-`` (``AJ…-T01`` → ``AJ…``), else ``=<case_id>``.
* ``buckets``: ``"<namespace><minute number>.<shard>"`` → the keys of the entries whose
  earliest pending due is filed under that minute (older books: every due's minute, and an
  unsharded ``"<namespace><minute number>"``), joined by newlines, plus ``"<namespace>~cursor"`` → ``{"low": n, "primed": bool}``
  (gridflow.core.deadlines.book).

Guarantee: `decode_entry(key, encode_entry(entry, buckets, s), s)` gives back the entry and
the buckets.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from gridflow.core.deadlines.planning import KIND_LETTER, KIND_OF_LETTER, DeadlineEntry, Due

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
        if b != bucket_number(d.at, bucket_seconds):
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
        buckets.append(bucket_number(at, bucket_seconds) if bucket is None else int(bucket))
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


def bucket_number(t: datetime, bucket_seconds: int) -> int:
    return int(t.timestamp() // bucket_seconds)


def bucket_keys(stored: str | None) -> list[str]:
    """The keys of a stored bucket (newline-joined)."""
    return stored.split("\n") if stored else []


def bucket_value(keys: list[str]) -> str:
    return "\n".join(keys)


def holds(stored: str, key: str) -> bool:
    """Whether a newline-joined bucket holds `key`."""
    return (
        stored == key
        or stored.startswith(key + "\n")
        or stored.endswith("\n" + key)
        or f"\n{key}\n" in stored
    )


