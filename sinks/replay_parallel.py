"""A large replay folded in several processes, one group of partitions each, written by one.

The replay fast path (sinks.replay_fast) spends most of its time in Python: decoding, hashing
and folding each event (~35 µs) and making its driver rows (~5 µs), against the database's
~15–25 µs. A case never leaves its partition, so the partitions of case-events can be folded
apart: each folding process (`_fold`, started with the spawn method) reads its partitions
with aiokafka and folds them with the live fold, exactly as the one-process fast path does,
and ships the rows it makes (driver tuples, in chunks) to the parent over a pipe. The parent
holds the one transaction and writes what arrives, while the folds go on.

Guarantees, the same as the one-process fast path's:
- the rows are the ones the live sink builds: every row comes from the same fold over the
  same records of its partition, in the partition's order; what crosses partitions in the
  live sink (an event id or a primary key seen on two partitions, which no producer of
  gridflow writes) makes the parent's insert fail, and the caller then applies the log
  batch by batch, as for any failure of the fast path;
- one transaction: a replay that fails or is stopped leaves the database empty; a folding
  process that dies, or reports an error, fails the replay;
- the dead letters (first one per id wins, as in the live sink) and the consumer's offsets
  are gathered from every process and written by the parent with the rest.

Used by sinks.runner for a replay of at least PARALLEL_MIN_RECORDS records when the machine
has more than one core and the topic more than one partition (or when asked for processes).
Spawned processes import the calling program's main module, as any spawn-started process
does: it must start its work under `if __name__ == "__main__":` (gridflow's commands do).
"""

from __future__ import annotations

import gc
import io
import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from kafka import TopicPartition
from sqlalchemy import Table

from sinks.bulk import converters, row_maker
from sinks.models import Base, json_text
from sinks.replay_fast import CHUNK_ROWS, Replayer
from sinks.sql import BatchStats

log = logging.getLogger("gridflow.sinks.replay_parallel")

PARALLEL_MIN_RECORDS = 200_000  # below this a process's start (~1 s of imports) is not repaid
_TABLES = {t.name: t for t in Base.metadata.sorted_tables}


def processes_for(records: int, case_partitions: int, requested: int | None) -> int:
    """How many folding processes a replay of `records` over `case_partitions` takes: the
    requested number (at most one per partition), or by default one per core for a large
    log; 1 means the one-process fast path."""
    if requested is not None:
        return max(1, min(requested, case_partitions))
    if records < PARALLEL_MIN_RECORDS:
        return 1
    return max(1, min(usable_cores(), case_partitions))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset
    narrows), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def split(targets: dict[TopicPartition, int], dead_topic: str, n: int,
          ) -> list[dict[TopicPartition, int]]:
    """The partitions in `n` groups of about equal records (largest first to the least
    loaded); the dead-letters partitions (few records) go to the first group."""
    groups: list[dict[TopicPartition, int]] = [{} for _ in range(n)]
    load = [0] * n
    cases = sorted((tp for tp in targets if tp.topic != dead_topic),
                   key=lambda tp: (-targets[tp], tp.partition))
    for tp in cases:
        i = load.index(min(load))
        groups[i][tp] = targets[tp]
        load[i] += targets[tp]
    for tp in targets:
        if tp.topic == dead_topic:
            groups[0][tp] = targets[tp]
    return [g for g in groups if g]


# --- the parent ----------------------------------------------------------------------------


class FoldFailed(RuntimeError):
    """A folding process reported an error or ended without finishing."""


class ParallelFold:
    """Runs the folding processes for `replayer` (begun: its transaction is open) and writes
    what they ship; `run()` returns when all have finished (True) or `stop` was set (False).
    The caller then calls replayer.finish() or replayer.abort(), as for the one-process path.
    """

    def __init__(self, replayer: Replayer, groups: list[dict[TopicPartition, int]], *,
                 bootstrap: str, dead_topic: str, poll_timeout_ms: int,
                 stop: Callable[[], bool],
                 progress: Callable[[BatchStats, int], None]) -> None:
        self.replayer, self.groups = replayer, groups
        self.bootstrap, self.dead_topic = bootstrap, dead_topic
        self.poll_timeout_ms, self.stop, self.progress = poll_timeout_ms, stop, progress
        self.procs: dict[Connection, Any] = {}
        self.lags: dict[Connection, int] = {}
        self.t0 = time.monotonic()

    def run(self) -> bool:
        self.t0 = time.monotonic()
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        dialect = self.replayer.engine.dialect.name
        until = self.replayer.until
        try:
            for i, group in enumerate(self.groups):
                parent_end, child_end = ctx.Pipe(duplex=False)
                _widen(parent_end)
                spec = {
                    "bootstrap": self.bootstrap, "consumer": self.replayer.consumer,
                    "until": until, "dialect": dialect, "dead_topic": self.dead_topic,
                    "poll_timeout_ms": self.poll_timeout_ms,
                    "targets": [(tp.topic, tp.partition, end) for tp, end in group.items()],
                }
                proc = ctx.Process(target=_fold, args=(child_end, spec), daemon=True,
                                   name=f"gridflow-replay-fold-{i}")
                proc.start()
                child_end.close()  # the parent's copy: EOF reaches the parent when the child ends
                self.procs[parent_end] = proc
            return self._receive()
        finally:
            self._end_all()

    def _receive(self) -> bool:
        r = self.replayer
        while self.procs:
            if self.stop():
                return False
            for ready in wait(list(self.procs), timeout=0.5):
                conn = cast(Connection, ready)
                proc = self.procs[conn]
                try:
                    message = pickle.loads(conn.recv_bytes())
                except EOFError:
                    proc.join(timeout=5)
                    raise FoldFailed(f"{proc.name} ended without finishing "
                                     f"(exit code {proc.exitcode})") from None
                kind = message[0]
                if kind == "rows":
                    r.write_made(_TABLES[message[1]], message[2])
                elif kind == "progress":
                    self.lags[conn] = message[2]
                    self.progress(BatchStats(**message[1]), sum(self.lags.values()))
                elif kind == "dead":
                    for row in message[1]:
                        r.dead.setdefault(row["id"], row)
                elif kind == "next":
                    r.next.update(message[1])
                elif kind == "done":
                    del self.procs[conn]
                    conn.close()
                    proc.join(timeout=30)
                    log.info("%s: %s finished folding after %.1f s (%s: %.1f s of its CPU)",
                             r.consumer, proc.name, time.monotonic() - self.t0,
                             ", ".join(f"{tp[0]}[{tp[1]}]" for tp in message[1]), message[2])
                elif kind == "error":
                    raise FoldFailed(f"{proc.name}: {message[1]}")
                else:
                    raise FoldFailed(f"{proc.name} sent {kind!r}")
        return True

    def _end_all(self) -> None:
        for conn, proc in self.procs.items():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
            conn.close()
        self.procs.clear()


# --- a folding process -------------------------------------------------------------------------


class _Shipper:
    """A replay_fast writer that makes each row's driver values (JSON columns and timestamps as
    text, so that a chunk holds only what pickles fast: `_dumps`) and ships them to the parent
    in chunks, instead of writing them.

    Messages go out from a thread of their own, up to AHEAD of them queued: while the parent
    writes another process's chunk the pipe is full, and a fold that sent itself would wait
    (a profile of a folding process showed 2.9 of its 18 s in the pipe's write)."""

    AHEAD = 16

    def __init__(self, conn: Connection, dialect_name: str) -> None:
        from sqlalchemy.dialects import postgresql, sqlite

        self.conn = conn
        self.dialect = (sqlite.dialect() if dialect_name == "sqlite"
                        else postgresql.psycopg.dialect())
        self.dialect._json_serializer = json_text
        self.makers: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {}
        self.outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=self.AHEAD)
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._send_all, name="replay-shipper",
                                       daemon=True)
        self.thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        if self.failed is not None:
            raise self.failed
        self.outbox.put(_dumps(message))

    def close(self) -> None:
        """Every message queued is sent (or the pipe failed) when this returns."""
        self.outbox.put(None)
        self.thread.join()

    def _send_all(self) -> None:
        while (blob := self.outbox.get()) is not None:
            if self.failed is None:
                try:
                    self.conn.send_bytes(blob)
                except BaseException as exc:  # the parent is gone: the fold stops at its next send
                    self.failed = exc

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        make = self.makers.get(table.name)
        if make is None:
            make = self.makers[table.name] = row_maker(
                converters(table, self.dialect, json_as_text=True, times_as_text=True),
                f"{table.name} shipped")
        for i in range(0, len(rows), CHUNK_ROWS):
            self.send(("rows", table.name, list(map(make, rows[i:i + CHUNK_ROWS]))))


PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged process (fs.pipe-max-size)


def _widen(conn: Connection) -> None:
    """A chunk of rows is ~1.6 MB: through a 1 MiB pipe instead of the default 64 KiB it takes
    one read and one write in the sense of a system call per MiB instead of per 64 KiB. Where
    the system refuses (another OS, a lower ceiling), the pipe stays as it is."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


def _dumps(message: tuple[Any, ...]) -> bytes:
    """`pickle.dumps(message)`; a chunk of rows without the memo. A chunk is a list of tuples
    of str, int, float, bool and None (JSON and timestamps as text: `_Shipper.write`), which
    the pickler's fast mode writes as they are instead of remembering each one: 2.1 against
    3.7 µs per event, 6% more bytes (a string met twice is written twice), read back the same
    (tests/unit/test_replay_parallel.py). Not for a datetime: without the memo its tzinfo is
    written and read back anew each time (19.5 µs per event)."""
    if message[0] != "rows":
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo
    pickler.dump(message)
    return out.getvalue()


def _fold(conn: Connection, spec: dict[str, Any]) -> None:
    """A folding process: its partitions from the beginning to their end offsets, folded, and
    every row shipped; then its dead letters, its offsets and "done" (or "error")."""
    from sinks.runner import _BulkReader

    # No collections in a folding process: what each batch leaves is frozen anyway
    # (Replayer.add_polled), and the collector walking each batch's young rows and the records
    # fetched ahead cost 3 µs per event at 1,000,000 events (46.5 against 43.5 µs of CPU, back
    # to back). The cycles the reader's event loop leaves are kept until the process ends with
    # the replay: +29 MB at 500,000 events.
    gc.disable()
    shipper = _Shipper(conn, spec["dialect"])
    try:
        replayer = Replayer(None, spec["consumer"], spec["until"])  # type: ignore[arg-type]
        replayer._writer = shipper  # type: ignore[assignment]
        targets = {TopicPartition(t, p): end for t, p, end in spec["targets"]}
        reader = _BulkReader(spec["bootstrap"], spec["consumer"], targets,
                             spec["poll_timeout_ms"])
        reader.start()
        try:
            while True:
                polled = reader.get(spec["poll_timeout_ms"])
                if polled is None:
                    break
                if not polled:
                    continue
                last = replayer.add_polled(polled, spec["dead_topic"])
                shipper.send(("progress", last.as_dict(), reader.lag()))
        finally:
            reader.close()
        replayer.write_rows()
        shipper.send(("dead", list(replayer.dead.values())))
        shipper.send(("next", dict(replayer.next)))
        shipper.send(("done", sorted(replayer.next), time.process_time()))
    except BaseException as exc:  # the parent fails the replay with this
        try:
            shipper.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass  # the parent is gone
    finally:
        shipper.close()
        conn.close()
