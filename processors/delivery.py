"""At-least-once delivery for the worker: no input offset is committed past a record that an
agent did not process, nor before what the agents sent for it is acknowledged by Kafka.

faust commits "acked" offsets. Three of its shortcuts can commit an offset past a record that
no agent processed, which is how an acknowledged report was once lost under repeated SIGKILL
(docs/ARCHITECTURE.md, "Why an input offset is never committed before its output"):

1. `Consumer._new_offset` accepts a hole of one record right after the committed offset
   (`min(acked) - committed > 1`) and checks nothing at all while the committed offset is
   0 or unknown (a new consumer group), so a record that was fetched but never processed is
   committed over as soon as the next one is processed.
2. `Consumer._drain_messages` takes any forward jump in the offsets it delivers for a "gap"
   (meant for compacted topics and transaction markers) and `_new_offset` fills such gaps into
   the acked list. Records that faust itself dropped (a fetch cut short by a rebalance, records
   older than its read offset after a seek) look exactly like such a gap.
3. Agents send their output straight to the producer (processors.app.emit); faust's flush
   before a commit waits for those sends but never looks at whether they failed, and it
   stops draining its buffer of table changelog writes as soon as one takes over 0.1 s.

gridflow's input topics are neither compacted nor transactional, so their offsets are dense:
every offset up to the end of the log holds a record. `GridflowConsumer` therefore commits a
partition only up to the end of the run of processed offsets that starts exactly at its
committed offset (the log start for a new group), registers no gaps, and rewinds a partition
whose next record stays unprocessed while later ones are done (the record is read again;
processing is idempotent). `SendLedger` remembers the agents' direct sends and their tables'
changelog writes; a commit waits for all of them and is refused, and the worker crashed, if
any failed.

Two more of faust's shortcuts left a worker alive but idle, with records waiting (issue 15,
"a freshly started worker sometimes never processes"):

4. At the end of a rebalance faust resumes the stream partitions and seeks them to their
   committed offsets while its flow is already running, then resumes the flow once more,
   which empties every stream's queue (`FlowControlEvent.resume` clears the queues made with
   `clear_on_resume`). Records fetched in between were thrown away after the seek, so nothing
   read them again. `GridflowRecovery` holds the flow during that resume-and-seek.
5. aiokafka's `seek_to_committed` seeks only partitions with a committed offset above 0, so
   a partition of a new consumer group kept whatever position the fetcher had reached.
   `GridflowConsumer.seek_to_committed` seeks such a partition to where its count starts.

6. faust's consumer runs aiokafka in a thread of its own and asks it for records through a
   queue of method calls (mode.threads). Once, a worker's fetch request was never answered:
   the thread's queue was empty and its workers idle, the request's future pending, and the
   fetcher waited for it forever with the worker otherwise healthy (seen by attaching to a
   stalled worker; the same stall as "Consumers slowly die over time" reported for
   faust-streaming). `GridflowConsumerThread.getmany` gives a fetch FETCH_STUCK_AFTER_S beyond
   its own timeout, then asks again.

7. A record faust drops between the fetch and an agent (any of the above, in a window none of
   them closes) left the agent deciding the records after it first, and the dropped one only
   after the rewind. A redelivery is safe because a decision made again from the same state
   and the same input is the same; decided out of order it is not: a case's PhotoArchived
   was decided once from the archive's first command and again, after a rebalance dropped
   that command on the partition's new owner, from the archive's second one (the photo was
   archived already, so it carried no dimensions), under the same event id with other
   content (seen in the scale-out test: `gridflow audit verify` found the two). An agent
   whose decisions depend on the order of its records asks `GridflowApp.in_order` first: a
   record that is not the next of its partition for that agent is not decided and not counted
   as processed, and the partition is rewound to the one that is.

And, behind all of them, a watchdog (`GridflowConsumer._watch_stalls`): a dense partition whose
fetch position has moved past its committed offset while no record of it is processed or in
an agent's hands, and the whole worker is idle, for STALL_AFTER_S, is rewound.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import faust
from aiokafka import util as aiokafka_util
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafka_murmur2
from faust.exceptions import ProducerSendError
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import SchedulingStrategyT
from mode import Service
from mode.utils.futures import notify

from processors.tablestore import send_unsent_changes

log = logging.getLogger("gridflow.delivery")

# How long a partition may have later records processed while its next one is not before it
# is rewound to its committed offset. In-order processing never leaves such a hole, so it
# means faust dropped a fetched record; a short grace lets a rebalance's own seek come first.
REWIND_AFTER_S = 3.0
# How often the stall watchdog looks, and how long a partition must look stalled (records
# behind its fetch position, none processed or in an agent's hands, the worker idle) before it
# is rewound. A false alarm costs a re-read of records already processed (idempotent).
WATCH_EVERY_S = 2.0
STALL_AFTER_S = 6.0
# A fetch through the consumer thread answers within its timeout (1 s) unless the thread is
# busy; one that has not answered after this much longer is taken as lost and asked again.
FETCH_STUCK_AFTER_S = 30.0
# How long a commit waits for the sends it covers before it gives up and crashes the worker.
SETTLE_TIMEOUT_S = 120.0
# How long the broker may hold the worker's fetch when there is nothing new to read. faust asks
# for 1,500 ms. The broker answers one connection's requests in order, and the fetch shares
# its connection with the offset queries of a recovery (highwaters, the first offsets, the seek
# to the committed ones), so each of these waited behind a held fetch: a restarted worker took
# three steps of ~1.5 s before it was ready whenever a fetch went out first, as under load.
FETCH_MAX_WAIT_MS = 100
# An ordered agent that met a record ahead of the next one rewinds its partition once; while
# the records fetched before the rewind drain, it asks again only after this long.
ORDER_REWIND_AGAIN_S = 10.0
# After a seek, how long a fetch that brought one topic's records of a partition number waits
# for the first records of the ordered agent's other topics of that number (`gather_catch_up`).
CATCH_UP_WAIT_S = 2.0
# How many offsets the conductor acknowledged unread a partition keeps for its ordered agent.
PASSED_KEPT = 4096
# How many sends StateAfterOutput keeps before it drops those acknowledged already.
PRUNE_SENDS_AT = 4096


class SendLedger:
    """The futures of the agents' direct sends, checked before every offset commit."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []
        self.gate: StateAfterOutput | None = None  # set by GridflowApp._new_producer
        # Changelog topics whose writes are outputs themselves (`outputs_first`).
        self._output_topics: set[str] = set()

    def outputs_first(self, *tables: Any) -> None:
        """The changelog writes of these tables are sent at once, and the table writes made
        after them wait for them as for a direct send (StateAfterOutput.early): the deadline
        book's clocks, so that a case's state never reaches the changelog before the clocks
        decided with it (docs/ARCHITECTURE.md, item 8)."""
        self._output_topics.update(t.changelog_topic.get_topic_name() for t in tables)

    def track(self, fut: Awaitable[Any]) -> None:
        """Remember a direct send's future (aiokafka's producer returns an asyncio.Future);
        table writes made after it wait for it (StateAfterOutput)."""
        f = cast("asyncio.Future[Any]", fut)
        self._pending.append(f)
        if self.gate is not None:
            self.gate.output(f)

    def track_state(self, write: Any) -> None:
        """Remember a table changelog write and hand it on through the gate."""
        self._pending.append(write)
        assert self.gate is not None
        if self._output_topics and _topic_of(write) in self._output_topics:
            self.gate.early(write)
        else:
            self.gate.state(write)

    def check(self) -> None:
        """Raise ProducerSendError if a finished send failed; forget the finished ones."""
        pending = []
        for fut in self._pending:
            if not fut.done():
                pending.append(fut)
                continue
            exc = None if fut.cancelled() else fut.exception()
            if fut.cancelled() or exc is not None:
                self._pending = pending + [f for f in self._pending if not f.done()]
                raise ProducerSendError(f"an agent's output was not delivered: {exc!r}")
        self._pending = pending

    async def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until every send tracked so far has finished, then `check`.

        faust's flush before a commit drains its buffer of table changelog writes only while
        each write goes out within 0.1 s (ProducerBuffer.flush_atmost gives up after that), so
        a commit could overtake a state change; waiting for every tracked future cannot.
        Raises ProducerSendError when they do not finish within `timeout_s`.
        """
        waiting = [f for f in self._pending if not f.done()]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=timeout_s)
            if late:
                raise ProducerSendError(
                    f"{len(late)} of the agents' sends not acknowledged within {timeout_s:.0f} s")
        self.check()

    def __len__(self) -> int:
        return len(self._pending)


class StateAfterOutput:
    """A table's changelog write goes to the producer only once every direct send an agent made
    before it is acknowledged by Kafka: a state the changelog holds never runs ahead of the
    output decided with it.

    Without this, a case's new state (with the command's id among its `recent_commands`) and
    the case's events went to the producer together, but aiokafka sends each partition's
    batches as their linger expires or they fill, so the changelog's record could reach Kafka
    in one produce request and the events in the next. A worker killed between the two came
    back with the command in its state and read the command again: decided already, nothing
    sent, the events lost (seen once in `tests/integration/test_kill_worker.py`: a
    RecordPhotoArchived committed past with no PhotoArchived on the log). The agents therefore
    send a decision's output first and write its state after (processors.app); writes wait
    here, in order, for the sends made before them, and are then handed to faust's buffer as
    before. A failed send fails the writes waiting on it, so the ledger refuses the commit.

    The other order is harmless: output on the log whose state did not reach the changelog is
    decided again from the older state after a restart, with the same ids and the same bytes
    (decisions read their time from the command), and the sinks keep the first copy."""

    def __init__(self, put: Callable[[Any], None]) -> None:
        self._put = put
        self._since: list[asyncio.Future[Any]] = []  # direct sends since the last write
        self._prune_at = PRUNE_SENDS_AT
        self._groups: deque[tuple[list[asyncio.Future[Any]], list[Any]]] = deque()
        self._releasing: asyncio.Task[None] | None = None

    def output(self, fut: asyncio.Future[Any]) -> None:
        """A direct send of an agent (its future resolves when Kafka acknowledges it)."""
        since = self._since
        since.append(fut)
        if len(since) >= self._prune_at:
            # An agent that sends and writes no state: keep only what counts. The next look is
            # twice as far on as what is kept, so a burst of sends none of which is acknowledged
            # yet (a commit's deadline book writes, `early`) is not scanned again at each send.
            self._since = kept = [f for f in since if _outstanding(f)]
            self._prune_at = max(PRUNE_SENDS_AT, 2 * len(kept))

    def early(self, write: asyncio.Future[Any]) -> None:
        """A table changelog write that is an output itself: to the buffer at once, and the
        writes after it wait for it as for a direct send. For the deadline book: a clock on the
        changelog ahead of its case's events and state is filed again, under the same key, when
        the input is decided again after a crash; a state without its clocks would never be."""
        self._put(write)
        self.output(write)

    def state(self, write: Any) -> None:
        """A table changelog write (faust's FutureMessage): to the buffer once the direct sends
        (and early writes) made before it are acknowledged."""
        barrier = [f for f in self._since if _outstanding(f)]  # a failed one fails the write
        self._since = []
        self._prune_at = PRUNE_SENDS_AT
        if not barrier and not self._groups:
            self._put(write)
            return
        if barrier or not self._groups:
            self._groups.append((barrier, [write]))
        else:
            self._groups[-1][1].append(write)
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._release())

    def __len__(self) -> int:
        """Writes waiting."""
        return sum(len(writes) for _, writes in self._groups)

    async def _release(self) -> None:
        while self._groups:
            barrier, writes = self._groups[0]
            waiting = [f for f in barrier if not f.done()]
            if waiting:
                await asyncio.wait(waiting)
            self._groups.popleft()
            bad = next((f for f in barrier if f.cancelled() or f.exception() is not None), None)
            for write in writes:
                if bad is None:
                    self._put(write)
                elif not write.done():
                    why = "cancelled" if bad.cancelled() else repr(bad.exception())
                    write.set_exception(ProducerSendError(
                        f"table write not sent: an output sent before it failed ({why})"))


def _topic_of(write: Any) -> str | None:
    """The topic of a faust FutureMessage (None for anything else)."""
    message = getattr(write, "message", None)
    channel = getattr(message, "channel", None)
    return None if channel is None else channel.get_topic_name()


def _outstanding(fut: asyncio.Future[Any]) -> bool:
    """A send a later table write must still wait for (not yet acknowledged) or fail with."""
    return not fut.done() or fut.cancelled() or fut.exception() is not None


def contiguous_commit(acked: list[int], base: int) -> tuple[int | None, int]:
    """The offset to commit given the processed offsets `acked` (sorted, mutated) and the
    committed offset `base`: the end of the run base, base+1, ... in `acked`, or None when the
    record at `base` is not processed yet. Removes what it commits and anything below `base`
    (already committed). Returns (offset or None, number of offsets consumed from `acked`)."""
    stale = bisect.bisect_left(acked, base)
    if stale:
        del acked[:stale]
    n = 0
    while n < len(acked) and acked[n] == base + n:
        n += 1
    if n == 0:
        return None, stale
    del acked[:n]
    return base + n, stale + n


class StallWatch:
    """Which dense partitions look stalled: records fetched past the committed offset
    (`position > start`), none of them processed (`acked`), no record in an agent's hands
    anywhere in the worker (`busy`), and that unchanged for `after_s`.

    A record dropped between the fetcher and a stream (faust's queues cleared on resume, a
    fetch cut short) leaves exactly this picture: the fetcher has moved on and nothing will
    ever ack the record, so its partition would wait forever."""

    def __init__(self, after_s: float = STALL_AFTER_S) -> None:
        self.after_s = after_s
        self._since: dict[TP, tuple[int, float]] = {}

    def look(self, tp: TP, *, start: int | None, position: int | None, acked: bool,
             busy: bool, now: float) -> bool:
        """Note what `tp` looks like at `now`; True when it has looked stalled for `after_s`
        (then its clock starts again, so a rewind that does not help is retried later)."""
        if start is None or position is None or position <= start or acked or busy:
            self._since.pop(tp, None)
            return False
        seen = self._since.get(tp)
        if seen is None or seen[0] != start:  # new, or its commit moved: count again
            self._since[tp] = (start, now)
            return False
        if now - seen[1] < self.after_s:
            return False
        self._since[tp] = (start, now)
        return True

    def forget(self, tp: TP) -> None:
        self._since.pop(tp, None)


async def answered_within(call: Awaitable[Any], limit_s: float) -> tuple[bool, Any]:
    """(True, result) if `call` finishes within `limit_s`, else (False, None) with the call
    cancelled. Its exception, if it raised, is raised."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if task in done:
        return True, task.result()
    task.cancel()
    return False, None


def step_once(coro: Any) -> tuple[bool, Any]:
    """Run a coroutine up to its first suspension: (True, None) when it finished there (an
    exception it raised is raised), else (False, what it awaits) to hand to `finish`."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return True, None
    return False, awaited


async def finish(coro: Any, awaited: Any) -> None:
    """Drive a coroutine that `step_once` left suspended to its end, as an asyncio Task would:
    wait for the future it awaits (a bare yield: one pass of the loop), resume it, again. The
    future's outcome reaches the coroutine through its own await (Future.__await__ returns
    the result or raises). Cancelling this cancels the future it waits on, as for a Task (the
    coroutine's await then raises CancelledError), or throws CancelledError into it when that
    future is done already or there is none."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await awaited
        except asyncio.CancelledError as cancel:
            if awaited is None or not awaited.cancelled():  # this task was cancelled
                try:
                    awaited = coro.throw(cancel)
                except StopIteration:
                    return
                continue
        except Exception:  # noqa: S110 - the coroutine's own await raises it when resumed
            pass
        try:
            awaited = coro.send(None)
        except StopIteration:
            return


class GridflowConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """A static member that leaves the group when it stops cleanly.

    aiokafka sends no LeaveGroup for a static member (KIP-345: a restart under the same
    `group.instance.id` gets its partitions back without a rebalance), so a worker stopped on
    purpose would hold its partitions until the session timeout ran out. On a clean stop this
    consumer forgets its instance id just before closing, so aiokafka sends LeaveGroup with
    the member id, which the group coordinator accepts for a static member too: the group
    rebalances at once and the other workers take the partitions. A killed worker sends
    nothing; restarted under the same instance id, it takes its partitions straight back.

    Its consumer's fetch is held by the broker for at most FETCH_MAX_WAIT_MS, not faust's 1.5 s,
    so that a recovery's offset queries are not answered only after a held fetch.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts (its Fetcher)
        return consumer

    def _leave_on_close(self) -> None:
        consumer = self._consumer
        coordinator = getattr(consumer, "_coordinator", None) if consumer is not None else None
        if coordinator is not None and getattr(coordinator, "_group_instance_id", None):
            log.info("leaving the consumer group (static member %s)",
                     coordinator._group_instance_id)
            coordinator._group_instance_id = None

    def close(self) -> None:
        self._leave_on_close()
        super().close()

    async def on_thread_stop(self) -> None:
        self._leave_on_close()
        await super().on_thread_stop()

    lost_fetches = 0

    async def getmany(self, active_partitions: Any, timeout: float) -> Any:
        """A fetch (`_getmany_once`); after a seek, with the first records of the ordered
        agents' other topics gathered into it (GridflowConsumer.gather_catch_up)."""
        records = await self._getmany_once(active_partitions, timeout)
        consumer = self.consumer
        if records and isinstance(consumer, GridflowConsumer) and consumer._catch_up:
            records = await consumer.gather_catch_up(
                records, lambda t: self._getmany_once(active_partitions, t), active_partitions)
        return records

    async def _getmany_once(self, active_partitions: Any, timeout: float) -> Any:
        """faust's fetch through the thread, asked again if it is never answered (shortcut 6).

        Records a lost fetch had taken from aiokafka's buffer, if it ever ran, are not
        delivered; the partition's committed offset stays before them, and the hole rewind or
        the stall watchdog reads them again."""
        answered, records = await answered_within(
            super().getmany(active_partitions, timeout), timeout + FETCH_STUCK_AFTER_S)
        if answered:
            return records
        self.lost_fetches += 1
        log.warning("a fetch through the consumer thread was not answered in %.0f s; asking "
                    "again (%d lost so far)", timeout + FETCH_STUCK_AFTER_S, self.lost_fetches)
        return {}


class GridflowConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with strict, dense-offset commits for gridflow's topics."""

    def on_init(self) -> None:
        super().on_init()
        self._base: dict[TP, int] = {}
        self._hole_since: dict[TP, float] = {}
        self._rewinding: set[TP] = set()
        self._stalls = StallWatch()
        # In-order reading (`in_order`): per ordered agent, the next offset of each partition;
        # the offsets the conductor acknowledged unread, of the topics an ordered agent reads;
        # the records an ordered agent refused (never counted as processed); the last rewind
        # of a partition for order (target, when), not repeated within ORDER_REWIND_AGAIN_S.
        self._next_of: dict[str, dict[TP, int]] = {}
        self._ordered_topics: set[str] = set()
        self._passed: dict[TP, set[int]] = {}
        self._passed_prune_at: dict[TP, int] = {}
        self._readers_of: dict[str, list[str]] = {}  # topic -> its ordered agents
        self._refused: weakref.WeakSet[Any] = weakref.WeakSet()
        self._order_rewound: dict[TP, tuple[int, float]] = {}
        # Catching up after a seek to the committed offsets (`gather_catch_up`): each ordered
        # partition with records to read again, and its end offset at the seek, until its
        # first records are fetched.
        self._catch_up: dict[TP, int] = {}
        for reader, names in getattr(self.app, "ordered_readers", {}).items():
            self.ordered_reader(reader, names)

    def _new_consumer_thread(self) -> GridflowConsumerThread:
        return GridflowConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _dense(self, tp: TP) -> bool:
        return tp.topic in getattr(self.app, "dense_topics", frozenset())

    # --- where counting starts --------------------------------------------------------

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek as faust does, and remember where each partition's count starts: its
        committed offset, 0 included (faust turns 0 into "unknown"), or, for a new consumer
        group, the log start offset where auto_offset_reset=earliest begins reading."""
        committed = await super().seek_to_committed()
        unknown = [tp for tp, off in committed.items()
                   if self._dense(tp) and (off is None or off < 0)]
        earliest = await self.earliest_offsets(*unknown) if unknown else {}
        for tp, off in committed.items():
            if not self._dense(tp):
                continue
            self._forget_order(tp)
            start = off if off is not None and off >= 0 else earliest.get(tp)
            if start is not None and start >= 0:
                self._base[tp] = start
                self._hole_since.pop(tp, None)
                self._stalls.forget(tp)
                if not off or off <= 0:
                    # aiokafka seeks only offsets above 0: a partition of a new group (or one
                    # committed at 0) would keep the position the fetcher had reached, past
                    # records that faust may have dropped since.
                    await self._seek(tp, start)
        await self._note_catch_up(committed)
        return committed

    async def gather_catch_up(self, records: Mapping[Any, list[Any]],
                              fetch: Callable[[float], Awaitable[Mapping[Any, list[Any]]]],
                              active: Any = None) -> dict[Any, list[Any]]:
        """`records` (a fetch), with the first records of the partitions it waits for fetched
        into it, so that the agents get them oldest first together (`OldestFirst`).

        After a crash the case processor reads again the reports and the commands its
        predecessor had decided without committing them. Their events may be on the log while
        the case's state is not, and they must be decided again in the order they were made,
        or a case's chain forks: in a 20-kill chaos run (2026-12-06) a report merged into a
        case before an older sign was decided again, whose TaskSigned then came out a second
        time with another seq. Oldest first orders what one fetch holds, but the first fetch
        after a seek can bring one topic's records of a partition number before any of the
        other topic's. So a fetch with records of an ordered agent's topic waits, for at most
        CATCH_UP_WAIT_S, for the first records of each of the agent's other topics of the same
        partition number that has records to read again (`_note_catch_up`) and is being
        fetched (`active`). Nothing is refused or sought: the records only come later,
        together."""
        merged = {tp: list(batch) for tp, batch in records.items()}
        self._fetched(merged)
        started = time.monotonic()
        deadline = started + CATCH_UP_WAIT_S
        waiting = waited_for = self._catch_up_waits(merged, active)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("catching up after a seek: %s not fetched within %.0f s; the records "
                         "fetched go on", ", ".join(sorted(f"{tp.topic}[{tp.partition}]"
                                                            for tp in waiting)),
                         CATCH_UP_WAIT_S)
                for tp in waiting:
                    self._catch_up.pop(tp, None)
                break
            more = await fetch(min(left, 0.2)) or {}
            for tp, batch in more.items():
                merged.setdefault(tp, []).extend(batch)
            self._fetched(more)
            waiting = self._catch_up_waits(merged, active)
        if waited_for:
            log.info("catching up after a seek: a fetch waited %.2f s for the first records of "
                     "%s", time.monotonic() - started,
                     ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in waited_for)))
        return merged

    def _fetched(self, records: Mapping[Any, list[Any]]) -> None:
        for tp, batch in records.items():
            if batch:
                self._catch_up.pop(TP(tp.topic, tp.partition), None)

    def _catch_up_waits(self, records: Mapping[Any, list[Any]], active: Any) -> set[TP]:
        """The partitions `records` waits for: with records to read again, not fetched yet,
        of a topic an ordered agent reads beside a topic `records` has records of."""
        waits: set[TP] = set()
        if not self._catch_up:
            return waits
        topics_of = getattr(self.app, "ordered_readers", {})  # agent -> the topics it reads
        for tp, batch in records.items():
            if not batch:
                continue
            for reader in self._readers_of.get(tp.topic, ()):
                for topic in topics_of.get(reader, ()):
                    other = TP(topic, tp.partition)
                    if (topic != tp.topic and other in self._catch_up
                            and (active is None or other in active)):
                        waits.add(other)
        return waits

    async def _note_catch_up(self, committed: Mapping[TP, int]) -> None:
        """The ordered partitions that have records to read again (their end offset past the
        committed one), for `gather_catch_up`."""
        ordered = [tp for tp in committed if tp.topic in self._ordered_topics and tp in self._base]
        if not ordered:
            return
        try:
            ends = await self.highwaters(*ordered)
        except Exception as exc:  # without them each partition is read as before
            log.warning("end offsets for the catch-up order not read: %r", exc)
            return
        for tp in ordered:
            end, start = ends.get(tp), self._base.get(tp)
            if end is not None and start is not None and end > start:
                self._catch_up[tp] = end

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._base.pop(tp, None)
            self._hole_since.pop(tp, None)
            self._stalls.forget(tp)
            self._forget_order(tp)
        await super().on_partitions_revoked(revoked)

    def _start_of(self, tp: TP) -> int | None:
        committed = self._committed_offset[tp]
        return committed if committed is not None else self._base.get(tp)

    # --- in-order reading ---------------------------------------------------------------

    def ordered_reader(self, reader: str, topics: Iterable[str]) -> None:
        """Register an agent that reads `topics` in order (GridflowApp.in_order)."""
        self._next_of.setdefault(reader, {})
        for topic in topics:
            self._ordered_topics.add(topic)
            readers = self._readers_of.setdefault(topic, [])
            if reader not in readers:
                readers.append(reader)

    def in_order(self, reader: str, message: Any) -> bool:
        """Whether `message` is the next record of its partition for `reader`: the one after
        the last it was handed (or the partition's committed offset, after a rebalance or a
        seek to the committed offsets), or an earlier one (read again after a rewind). The
        offsets between that the conductor acknowledged unread (no agent reads them) count as
        handed. A record further on is refused: not decided by the agent, never counted as
        processed (`ack`), and the partition is rewound to the next one."""
        tp = message.tp
        offset = message.offset
        nexts = self._next_of.get(reader)
        if nexts is None:
            nexts = self._next_of[reader] = {}
        expected = nexts.get(tp)
        if expected is None:
            if not self._dense(tp):
                return True
            expected = self._start_of(tp)
            if expected is None:  # not sought yet in this assignment: nothing to count from
                nexts[tp] = offset + 1
                return True
        if offset > expected:
            # Every offset below the committed one was processed by each agent it was handed
            # to, or passed unread (a refused or dropped record is never acknowledged), so the
            # committed offset is as far as this agent need look back from.
            start = self._start_of(tp)
            if start is not None and start > expected:
                expected = start
        if offset > expected:
            passed = self._passed.get(tp)
            if passed is not None and all(o in passed for o in range(expected, offset)):
                passed.difference_update(range(expected, offset))
            else:
                self._refused.add(message)
                self._rewind_for_order(reader, tp, expected, offset)
                return False
        nexts[tp] = offset + 1
        rewound = self._order_rewound.get(tp)
        if rewound is not None and rewound[0] == offset:
            del self._order_rewound[tp]  # the record the rewind was for: reached
        return True

    def passed_unread(self, message: Any) -> None:
        """The conductor acknowledged `message` unread: for an ordered agent of its topic, as
        if handed to it."""
        if message.topic not in self._ordered_topics:
            return
        tp = message.tp
        passed = self._passed.get(tp)
        if passed is None:
            passed = self._passed[tp] = set()
        elif len(passed) >= self._passed_prune_at.get(tp, PASSED_KEPT):
            # Offsets no ordered agent will look back at again: below each one's next, and
            # below the committed offset (`in_order` looks back no further; an agent may have
            # been handed nothing for a long while, as when the conductor skips nearly every
            # record of the partition). The next look is twice as far on as what stays.
            start = self._start_of(tp)
            if start is not None:
                floor = min((max(self._next_of.get(r, {}).get(tp, start), start)
                             for r in self._readers_of.get(tp.topic, ())), default=start)
                passed.difference_update([o for o in passed if o < floor])
            self._passed_prune_at[tp] = max(PASSED_KEPT, 2 * len(passed))
        passed.add(message.offset)

    def _forget_order(self, tp: TP) -> None:
        """After a rebalance or a seek to the committed offsets, each ordered agent counts the
        partition from its committed offset again."""
        for nexts in self._next_of.values():
            nexts.pop(tp, None)
        self._passed.pop(tp, None)
        self._passed_prune_at.pop(tp, None)
        self._order_rewound.pop(tp, None)
        self._catch_up.pop(tp, None)

    def _rewind_for_order(self, reader: str, tp: TP, expected: int, offset: int) -> None:
        now = time.monotonic()
        last = self._order_rewound.get(tp)
        if tp in self._rewinding or (
                last is not None and last[0] == expected
                and now - last[1] < ORDER_REWIND_AGAIN_S):
            return  # the records from the rewind are on their way
        self._order_rewound[tp] = (expected, now)
        log.warning("%s: %s was handed record %d before %d; not decided, rewinding to %d",
                    tp, reader, offset, expected, expected)
        self._rewinding.add(tp)
        asyncio.ensure_future(self._rewind(tp, expected))

    # --- what may be committed --------------------------------------------------------

    def ack(self, message: Any) -> bool:
        """faust's pure-Python stream acks a record it skipped as stale (fetched before a
        rebalance) without processing it; such a record is read again after the rebalance's
        seek, so it must not count as processed."""
        if self._dense(message.tp) and (
            message.generation_id != self.app.consumer_generation_id
            or not self.app.flow_control.is_active()
        ):
            return False
        if self._refused and message in self._refused:
            # Refused by an ordered agent (`in_order`): done with, and not processed.
            self._refused.discard(message)
            message.acked = True
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
            return False
        return super().ack(message)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if not self._dense(tp):
            await super()._add_gap(tp, offset_from, offset_to)
            return
        # Dense topic: offsets offset_from..offset_to hold records that were fetched and not
        # delivered. Not a gap: they stay unacknowledged, so nothing is committed past them,
        # and the partition is rewound if they stay missing (_new_offset).
        log.warning("%s: offsets %d..%d skipped by the fetcher; they will be read again",
                    tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        if not self._dense(tp):
            return super()._new_offset(tp)
        acked = self._acked[tp]
        if not acked:
            self._hole_since.pop(tp, None)
            return None
        base = self._start_of(tp)
        if base is None:
            return None  # not seeked yet in this assignment: nothing known to count from
        acked.sort()
        before = list(acked)
        offset, _ = contiguous_commit(acked, base)
        self._acked_index[tp].difference_update(before[: len(before) - len(acked)])
        if offset is not None or not acked:  # committed, or every ack was below the base
            self._hole_since.pop(tp, None)
            return offset
        self._note_hole(tp, base, acked[0])
        return None

    def _note_hole(self, tp: TP, base: int, first_done: int) -> None:
        now = time.monotonic()
        since = self._hole_since.setdefault(tp, now)
        if now - since < REWIND_AFTER_S or tp in self._rewinding:
            return
        self._hole_since[tp] = now
        log.warning("%s: record %d not processed while %d is; rewinding to %d",
                    tp, base, first_done, base)
        self._rewinding.add(tp)
        asyncio.ensure_future(self._rewind(tp, base))

    async def _rewind(self, tp: TP, offset: int) -> None:
        try:
            if tp in self.assignment():
                await self.seek(tp, offset)
        except Exception as exc:  # the next hole check tries again
            log.warning("%s: rewind to %d failed: %r", tp, offset, exc)
        finally:
            self._rewinding.discard(tp)

    # --- the stall watchdog -----------------------------------------------------------

    @Service.timer(WATCH_EVERY_S)
    async def _watch_stalls(self) -> None:
        """Rewind a dense partition that has stalled (StallWatch): its fetch position past its
        committed offset, nothing of it processed, nothing in any agent's hands."""
        app = self.app
        if (not app.flow_control.is_active() or getattr(app, "rebalancing", False)
                or getattr(app, "in_recovery", False)):
            return
        try:
            assigned = self.assignment()
        except Exception:  # not started yet, or closing
            return
        busy = bool(self._unacked_messages)
        now = time.monotonic()
        for tp in assigned:
            if not self._dense(tp) or tp in self._rewinding:
                continue
            start = self._start_of(tp)
            position = None
            if start is not None and not busy and not self._acked[tp]:
                try:
                    _, position = await answered_within(self.position(tp), 10.0)
                except Exception:
                    position = None
            if self._stalls.look(tp, start=start, position=position, acked=bool(self._acked[tp]),
                                 busy=busy, now=now):
                assert start is not None
                log.warning("%s: fetched up to %s but nothing processed past %d for %.0f s "
                            "with the worker idle; rewinding to %d", tp, position, start,
                            self._stalls.after_s, start)
                self._rewinding.add(tp)
                await self._rewind(tp, start)

    # --- handing fetched records to the agents ----------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's loop that hands each fetched record to the conductor, without four tasks
        per record.

        faust delivers every record as `wait_first(callback(message), suspend_flow.wait())`:
        a task for the delivery, one for the suspend event, two for the service's stop and
        crash events, and an asyncio.wait over them, so that a delivery stuck behind a held
        flow gives way when a rebalance suspends it. A delivery almost never waits (the
        conductor puts the record on a stream's queue), so here it is first run up to its first
        suspension in this task (`step_once`); only one that does suspend goes on as faust's
        does, its rest in a task of its own (`finish`), raced against the suspend event. The
        rest of the loop is faust's (faust.transport.consumer.Consumer._drain_messages)."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)  # faust's: getmany may return at once, again and again
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            delivery = callback(message)
                            if suspended():
                                await self.wait_first(delivery, self.suspend_flow.wait())
                            else:
                                done, awaited = step_once(delivery)
                                if not done:
                                    await self.wait_first(finish(delivery, awaited),
                                                          self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    # --- the commit itself ------------------------------------------------------------

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Called by faust right after its producer flush: send the tables' unsent changes,
        then wait for every send the agents made so far (direct sends and table changelog
        writes); refuse, and crash the worker so it restarts from the last good commit, if one
        failed or does not finish."""
        # The changes a table keeps until the commit go out first (processors.tablestore: one
        # record per changed key), through the gate like every table write (StateAfterOutput),
        # and the ledger waits for them with the rest.
        send_unsent_changes(self.app.tables.values())
        ledger: SendLedger | None = getattr(self.app, "send_ledger", None)
        if ledger is not None:
            try:
                await ledger.settle()
            except ProducerSendError as exc:
                log.critical("not committing %s: %s", dict(offsets), exc)
                await self.crash(exc)
                raise
        return await super()._commit(offsets)


RecordFilter = Callable[[Any], bool]


class RememberingPartitioner:
    """aiokafka's default partitioner (Kafka's: murmur2 of the key, modulo the partition
    count), with its answers remembered for the last `size` keys. The worker sends each case's
    events and commands under the case id, several records a report, and aiokafka's murmur2 is
    pure Python (~1.4% of the worker's CPU in a profile of step 12). A record without a key
    still goes to a random available partition, as aiokafka's does."""

    def __init__(self, size: int = 16384) -> None:
        self._size = size
        self._known: dict[tuple[bytes, int], int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return cast(int, self._default(key, all_partitions, available))
        count = len(all_partitions)
        index = self._known.get((key, count))
        if index is None:
            if len(self._known) >= self._size:
                self._known.clear()
            index = self._known[(key, count)] = (kafka_murmur2(key) & 0x7FFFFFFF) % count
        return all_partitions[index]


def _running_loop() -> asyncio.AbstractEventLoop:
    """aiokafka's `util.get_running_loop` (called for every future its producer makes, one per
    record sent: ~2.6% of the worker's CPU) is `asyncio.get_event_loop()` and a check that the
    loop runs, in Python; `asyncio.get_running_loop` is the same answer, and the same
    RuntimeError outside a running loop, in C."""
    return asyncio.get_running_loop()


aiokafka_util.get_running_loop = _running_loop  # type: ignore[assignment]


class GridflowConductor(Conductor):
    """faust's conductor, except that a record every subscribed agent would skip unread is
    acknowledged here, without an event, a queue or a stream step for each of its agents.

    An agent says which records it reads by `GridflowApp.reads_only(topics, accepts)`: for its
    source's topic names, a predicate on the raw record (faust's transport Message: value
    bytes and headers). The agent keeps its own check; this only spares the records that no
    agent of the worker would look at (the case events the deadline agent finds filed already
    and the photo archive finds without a photo: most of them) the cost of handing them out.
    A record any agent reads is delivered to all of them, as before. Its acknowledgement is
    the one a stream would have made: counted by the consumer's strict commit
    (GridflowConsumer.ack) like any other."""

    def _build_handler(self, tp: TP, channels: Any) -> Any:
        deliver = super()._build_handler(tp, channels)
        filters: dict[frozenset[str], RecordFilter] = getattr(self.app, "record_filters", {})
        if not any(tp.topic in names for names in filters):
            return deliver
        app = self.app
        of_channel: dict[Any, RecordFilter | None] = {}

        def skipped(message: Any) -> bool:
            if not channels:
                return False
            for chan in channels:
                try:
                    accepts = of_channel[chan]
                except KeyError:
                    accepts = of_channel[chan] = filters.get(frozenset(chan.topics))
                if accepts is None or accepts(message):
                    return False
            return True

        async def on_message(message: Any) -> None:
            if skipped(message) and app.flow_control.is_active():
                consumer = app.consumer
                message.incref(1)
                message.ack(consumer)
                # Skipped by content, so skipped whenever it is read: counts as handed to an
                # ordered agent of the topic (GridflowConsumer.in_order).
                passed_unread = getattr(consumer, "passed_unread", None)
                if passed_unread is not None:
                    passed_unread(message)
                return
            await deliver(message)

        return on_message


class GridflowTransport(faust_aiokafka.Transport):
    Consumer = GridflowConsumer
    Conductor = GridflowConductor


class GridflowRecovery(Recovery):
    """faust's table recovery, without a crash it has in a rebalance during recovery.

    A round builds the changelog offsets of the partitions assigned when it starts; a rebalance
    that lands before the round seeks its standby partitions adds new ones to the very same
    set with no offset (None, `Recovery.add_standby`), and seeking None raised ValueError
    ("Offset must be a positive integer") and stopped the worker (seen in the scale-out test:
    a worker added under load). A partition without an offset is read from the changelog's
    start, as one with no local state is; the next round, which the rebalance starts anyway,
    builds its offsets again."""

    async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        for tp in tps:
            if offsets.get(tp) is None:
                offsets[tp] = -1  # faust's "from the start" (it seeks 0; the log start if later)
        await super()._seek_offsets(consumer, tps, offsets, title)

    # faust resumes the stream partitions and seeks them to their committed offsets with the
    # flow already running (the changelog restore resumed it), then resumes the flow again,
    # which clears every stream's queue: records fetched between the seek and that clear were
    # dropped after the seek had passed them (processors.delivery, shortcut 4). Holding the
    # flow first means nothing reaches the queues until the seek is done; a record an agent
    # finishes meanwhile is not counted (GridflowConsumer.ack) and is read again from the
    # committed offset.

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super()._resume_streams(generation_id)


class GridflowTableManager(TableManager):
    """faust's table manager with GridflowRecovery, and changelogs in the brokers' metadata
    before the consumer subscribes to them.

    faust creates each table's changelog topic at start-up and subscribes to it a moment
    later. A consumer whose metadata request comes before the broker's metadata has the new
    topic is told it does not exist: the group's assignment leaves it out, and the first write
    to that table fails faust's partition check (0 partitions; seen on a fresh topic prefix
    with the deadline tables, which are created last). So the changelogs are declared and
    described until the cluster lists their partitions, before faust's own start of the
    channels."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = GridflowRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

    async def _update_channels(self) -> None:
        from gridflow.topics import wait_until_described

        tables = list(self.values())
        for table in tables:
            await table.changelog_topic.maybe_declare()
        names = [table.changelog_topic.get_topic_name() for table in tables]
        bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)
        if names:
            try:
                missing = await asyncio.get_running_loop().run_in_executor(
                    None, wait_until_described, bootstrap, names, CHANGELOG_VISIBLE_TIMEOUT_S)
            except Exception as exc:  # the broker did not answer: faust's own start decides
                missing = [f"{names} ({exc!r})"]
            if missing:
                log.warning("changelog topic(s) %s not in the cluster's metadata after %.0f s; "
                            "starting anyway", ", ".join(missing), CHANGELOG_VISIBLE_TIMEOUT_S)
        await super()._update_channels()


CHANGELOG_VISIBLE_TIMEOUT_S = 30.0


class OldestFirst(SchedulingStrategyT):
    """The order in which the agents get a fetch's records: the oldest (Kafka timestamp) first
    across all the fetched partitions, each partition's own order kept.

    faust's default goes round-robin between topics. The case processor reads the reports and
    the case commands of one partition number, so after a crash it decided the records it
    reads again in whatever order the new fetches gave: a report that came after a command
    could be decided first, and if the command's events were on the log already (its state
    lost with the crash), they came out again with other seqs (a chain fork, seen in a 20-kill
    chaos run). Taking the oldest first decides them again in the order they were made, as
    they were decided before; records made within a few milliseconds of each other across
    partitions can still be taken either way, as before."""

    def iterate(self, records: Mapping[TP, list[Any]]) -> Iterator[tuple[TP, Any]]:
        heap: list[tuple[int, int, TP, Any, Iterator[Any]]] = []
        for n, (tp, batch) in enumerate(records.items()):
            it = iter(batch)
            first = next(it, None)
            if first is not None:
                heap.append((first.timestamp, n, tp, first, it))
        if len(heap) == 1:  # one partition: its own order
            _, _, tp, first, it = heap[0]
            yield tp, first
            for record in it:
                yield tp, record
            return
        heapq.heapify(heap)
        while heap:
            _, n, tp, record, it = heap[0]
            yield tp, record
            following = next(it, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following.timestamp, n, tp, following, it))


class GridflowApp(faust.App):
    """A faust app whose consumer commits strictly (GridflowConsumer) and whose agents' sends
    (direct and table changelog) are waited for and checked before each commit (send_ledger)."""

    dense_topics: frozenset[str] = frozenset()

    def __init__(self, *args: Any, dense_topics: Iterable[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("TableManager", GridflowTableManager)
        kwargs.setdefault("producer_partitioner", RememberingPartitioner())
        kwargs.setdefault("ConsumerScheduler", OldestFirst)
        super().__init__(*args, **kwargs)
        self.dense_topics = frozenset(dense_topics)
        self.send_ledger = SendLedger()
        self.record_filters: dict[frozenset[str], RecordFilter] = {}
        self.ordered_readers: dict[str, frozenset[str]] = {}

    def reads_only(self, topics: Iterable[str], accepts: RecordFilter) -> None:
        """The agent whose source is exactly `topics` reads only the records `accepts` passes
        (GridflowConductor); it must skip the others itself too."""
        self.record_filters[frozenset(topics)] = accepts

    def in_order(self, reader: str, topics: Iterable[str]) -> Callable[[Any], bool]:
        """A check for an agent whose decisions depend on the order of its records: call it
        with each record's message first and skip the record when it answers False (the
        record comes again, in order: GridflowConsumer.in_order)."""
        names = frozenset(topics)
        self.ordered_readers[reader] = names  # a consumer made later registers it on_init
        app = self
        if isinstance(self._consumer, GridflowConsumer):
            self._consumer.ordered_reader(reader, names)

        def guard(message: Any) -> bool:
            consumer = app.consumer
            in_order = getattr(consumer, "in_order", None)
            return True if in_order is None else cast(bool, in_order(reader, message))

        return guard

    def _new_transport(self) -> GridflowTransport:
        return GridflowTransport(self.conf.broker_consumer, self)

    def on_init_dependencies(self) -> Iterable[Any]:
        """faust's own, less its Monitor as a sensor: the Monitor keeps statistics of every
        record, table read and send (for faust's web views, which the worker does not serve,
        and its metrics exporters, which it does not use: gridflow.telemetry has its own),
        called through the sensors several times a record. The object stays: the consumer
        still notes end offsets and commits in it."""
        dependencies = super().on_init_dependencies()
        if self.monitor in set(self.sensors):
            self.sensors.remove(self.monitor)
        return dependencies

    def _new_producer(self) -> Any:
        """faust's producer, with its buffer of table changelog writes tracked by the ledger
        too, so no commit overtakes a change of an agent's state."""
        producer = super()._new_producer()
        buffer, ledger = producer.buffer, self.send_ledger
        ledger.gate = StateAfterOutput(buffer.put)
        buffer.put = ledger.track_state  # type: ignore[method-assign,assignment]
        return producer
