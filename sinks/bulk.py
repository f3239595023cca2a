"""Bulk writes of read-model rows: INSERT, INSERT ... ON CONFLICT DO NOTHING and the upsert, as
one driver-level executemany per table, values converted once per column (SQLite, PostgreSQL).

Guarantee: the same values in the database as the column types' own bind processors would
write (sinks.models.UTCDateTime, JSON); `converters` is what the fast replay's COPY and
executemany use too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Insert, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gridflow.events import iso
from sinks.models import UTCDateTime, utc_datetime, utc_text


def column_default(column: Column[Any]) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None  # type: ignore[attr-defined]


def _dialect_insert(table: Table, dialect_name: str) -> sqlite.Insert | postgresql.Insert:
    dialects = {"sqlite": sqlite, "postgresql": postgresql}
    if dialect_name not in dialects:
        raise NotImplementedError(f"the read models need SQLite or PostgreSQL, not {dialect_name}")
    return dialects[dialect_name].insert(table)


@functools.cache
def _insert_new(table: Table, dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING: rows whose primary key is taken stay as they are."""
    return _dialect_insert(table, dialect_name).on_conflict_do_nothing()


@functools.cache
def _upsert(table: Table, dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET every other column."""
    stmt = _dialect_insert(table, dialect_name)
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
    )


Converter = tuple[str, Any, Callable[[Any], Any]]  # column, default, to-driver function


def converters(table: Table, dialect: Dialect, json_as_text: bool = False,
               times_as_text: bool = False) -> list[Converter]:
    """(column, default, to-driver function) per column: what the column types' bind
    processors do (sinks.models.UTCDateTime, JSON), without their per-row dispatch.
    `json_as_text`: JSON columns as their text on PostgreSQL too (what a COPY of jsonb
    reads, and a str crosses a process boundary where psycopg's Jsonb does not).
    `times_as_text`: timestamps as ISO 8601 text with their offset on PostgreSQL too (what a
    COPY of timestamptz reads as the same instant; see sinks.replay_parallel)."""
    serialize = getattr(dialect, "_json_serializer", None) or json.dumps
    out: list[Converter] = []
    for c in table.columns:
        fn: Callable[[Any], Any] = same
        if isinstance(c.type, UTCDateTime):
            fn = _remembered(utc_text if dialect.name == "sqlite"
                             else utc_iso if times_as_text else utc_datetime)
        elif isinstance(c.type, JSON):
            if dialect.name == "sqlite" or json_as_text:
                def fn(v: Any, dumps: Callable[[Any], str] = serialize) -> Any:
                    return None if v is None else dumps(v)
            else:
                from psycopg.types.json import Jsonb

                def fn(v: Any, dumps: Callable[[Any], str] = serialize) -> Any:
                    return None if v is None else Jsonb(v, dumps)
        out.append((c.name, column_default(c), fn))
    return out


_CACHES: dict[Callable[[Any], Any], dict[Any, Any]] = {}


def _remembered(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A timestamp conversion remembered per value: an event's time is in its ledger, history,
    outcome and case rows (bounded: forgotten every 100,000 values). Equal values give equal
    results: a datetime equal to another is the same instant, and the result is that instant.
    Every column converted by `fn`, in every table, shares one memory: an instant met in the
    ledger is not converted again for the task's row."""
    cache = _CACHES.setdefault(fn, {})

    def convert(value: Any) -> Any:
        try:
            return cache[value]
        except KeyError:
            if len(cache) >= 100_000:
                cache.clear()
            out = cache[value] = fn(value)
            return out
        except TypeError:  # unhashable: not a timestamp the converter takes anyway
            return fn(value)

    return convert


def same(value: Any) -> Any:
    return value


def utc_iso(value: Any) -> str | None:
    """A timestamp as `utc_datetime` takes it, as the events' ISO 8601 text (`iso`: UTC, every
    microsecond, "2026-11-02T01:00:00.000250Z")."""
    moment = utc_datetime(value)
    return None if moment is None else iso(moment)


def row_maker(convert: list[Converter], name: str, as_dict: bool = False,
              ) -> Callable[[dict[str, Any]], Any]:
    """A function making a row's driver parameters, in `convert`'s order (a tuple) or by
    column name (`as_dict`): what `fn(row.get(column, default))` per column gives, from one
    expression compiled once per table instead of a loop over the columns for every row. A row
    missing columns takes their defaults; a row with keys that are not columns is fine."""
    defaults = {column: default for column, default, _ in convert}
    scope: dict[str, Any] = {"defaults": defaults, "convert": convert}
    values = []
    for i, (column, _, fn) in enumerate(convert):
        value = f"row[{column!r}]"
        if fn is not same:
            scope[f"c{i}"] = fn
            value = f"c{i}({value})"
        values.append(f"{column!r}: {value}" if as_dict else value)
    built = f"{{{', '.join(values)}}}" if as_dict else f"({', '.join(values)},)"
    slow = ("{c: fn(row.get(c, d)) for c, d, fn in convert}" if as_dict
            else "tuple([fn(row.get(c, d)) for c, d, fn in convert])")
    source = (f"def make(row):\n"
              f"    try:\n"
              f"        if len(row) != {len(convert)}:\n"
              f"            row = {{**defaults, **row}}\n"
              f"        return {built}\n"
              f"    except KeyError:  # keys that are not columns, and columns missing\n"
              f"        return {slow}\n")
    exec(compile(source, f"<row maker: {name}>", "exec"), scope)
    made: Callable[[dict[str, Any]], Any] = scope["make"]
    return made


@functools.cache
def _bulk_statement(table: Table, kind: str, dialect: Dialect,
                    ) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    """The driver-level SQL of an insert of every column, and how to make its parameters."""
    stmt: Any = {
        "upsert": lambda: _upsert(table, dialect.name),
        "insert_new": lambda: _insert_new(table, dialect.name),
        "insert": lambda: insert(table),
    }[kind]()
    compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
    convert = converters(table, dialect)
    order = {name: i for i, (name, _, _) in enumerate(convert)}
    positional = compiled.positiontup is not None
    if positional:  # qmark (SQLite): parameters in the statement's order
        convert = [convert[order[name]] for name in compiled.positiontup]
    return str(compiled), row_maker(convert, f"{table.name} {kind}", as_dict=not positional)


def bulk_write(session: Session, table: Table, kind: str, rows: list[dict[str, Any]]) -> None:
    """INSERT (kind "insert"), INSERT ... ON CONFLICT DO NOTHING ("insert_new") or the upsert
    ("upsert") of `rows` in the session's transaction, as one driver-level executemany."""
    conn = session.connection()
    sql, make = _bulk_statement(table, kind, conn.dialect)
    conn.exec_driver_sql(sql, [make(row) for row in rows])
