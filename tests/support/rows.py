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


def json_columns() -> dict[str, frozenset[str]]:
    """The read-model tables' JSON columns, by table."""
    from sqlalchemy import JSON

    from sinks.models import Base

    return {t.name: frozenset(c.name for c in t.columns if isinstance(c.type, JSON))
            for t in Base.metadata.sorted_tables}


def with_json_as_values(rows: dict[str, list[list[list[str]]]]) -> dict[str, list[list[list[str]]]]:
    """A `dump` (its values shown with repr) whose JSON columns show the value their text
    holds, in canonical JSON: two databases written with other JSON text (json.dumps's spaced
    form before, the compact form since) compare equal when they hold the same values."""
    import ast
    import json

    from gridflow.events import canonical_json

    columns = json_columns()
    out = {}
    for table, table_rows in rows.items():
        names = columns.get(table, frozenset())
        out[table] = sorted(
            [[k, v if k not in names or v == "None"
              else canonical_json(json.loads(ast.literal_eval(v))).decode()]
             for k, v in row] for row in table_rows)
    return out
