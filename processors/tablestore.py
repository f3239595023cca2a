"""Where the worker's faust tables live: in memory (rebuilt from the changelogs at every start)
or in RocksDB on local disk (through rocksdict), kept across restarts.

RocksDB (GRIDFLOW_WORKER_STORE=rocksdb, the default) keeps each table partition in a RocksDB
database under the worker's own data directory, with the changelog offset it holds. A restart
on the same machine reads only the changelog records written after that offset; on a new
machine (an empty directory) faust restores the whole changelog, as it does for the memory
store.

**Local state never runs ahead of the changelog.** faust's RocksDB store writes a table change
to RocksDB at once and sends it to the changelog afterwards. A worker killed with SIGKILL in
between would come back with a state the changelog never saw: the case processor would find
the command it was working on already decided (`CaseState.recent_commands`) and drop it when
it is read again, so the events it decided would never be sent. `AckedRocksStore` holds every
change in memory (`_pending`, read first) until the changelog acknowledges it, then writes the
acknowledged value and its changelog offset to RocksDB in one batch. RocksDB therefore holds
exactly a prefix of the changelog, as the memory store does after a restore, and the delivery
guarantees of processors.delivery hold unchanged.

**A table may send a key's changes once per commit** (issue 16, steps 6 and 8). faust sends a
changelog record for every write to a table; a township's recent cases, a minute's shard of
the deadline book and a case touched by several commands are rewritten many times between
commits. A `GridflowTable` (with `coalesce`, its default) keeps each changed key's last value (and
the partition of the event that changed it) and sends it when the consumer commits
(`send_unsent_changes`, called by processors.delivery before the commit waits for every send),
so a commit still never overtakes a change: a change not in the changelog belongs to a record
whose offset is not committed, which is read and decided again after a crash. The worker's
tables all do, in `flush_rank` order (processors.app): the deadline book
and the recent cases first, the cases and their eviction index last, so that a case's state
waits for its clocks (processors.delivery.StateAfterOutput.early) as it waits for its events.
A table that sends each change in the step that made it (`coalesce = False`) sends the bytes
its store encoded.

Holding a case's state back until the commit widens the window in which its events are on the
log and its state is not, from milliseconds to a commit interval. Everything that acts on those
events is guarded for it (docs/ARCHITECTURE.md, item 8): the photo archive's command carries
the event's seq, a person's command the seq the read models showed, and a stale deadline
command is not remembered, so each waits for, or is fired again after, the input decided again;
inputs read again are decided oldest first. When step 6 first tried this, before those guards
and before the gate, the kill test lost a command's events once; the cause was the state
reaching the changelog before its events (step 7), not the holding back.

**One data directory per worker process.** `claim_data_dir` takes the first free slot
`<faust_data_dir>/<app id>/w<N>` under an exclusive lock held for the life of the process
(released by the kernel when the process dies, SIGKILL included), so two workers on one
machine never share RocksDB files, and a worker restarted at once gets its own slot — and its
local state — back.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import faust
from faust.stores import rocksdb as faust_rocksdb
from faust.streams import current_event
from faust.types import TP

log = logging.getLogger("gridflow.tablestore")

STORES = ("rocksdb", "memory")
# When a partition's local state was last brought up to date (wall clock), beside its offset.
WRITTEN_AT_KEY = b"__gridflow\0written_at__"
# Older local state is restored afresh: below Kafka's default delete.retention.ms (24 h).
STALE_AFTER_S = 20 * 3600.0

# RocksDB options per table partition. faust's defaults (64 MiB write buffers, 3 of them, a
# 2 GiB block cache) are sized for one big table per process; the worker opens one database
# per table and partition (5 tables x 4 partitions), whose memtables alone could then take
# gigabytes. Small buffers keep the worker's memory flat whatever the size of its state.
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
}


def store_url(kind: str) -> str:
    if kind not in STORES:
        raise ValueError(f"GRIDFLOW_WORKER_STORE must be one of {', '.join(STORES)}, got {kind!r}")
    return f"{kind}://"


def table_options(kind: str) -> dict[str, Any] | None:
    """A fresh options dict for one table (faust's RocksDB store pops keys out of it)."""
    return dict(ROCKSDB_OPTIONS) if kind == "rocksdb" else None


# Acknowledged changelog records are written to RocksDB this many at a time, or this long after
# the first of them waited (issue 16: a write per record cost ~4% of the worker's CPU).
FLUSH_EVERY = 500
FLUSH_AFTER_S = 1.0


class _Acked:
    """One partition's acknowledged changes not yet on disk: the last value per key, the keys
    in order (one per change, to count `_pending` down) and the highest changelog offset."""

    __slots__ = ("since", "changes", "keys", "offset")

    def __init__(self, since: float) -> None:
        self.since = since
        self.changes: dict[bytes, bytes | None] = {}
        self.keys: list[bytes] = []
        self.offset: int | None = None

    def add(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self.changes[key] = value
            self.keys.append(key)
        if self.offset is None or offset > self.offset:
            self.offset = offset


class AckedRocksStore(faust_rocksdb.Store):
    """faust's RocksDB store whose disk state trails the changelog (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # key -> [partition, latest value (None: deleted), changelog records it waits for
        # (those sent and not yet on disk, and one for a change not sent yet), whether the
        # latest change is not sent yet]
        self._pending: dict[bytes, list[Any]] = {}
        self._acked: dict[int, _Acked] = {}  # partition -> acknowledged, not yet on disk

    # --- changes wait in memory until the changelog has them ----------------------------

    def _note(self, key: bytes, value: bytes | None) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError("a table change needs the event being processed (its partition)")
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = [event.message.partition, value, 1, True]
        else:
            entry[0], entry[1] = event.message.partition, value
            if not entry[3]:  # changes since the last send share the record still to be sent
                entry[2], entry[3] = entry[2] + 1, True

    def take_unsent(self, key: bytes) -> tuple[bool, bytes | None]:
        """The latest change of `key`, as it is about to be sent to the changelog: (whether
        there is one, its value bytes, None for a removal). A later change waits for a record
        of its own."""
        entry = self._pending.get(key)
        if entry is None or not entry[3]:
            return False, None
        entry[3] = False
        return True, entry[1]

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._note(key, value)

    def _del(self, key: bytes) -> None:
        self._note(key, None)

    def on_changelog_acked(self, partition: int, offset: int, key: bytes | None,
                           value: bytes | None) -> None:
        """The changelog holds `key` = `value` (None: a tombstone) at `offset`: added to the
        partition's next write, which carries the offset too. Acknowledged changes are written
        FLUSH_EVERY at a time (or FLUSH_AFTER_S after the first waiting one): one RocksDB write
        per batch instead of one per change. Whenever it is written, the disk holds a prefix
        of the changelog with its offset; until then, reads find the change in `_pending`."""
        waiting = self._acked.get(partition)
        if waiting is None:
            waiting = self._acked[partition] = _Acked(time.monotonic())
        waiting.add(offset, key, value)
        if len(waiting.keys) >= FLUSH_EVERY or time.monotonic() - waiting.since >= FLUSH_AFTER_S:
            self._write_acked(partition)

    def flush_acked(self) -> None:
        """Write every acknowledged change still waiting (a clean stop, a revocation)."""
        for partition in list(self._acked):
            self._write_acked(partition)

    def _write_acked(self, partition: int) -> None:
        waiting = self._acked.pop(partition, None)
        if waiting is None or waiting.offset is None:
            return
        batch = faust_rocksdb.rocksdict.WriteBatch(raw_mode=True)
        for key, value in waiting.changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.offset_key, str(waiting.offset).encode())
        batch.put(WRITTEN_AT_KEY, repr(time.time()).encode())
        self._db_for_partition(partition).write(batch)
        pending, index = self._pending, self._key_index
        for key in waiting.keys:
            entry = pending.get(key)
            if entry is not None:
                entry[2] -= 1
                if entry[2] <= 0:
                    del pending[key]
            index[key] = partition

    def pending_count(self) -> int:
        return len(self._pending)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """After a batch restored from the changelog: the offset, and when it was current."""
        batch = faust_rocksdb.rocksdict.WriteBatch(raw_mode=True)
        batch.put(self.offset_key, str(offset).encode())
        batch.put(WRITTEN_AT_KEY, repr(time.time()).encode())
        self._db_for_partition(tp.partition).write(batch)

    # --- local state too old to trust is restored afresh ---------------------------------

    def _open_for_partition(self, partition: int) -> Any:
        """Open a partition's database; one last written more than STALE_AFTER_S ago (or never
        marked) is removed first, so the changelog restores it. A tombstone stays on a compacted
        changelog only `delete.retention.ms` (24 h by default): local state older than that
        could still hold a key whose deletion (an evicted case) it will never read again."""
        path = self.partition_path(partition)
        if path.exists():
            try:
                db = super()._open_for_partition(partition)
            except Exception as exc:
                # A worker killed while RocksDB was creating the database leaves a write-ahead
                # log without a manifest ("Corruption: While creating a new Db, wal_dir
                # contains existing log file"; seen in a 20-kill chaos run), and every later
                # start failed on it. The disk holds at most a prefix of the changelog, so the
                # changelog restores whatever is dropped here. Anything else (a lock held by
                # another process) is raised.
                if "Corruption" not in str(exc) and (path / "CURRENT").exists():
                    raise
                log.warning("%s: local state unreadable (%s); restoring it from the changelog",
                            path, exc)
                shutil.rmtree(path, ignore_errors=True)
                return super()._open_for_partition(partition)
            raw = db.get(WRITTEN_AT_KEY)
            try:
                age = time.time() - float(raw) if raw is not None else None
            except ValueError:
                age = None
            if age is not None and age <= STALE_AFTER_S:
                return db
            db.close()
            del db
            log.warning("%s: local state %s (last written %s); restoring it from the changelog",
                        path, "unmarked" if age is None else "too old",
                        "never" if age is None else f"{age / 3600:.1f} h ago")
            shutil.rmtree(path, ignore_errors=True)
        return super()._open_for_partition(partition)

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key in super()._visible_keys(db):
            if key != WRITTEN_AT_KEY:
                yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in super()._visible_items(db):
            if key != WRITTEN_AT_KEY:
                yield key, value

    # --- reads see the latest change -----------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        entry = self._pending.get(key)
        if entry is not None:
            return entry[1]  # type: ignore[no-any-return]
        return super()._get(key)  # type: ignore[no-any-return]

    def _contains(self, key: bytes) -> bool:
        entry = self._pending.get(key)
        if entry is not None:
            return entry[1] is not None
        return super()._contains(key)  # type: ignore[no-any-return]

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        pending = dict(self._pending)
        for key, entry in pending.items():
            if entry[1] is not None:
                yield key, entry[1]
        for key, value in super()._iteritems():
            if key not in pending:
                yield key, value

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _ in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _, value in self._iteritems():
            yield value

    def _size(self) -> int:
        return sum(1 for _ in self._iteritems())

    async def stop(self) -> None:
        """faust's, without its gc.collect(): ~1 s per table on a loaded machine, six tables in
        a row before the consumer leaves the group on a clean stop (the databases close when
        their last reference goes; the process is ending). What the changelog acknowledged is
        written first."""
        self.flush_acked()
        self._dbs.clear()

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        """faust's, without its gc.collect() when nothing is revoked: it runs for every table
        at every rebalance, a second of a loaded worker's start blocked for nothing (the
        collection is there to close a revoked partition's database, which rocksdict closes
        when the last reference goes)."""
        gone = {tp.partition for tp in tps if tp.topic in table.changelog_topic.topics}
        for partition in gone & self._acked.keys():
            self._write_acked(partition)
        for key in [k for k, e in self._pending.items() if e[0] in gone]:
            del self._pending[key]
        if gone & self._dbs.keys():
            super().revoke_partitions(table, tps)


_DELETED = object()  # an unsent change that removes its key
_ABSENT = object()  # a key the store does not hold, as remembered by a table's read cache
_UNREAD = object()  # a key a table's read cache knows nothing of
# Decoded values a table remembers, at most; then it forgets them all and starts again.
READ_CACHE_SIZE = 4096


class GridflowTable(faust.Table):
    """A faust table whose RocksDB store is `AckedRocksStore`; its changelog records are sent
    with each change, or, with `coalesce`, once per key and commit (see the module doc)."""

    coalesce = True  # a key's changes are sent once, at the next commit (False: with each)
    flush_rank = 0  # the order tables send their unsent changes in at a commit
    # Whether reads are answered from the values this table last read or wrote, decoded (see
    # `get`). Only for a table whose users never change a value they read or wrote in place:
    # the remembered object is the one handed out.
    read_cache = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsent: dict[Any, tuple[int, Any]] = {}  # key -> (partition, value | _DELETED)
        self._read: dict[Any, Any] = {}  # key -> decoded value | _ABSENT (`read_cache`)
        super().__init__(*args, **kwargs)

    def on_key_set(self, key: Any, value: Any) -> None:
        """Remember the change (sent after the store has it, or at the commit)."""
        self._unsent[key] = (self._changed_partition(key), value)

    def on_key_del(self, key: Any) -> None:
        self._unsent[key] = (self._changed_partition(key), _DELETED)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)  # on_key_set, then the store
        if self.read_cache:
            self._remember(key, value)
        if not self.coalesce:
            self._send(key, *self._unsent.pop(key))

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        if self.read_cache:
            self._remember(key, _ABSENT)
        if not self.coalesce:
            self._send(key, *self._unsent.pop(key))

    def _remember(self, key: Any, value: Any) -> None:
        read = self._read
        if len(read) >= READ_CACHE_SIZE and key not in read:
            read.clear()
        read[key] = value

    def apply_changelog_batch(self, batch: Any) -> None:
        self._read.clear()
        super().apply_changelog_batch(batch)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        self._read.clear()  # after: the store changed during it

    def _changed_partition(self, key: Any) -> int:
        partition = self.partition_for_key(key)
        if partition is None:  # use_partitioner: the producer would pick one; never used here
            raise TypeError(f"table {self.name}: changes need the event's partition")
        return partition

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        """Unsent changes of partitions this worker no longer has are dropped: the commit
        faust made before the rebalance sent those of every record it committed, so these
        belong to records the partition's next owner reads and decides again."""
        gone = {tp.partition for tp in revoked if tp.topic in self.changelog_topic.topics}
        if gone and self._unsent:
            kept = {k: v for k, v in self._unsent.items() if v[0] not in gone}
            if len(kept) < len(self._unsent):
                log.info("%s: %d unsent change(s) of revoked partition(s) %s dropped",
                         self.name, len(self._unsent) - len(kept), sorted(gone))
            self._unsent = kept
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        self._read.clear()  # after: the store's partitions changed during it

    def unsent_count(self) -> int:
        return len(self._unsent)

    def send_unsent(self) -> int:
        """Send every changed key's last value (a tombstone for a removed one) to the
        changelog, in the order the keys were first changed; returns how many."""
        unsent = self._unsent
        if not unsent:
            return 0
        self._unsent = {}
        for key, (partition, value) in unsent.items():
            self._send(key, partition, value)
        return len(unsent)

    def _send(self, key: Any, partition: int, value: Any) -> None:
        store = self.data
        if not isinstance(store, AckedRocksStore):
            if value is _DELETED:
                self.send_changelog(partition, key, None, value_serializer="raw")
            else:
                self.send_changelog(partition, key, value)
            return
        # The store holds the change encoded already: those very bytes are sent (the
        # changelog's encoding is the store's), not the value encoded a second time.
        raw_key = store._encode_key(key)
        found, raw = store.take_unsent(raw_key)
        if not found:  # defensive (every change reaches both): never send None for a value
            raw = None if value is _DELETED else store._encode_value(value)
        self.send_changelog(partition, raw_key, raw, key_serializer="raw",
                            value_serializer="raw")

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).startswith("rocksdb:"):
            return AckedRocksStore(
                url, self.app, self, table_name=self.name, key_type=self.key_type,
                key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                value_type=self.value_type, loop=self.loop, options=self.options)
        return super()._new_store_by_url(url)

    def get(self, key: Any, default: Any = None) -> Any:
        """One store lookup: faust's (Mapping.get through a table with `__missing__`) asks the
        store whether the key is there, then for its value: two RocksDB reads per hit.

        With `read_cache`, none for a key this table read or wrote since it last forgot: the
        decoded value (or the key's absence) is remembered, so a township's recent cases, the
        deadline book's cursor and shards, and a case read again are neither looked up nor
        decoded again. Every change goes through the table (`__setitem__`, `__delitem__`) and
        is remembered as it is made; whatever changes the store otherwise (a changelog restored,
        a rebalance) makes the table forget everything."""
        if self.default is not None:
            return super().get(key, default)
        self.on_key_get(key)
        if self.read_cache:
            value = self._read.get(key, _UNREAD)
            if value is _UNREAD:
                try:
                    value = self.data[key]
                except KeyError:
                    value = _ABSENT
                self._remember(key, value)
            return default if value is _ABSENT else value
        try:
            return self.data[key]
        except KeyError:
            return default

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        """faust's check that the changelog has the source topic's partition count, except that
        a changelog the consumer's metadata does not list yet (0 partitions: created at
        start-up a moment before the broker's metadata had it) is not taken for a mismatch:
        the check is left unverified and made again on the next write."""
        if (source_topic not in self._verified_source_topics_for_partitions
                and self.app.consumer.topic_partitions(self.changelog_topic_name) == 0):
            return
        super()._verify_source_topic_partitions(source_topic)

    def _on_changelog_sent(self, fut: Any) -> None:
        data = self.data
        if not isinstance(data, AckedRocksStore):
            super()._on_changelog_sent(fut)
            return
        if fut.cancelled() or fut.exception() is not None:
            return  # nothing reached the changelog: the ledger fails the next commit
        res = fut.result()
        message = fut.message
        data.on_changelog_acked(res.topic_partition.partition, res.offset, message.key,
                                message.value)


# --- the worker's own data directory, and the identity derived from it ------------------

_held: list[int] = []  # lock file descriptors, kept open for the life of the process


def claim_data_dir(base: Path, app_id: str, max_slots: int = 64) -> Path:
    """The first slot `<base>/<app_id>/w<N>` no other live process holds, locked for the life
    of this process. A worker restarted after a crash gets the slot it had (its lock died with
    it) as long as the other workers of the machine keep theirs."""
    root = Path(base) / app_id
    root.mkdir(parents=True, exist_ok=True)
    for n in range(max_slots):
        fd = os.open(root / f"w{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        slot = root / f"w{n}"
        slot.mkdir(exist_ok=True)
        return slot
    raise RuntimeError(f"no free worker data directory under {root} ({max_slots} in use)")


def instance_id_for(role: str, data_dir: Path, host: str | None = None) -> str:
    """A static group instance id unique per worker process: the host, the role and a digest
    of the worker's data directory (which `claim_data_dir` gives one live process at a time)."""
    host = host or socket.gethostname()
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]
    safe_host = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:100]
    return f"{safe_host}-{role}-{digest}"


DYNAMIC = "dynamic"


def resolve_instance_id(setting: str, role: str, data_dir: Path) -> str:
    """GRIDFLOW_WORKER_INSTANCE_ID as the worker uses it: empty (the default) derives a static
    instance id from host, role and data directory (`instance_id_for`); "dynamic" asks for
    dynamic membership (returned as is, see `consumer_instance_id`); anything else is used as
    given (then each worker process of the group needs its own)."""
    value = setting.strip()
    return instance_id_for(role, data_dir) if not value else value


def consumer_instance_id(setting: str) -> str | None:
    """The consumer's group.instance.id for a resolved setting: None for dynamic membership."""
    value = setting.strip()
    return None if value in ("", DYNAMIC) else value


def send_unsent_changes(tables: Iterable[Any]) -> int:
    """Every table's unsent changes onto its changelog; returns how many records were sent.
    Called before each commit."""
    ours = sorted((t for t in tables if isinstance(t, GridflowTable)), key=lambda t: t.flush_rank)
    return sum(t.send_unsent() for t in ours)
