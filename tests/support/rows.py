"""The read-model tables as plain values, for the sink tests that compare two databases or a
database with a stored fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from sinks.models import create_schema, make_engine

READ_MODEL_TABLES = ("cases", "tasks", "reports", "photos", "task_history", "case_events",
                     "command_outcomes", "dead_letters")
TABLES = (*READ_MODEL_TABLES, "sink_offsets")


@contextmanager
def fresh_engine(url: str) -> Iterator[Engine]:
    """An engine on `url` with the read-model schema created, disposed of on leaving."""
    engine = make_engine(url)
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def dump(engine: Engine, tables: tuple[str, ...] = TABLES,
         show: Callable[[Any], str] = repr) -> dict[str, list[list[list[str]]]]:
    """Every row of every table, each as its sorted [column, show(value)] pairs, the rows sorted;
    sink_offsets without its wall-clock updated_at. Lists, so that a dump compares equal to one
    stored as JSON."""
    out = {}
    with engine.connect() as conn:
        for table in tables:
            found = conn.execute(text(f"SELECT * FROM {table}")).mappings()
            skip = {"updated_at"} if table == "sink_offsets" else set()
            out[table] = sorted(
                sorted([k, show(v)] for k, v in r.items() if k not in skip) for r in found)
    return out
