"""Deadlines of task stages: planning a stage's clock (`planning`), the minute-bucket book of
pending instants (`book`), its stored strings (`codec`), and following a case's events
(`follow`). Pure: time is an argument, state lives in the two maps the book is given."""

from gridflow.core.deadlines.book import DeadlineBook, JsonMap
from gridflow.core.deadlines.codec import decode_entry, encode_entry
from gridflow.core.deadlines.follow import command_for, follow_event
from gridflow.core.deadlines.planning import (
    BREACH,
    BUCKET_SECONDS,
    COMMAND_OF_KIND,
    CURSOR,
    ESCALATE,
    KIND_LETTER,
    KIND_OF_LETTER,
    KINDS,
    WARN,
    DeadlineEntry,
    Due,
    DueItem,
    due_mark,
    entry_from_deadline,
    entry_key,
    item_id,
    plan_deadlines,
)

__all__ = [
    "BREACH", "BUCKET_SECONDS", "COMMAND_OF_KIND", "CURSOR", "ESCALATE", "KINDS", "KIND_LETTER",
    "KIND_OF_LETTER", "WARN", "DeadlineBook", "DeadlineEntry", "Due", "DueItem", "JsonMap",
    "command_for", "decode_entry", "due_mark", "encode_entry", "entry_from_deadline",
    "entry_key", "follow_event", "item_id", "plan_deadlines",
]
