"""The deadline agent skips, unread, the case events no stage clock follows: what it may skip
is read off the envelope's end, and anything that look cannot place is decoded in full."""

from __future__ import annotations

import json

from gridflow.contract.payloads import EVENT_TYPES
from gridflow.core.calendar import load_bundled_calendar
from gridflow.core.deadlines.book import DeadlineBook
from gridflow.core.deadlines.follow import FOLLOWED_TYPES, follow_event
from gridflow.core.sla import load_bundled_policy
from gridflow.events import Message
from processors.deadlines import _may_move_a_clock


def event(type_: str, data: dict[str, object] | None = None) -> Message:
    return Message(id=f"e-{type_}", type=type_, case_id="AJ20261123-ABCDEFGH",
                   at="2026-11-23T01:00:00Z", actor="system:test", data=data or {})


def test_every_event_type_is_skipped_exactly_when_no_clock_follows_it() -> None:
    assert FOLLOWED_TYPES < EVENT_TYPES
    for type_ in sorted(EVENT_TYPES):
        raw = event(type_).encode()
        assert _may_move_a_clock(raw) == (type_ in FOLLOWED_TYPES), type_


def test_a_skipped_type_really_moves_no_clock() -> None:
    """follow_event itself ignores what the agent skips (a type outside FOLLOWED_TYPES), even
    with data that would start a clock if it were a TaskDispatched."""
    book = DeadlineBook({}, {})
    dispatched = {"task_id": "AJ20261123-ABCDEFGH-T01", "department": "D01",
                  "sign_due": "2026-11-23T03:00:00Z", "category_code": "E0101"}
    cal, policy = load_bundled_calendar(), load_bundled_policy()
    for type_ in sorted(EVENT_TYPES - FOLLOWED_TYPES):
        follow_event(book, event(type_, dispatched), policy, cal, {})
    assert book.entries == {} and book.buckets == {}


def test_what_the_cheap_look_cannot_place_is_decoded() -> None:
    # the envelope's type is not last (not canonical): a nested "type" at the end is not taken
    # for the envelope's
    shuffled = json.dumps({"type": "TaskDispatched", "id": "x", "at": "2026-11-23T01:00:00Z",
                           "actor": "a", "data": {"note": {"type": "CaseFiled"}}},
                          separators=(",", ":")).encode()
    assert _may_move_a_clock(shuffled)
    nested_last = b'{"id":"x","data":{"type":"CaseFiled"}}'
    assert _may_move_a_clock(nested_last)  # "}}": the type belongs to a nested object
    for odd in (b"", None, b"not json", b'{"type":"Case Filed"}', b"\xff\xfe"):
        assert _may_move_a_clock(odd)
    # a canonical envelope with trailing whitespace or a newline is still read
    assert not _may_move_a_clock(event("CaseFiled").encode() + b"\n")
