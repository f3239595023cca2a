"""Replay into an empty database: the whole log folded in memory, written once, one transaction.

Used by `sinks.runner.run_sink(drain=True, replay=True)` (`gridflow replay`, the replay
benchmark) when the target holds no row at all. Guarantee: the same rows as the live sink
(`sinks.sql.SqlSink.apply_batch`) builds from the same records — the fold is the live one
(`sinks.projector.ReadModels` and its event functions), only the per-batch database round trips
are gone: nothing is preloaded (the database is empty, every row is in memory), each case /
task / report / photo row is written once with its final values, and the append-only rows (the
ledger, task history, command outcomes, dead letters) are written in large chunks with one
driver-level executemany per table (SQLite) or COPY (PostgreSQL). Everything, the consumer's
offsets included, is one transaction: a replay that fails or is stopped leaves the database as
empty as it found it, and one that finishes can be continued by a live sink (or, built with
`until`, is a snapshot the live sink refuses, as `SqlSink` makes it).

Memory: the final case, task, report and photo rows and the ids of the applied events are held
until the end (about 1 KB per case and 100 B per event); the append-only rows only per chunk.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table

from gridflow import events as ev
from gridflow.events import Message, SchemaError
from sinks.bulk import converters, row_maker
from sinks.models import (
    Base,
    CaseEvent,
    CommandOutcome,
    DeadLetter,
    SinkOffset,
    TaskHistory,
    table_of,
)
from sinks.projector import Position, ProjectionError, ReadModels
from sinks.sql import (
    SINK_LOCK,
    BatchStats,
    Record,
    _dead_letter,
    _decode_case_event,
    _decode_dead_letter,
    _optional_ts,
    decode_hashed,
)

log = logging.getLogger("gridflow.sinks.replay_fast")

CHUNK_ROWS = 10_000  # append-only rows held before they are written (within the transaction)


class NotEmpty(RuntimeError):
    """The target holds rows: the fast path does not apply (the caller uses the live path)."""


class _MemoryModels(ReadModels):
    """The live fold over rows that all live in memory: nothing to preload from an empty DB."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # never touches a session

    def preload(self, messages: Iterable[Message]) -> None:
        return None


class Replayer:
    """Feed it every record of the log from offset 0 (case events and dead letters, in the
    order a consumer reads them), then `finish()`; `abort()` on any failure.

    `begin()` opens the one write transaction and raises NotEmpty if any read-model table
    (or sink_offsets) holds a row.
    """

    def __init__(self, engine: Engine, consumer: str = "sql-sink",
                 until: datetime | None = None, chunk_rows: int = CHUNK_ROWS) -> None:
        if until is not None and until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        self.engine = engine
        self.consumer = consumer
        self.until = until.astimezone(UTC) if until is not None else None
        self.chunk_rows = chunk_rows
        self.models = _MemoryModels()
        self.applied_ids: set[str] = set()
        self.dead: dict[str, dict[str, Any]] = {}  # id -> row, first one wins
        self.next: dict[tuple[str, int], int] = {}
        self._writer: _Writer | None = None
        self.write_s = 0.0

    # --- the transaction ------------------------------------------------------------------
    def begin(self) -> None:
        writer = _SqliteWriter(self.engine) if self.engine.dialect.name == "sqlite" \
            else _PgWriter(self.engine)
        try:
            writer.begin()
            busy = [t.name for t in _TABLES if writer.has_rows(t)]
            if busy:
                raise NotEmpty(f"the target holds rows ({', '.join(busy)})")
            writer.prepare()
        except BaseException:
            writer.abort()
            raise
        self._writer = writer

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def finish(self) -> None:
        """Write the final rows and the consumer's offsets, and commit (durably)."""
        w = self._need_writer()
        self.write_rows()
        if self.dead:
            self._write(table_of(DeadLetter), list(self.dead.values()))
        now = datetime.now(UTC)
        self._write(table_of(SinkOffset), [
            {"consumer": self.consumer, "topic": topic, "partition": partition,
             "next_offset": offset, "as_of": self.until, "updated_at": now}
            for (topic, partition), offset in sorted(self.next.items())
        ])
        t = time.perf_counter()
        w.commit()
        self.write_s += time.perf_counter() - t
        self._writer = None

    def write_rows(self) -> None:
        """The append-only rows left and the final case, task, report and photo rows, through
        the writer (a folding process's ships them: sinks.replay_parallel)."""
        m = self.models
        self._write_append_only(force=True)
        for rows in (m.cases, m.tasks, m.reports, m.photos):
            self._write(rows.table, list(rows.rows.values()))

    def write_made(self, table: Table, values: list[tuple[Any, ...]]) -> None:
        """Rows whose driver values a folding process made (sinks.replay_parallel), in the
        column order of its row maker for this table, JSON columns as text."""
        if values:
            t = time.perf_counter()
            self._need_writer().write_made(table, values)
            self.write_s += time.perf_counter() - t

    # --- records ----------------------------------------------------------------------------
    def add_polled(self, polled: dict[Any, list[Any]], dead_topic: str) -> BatchStats:
        """One poll's records of every partition: dead letters from `dead_topic`, case events
        from the others."""
        last = BatchStats()
        for tp, batch in polled.items():
            if tp.topic == dead_topic:
                last.add(self.add_dead_letter_records(batch))
            else:
                last.add(self.add_case_records(batch))
        # The fold holds every case until the end, so the heap grows with the log and each
        # full collection would walk all of it again (about a tenth of a replay's time at
        # 300,000 events). What the batches left is frozen: the collector no longer walks it.
        # The caller unfreezes it when the replay ends, whatever the outcome (a folding
        # process ends with it).
        gc.freeze()
        return last

    def add_case_records(self, records: Iterable[Record]) -> BatchStats:
        """What SqlSink.apply_batch does with case-events records, in memory."""
        t0 = time.perf_counter()
        stats = BatchStats()
        models, seen, until, nxt = self.models, self.applied_ids, self.until, self.next
        for r in records:
            stats.records += 1
            tp = (r.topic, r.partition)
            if r.offset + 1 > nxt.get(tp, 0):
                nxt[tp] = r.offset + 1
            quick = decode_hashed(r.value)  # its time and hash are kept by the message
            if quick is not None:
                m = quick[0]
            else:  # anything unusual: the live sink's decoding, its errors, its hashing
                try:
                    m = _decode_case_event(r.value)
                except SchemaError as exc:
                    self._dead(_dead_letter(r, f"undecodable case event: {exc}"), stats)
                    continue
            if m.id in seen:
                stats.duplicates += 1
                continue
            if until is not None and m.at_dt > until:
                stats.after_until += 1
                continue
            try:
                models.fold(m, Position(r.topic, r.partition, r.offset))
            except ProjectionError as exc:
                log.error("dead-lettering %s at %s[%d]@%d: %s",
                          m.type, r.topic, r.partition, r.offset, exc)
                self._dead(_dead_letter(r, str(exc)), stats)
                continue
            seen.add(m.id)
            stats.applied += 1
            stats.unknown_types += m.type not in ev.EVENT_TYPES
        self._write_append_only()
        stats.seconds = time.perf_counter() - t0
        return stats

    def add_dead_letter_records(self, records: Iterable[Record]) -> BatchStats:
        """What SqlSink.apply_dead_letter_batch does with dead-letters records, in memory."""
        t0 = time.perf_counter()
        stats = BatchStats()
        for r in records:
            stats.records += 1
            tp = (r.topic, r.partition)
            if r.offset + 1 > self.next.get(tp, 0):
                self.next[tp] = r.offset + 1
            try:
                row = _decode_dead_letter(r.value)
            except SchemaError as exc:
                row = _dead_letter(r, f"malformed dead letter: {exc}")
            if not self._dead(row, stats):
                stats.duplicates += 1
        stats.seconds = time.perf_counter() - t0
        return stats

    def _dead(self, row: dict[str, Any], stats: BatchStats) -> bool:
        if row["id"] in self.dead:
            return False
        at = row["at"]
        self.dead[row["id"]] = {**row, "at": at if isinstance(at, datetime) else _optional_ts(at)}
        stats.dead_lettered += 1
        return True

    # --- writing ------------------------------------------------------------------------------
    def _write_append_only(self, force: bool = False) -> None:
        m = self.models
        if not force and len(m.ledger) + len(m.history) < self.chunk_rows:
            return
        for name, model in (("ledger", CaseEvent), ("history", TaskHistory),
                            ("outcomes", CommandOutcome)):
            rows = getattr(m, name)
            if rows:  # written, then dropped (a new list: no clear() of 10,000 dicts)
                setattr(m, name, [])
                self._write(table_of(model), rows)

    def _write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            t = time.perf_counter()
            self._need_writer().write(table, rows)
            self.write_s += time.perf_counter() - t

    def _need_writer(self) -> _Writer:
        if self._writer is None:
            raise RuntimeError("Replayer.begin() first (or the replay was aborted)")
        return self._writer


_TABLES = tuple(
    table_of(model) for model in Base.__subclasses__() if model.__tablename__ != "schema_version"
)


def _row_maker(table: Table, dialect: Any) -> tuple[list[str], Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """Column names, and a function making a row's driver values in that order (the live
    sink's conversions: sinks.bulk.converters and row_maker)."""
    convert = converters(table, dialect)
    return [name for name, _, _ in convert], row_maker(convert, f"{table.name} replay")


class _Writer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.raw: Any = None
        self.makers: dict[str, tuple[list[str], Callable[[dict[str, Any]], tuple[Any, ...]]]] = {}

    def maker(self, table: Table) -> tuple[list[str], Callable[[dict[str, Any]], tuple[Any, ...]]]:
        if table.name not in self.makers:
            self.makers[table.name] = _row_maker(table, self.engine.dialect)
        return self.makers[table.name]

    def has_rows(self, table: Table) -> bool:
        cur = self.raw.cursor()
        try:
            cur.execute(f'SELECT 1 FROM "{table.name}" LIMIT 1')
            return cur.fetchone() is not None
        finally:
            cur.close()

    def begin(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """Called once the transaction is open and every table found empty."""

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self.write_made(table, map(self.maker(table)[1], rows))

    def write_made(self, table: Table, values: Iterable[tuple[Any, ...]]) -> None:
        """Rows as driver values, in the order of `maker(table)`'s columns."""
        raise NotImplementedError

    def commit(self) -> None:
        self.raw.commit()
        self._close()

    def abort(self) -> None:
        if self.raw is not None:
            try:
                self.raw.rollback()
            finally:
                self._close()

    def _close(self) -> None:
        if self.raw is not None:
            self.raw.close()  # back to the engine's pool
            self.raw = None


class _SqliteWriter(_Writer):
    """One BEGIN IMMEDIATE transaction (the write lock for the whole replay), executemany.

    The transaction is written with a rollback journal, not the write-ahead log, when no other
    connection has the file open (`_leave_wal`): in WAL mode a replay's pages went to the log
    and were copied into the database again at the commit's checkpoint (1.2 GB twice at
    1,000,000 events; a 4.2 s commit, against 0.55 s). In a database that held no row, the
    rollback journal has next to nothing to save (pages past the file's end are never
    journalled), and it is as atomic: a replay that fails, is stopped or is killed leaves the
    file as it was (a hot journal is rolled back by the next connection). The connection sets
    WAL again when the transaction ends (and every new connection sets it: models.make_engine).
    While such a replay runs, a connection opened to the same file waits for it (up to its busy
    timeout) instead of reading the empty tables."""

    left_wal = False

    def begin(self) -> None:
        self.raw = self.engine.raw_connection()
        cur = self.raw.cursor()
        try:
            cur.execute("PRAGMA cache_size=-262144")  # 256 MiB for this one large transaction
            self.left_wal = _leave_wal(cur)
            cur.execute("BEGIN IMMEDIATE")
        finally:
            cur.close()

    def write_made(self, table: Table, values: Iterable[tuple[Any, ...]]) -> None:
        names = self.maker(table)[0]
        columns = ", ".join(f'"{n}"' for n in names)
        sql = f'INSERT INTO "{table.name}" ({columns}) VALUES ({", ".join("?" * len(names))})'
        cur = self.raw.cursor()
        try:
            cur.executemany(sql, values)
        finally:
            cur.close()

    def _close(self) -> None:
        if self.raw is not None:
            cur = self.raw.cursor()
            try:
                cur.execute("PRAGMA cache_size=-2000")  # SQLite's default again
                if self.left_wal:
                    self.left_wal = False
                    _back_to_wal(cur)
            finally:
                cur.close()
        super()._close()


def _leave_wal(cur: Any) -> bool:
    """Switch the connection's database from WAL to a rollback journal (synchronous=FULL,
    which that journal needs to be safe against a power cut) if it is in WAL and no other
    connection has it open; whether it did. Never waits: another connection holding the file
    makes the switch fail at once, and the replay then runs in WAL as before."""
    cur.execute("PRAGMA journal_mode")
    if str(cur.fetchone()[0]).lower() != "wal":
        return False  # e.g. an in-memory database: nothing to gain, nothing to restore
    cur.execute("PRAGMA busy_timeout")
    timeout = int(cur.fetchone()[0])
    cur.execute("PRAGMA busy_timeout=0")
    try:
        cur.execute("PRAGMA journal_mode=DELETE")
        mode = str(cur.fetchone()[0]).lower()
    except sqlite3.OperationalError as exc:  # "database is locked": another connection
        log.info("replay: another connection has the database open (%s): written through "
                 "the write-ahead log", exc)
        return False
    finally:
        cur.execute(f"PRAGMA busy_timeout={timeout}")
    if mode != "delete":
        return False
    cur.execute("PRAGMA synchronous=FULL")
    return True


def _back_to_wal(cur: Any) -> None:
    """WAL and synchronous=NORMAL again (models._sqlite_pragmas' settings). If a reader holds
    the file just now, the next connection the engine opens sets WAL instead."""
    cur.execute("PRAGMA synchronous=NORMAL")
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.fetchone()
    except sqlite3.OperationalError as exc:
        log.warning("replay: could not set the database back to WAL (%s); the next "
                    "connection will", exc)


# The indexes and keys of the tables a replay writes, each with its definition; a primary key
# or unique constraint another table's foreign key refers to is not among them.
_DEFERRABLE_INDEXES = """
SELECT t.relname, x.relname, k.conname, pg_get_indexdef(i.indexrelid), pg_get_constraintdef(k.oid)
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_class x ON x.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = t.oid
 WHERE n.nspname = current_schema() AND t.relname = ANY(%s)
   AND (k.oid IS NULL OR (k.contype IN ('p', 'u') AND NOT EXISTS (
        SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = t.oid)))
 ORDER BY t.relname, x.relname
"""

# How long the replay waits for the tables' locks before it leaves their indexes in place.
DEFER_LOCK_TIMEOUT = "2s"


class _PgWriter(_Writer):
    """One transaction holding the sinks' advisory lock; COPY FROM STDIN per table and chunk.

    **Indexes built after the rows** (issue 16, step 15). Into an empty database the replay's
    tables get their rows first and their indexes and keys at the commit, in the same
    transaction: `prepare` drops every index and primary key or unique constraint of the
    tables (as they are in this database: whatever an operator added too) and `commit` creates
    each again from its definition, a sort of the whole table instead of a B-tree insertion per
    row (PostgreSQL's backend 20.0 → 12.5 µs of CPU per event at 1,000,038 events; it builds
    with its parallel workers, and more maintenance_work_mem than the default measured no
    faster). A duplicate key then fails the commit, and the replay leaves the database empty,
    as any failure does. The drop holds the tables' ACCESS EXCLUSIVE locks until the commit: a
    reader of this database waits for the replay instead of seeing its empty tables. If another
    session holds a lock on one of them, the indexes stay in place
    (`DEFER_LOCK_TIMEOUT`) and the replay writes through them as before."""

    def begin(self) -> None:
        self.raw = self.engine.raw_connection()
        self.rebuild: list[str] = []
        cur = self.raw.cursor()
        try:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SINK_LOCK,))
        finally:
            cur.close()

    def prepare(self) -> None:
        """The indexes and keys dropped until the commit (`_DEFERRABLE_INDEXES`)."""
        from psycopg import errors, sql

        with self.raw.cursor() as cur:
            cur.execute("SELECT current_setting('lock_timeout')")
            lock_timeout = cur.fetchone()[0]
            cur.execute("SAVEPOINT gridflow_defer_indexes")
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (DEFER_LOCK_TIMEOUT,))
            try:
                cur.execute(_DEFERRABLE_INDEXES, ([t.name for t in _TABLES],))
                rebuild = []
                for table, index, constraint, index_def, constraint_def in cur.fetchall():
                    if constraint is None:
                        cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
                        rebuild.append(index_def)
                        continue
                    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        sql.Identifier(table), sql.Identifier(constraint)))
                    rebuild.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        sql.Identifier(table), sql.Identifier(constraint),
                        sql.SQL(constraint_def)).as_string(cur))
            except errors.LockNotAvailable:
                cur.execute("ROLLBACK TO SAVEPOINT gridflow_defer_indexes")
                log.info("replay: another session holds a lock on the read-model tables; their "
                         "indexes stay in place")
                rebuild = []
            cur.execute("RELEASE SAVEPOINT gridflow_defer_indexes")
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
        self.rebuild = rebuild

    def commit(self) -> None:
        if self.rebuild:
            t = time.perf_counter()
            with self.raw.cursor() as cur:
                for ddl in self.rebuild:
                    cur.execute(ddl)
            log.info("replay: %d indexes and keys built in %.1f s", len(self.rebuild),
                     time.perf_counter() - t)
        super().commit()

    def write_made(self, table: Table, values: Iterable[tuple[Any, ...]]) -> None:
        names = self.maker(table)[0]
        columns = ", ".join(f'"{n}"' for n in names)
        with self.raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in values:
                copy.write_row(row)
