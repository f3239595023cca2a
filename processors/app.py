"""The faust app: thin agents that move records between topics through processors.steps.

Delivery: at-least-once from Kafka; every output carries a deterministic id, so a
redelivered input produces the same ids and the case processor / sinks drop the
repeats. An agent that fails on something unexpected crashes the worker, loudly (mode's
CrashingSupervisor): a restarted worker resumes from the last committed offset.
Each agent owns one kind of state in a changelog-backed faust table,
keyed like its source topic, so a restarted worker recovers it from Kafka (or, with the
RocksDB store, from its local disk and the changelog written since: processors.tablestore).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import faust
from mode import CrashingSupervisor

from gridflow import events as ev
from gridflow import topics
from gridflow.clock import Clock, clock_from_spec
from gridflow.core import eviction
from gridflow.core.case import DeadlinePlanner
from gridflow.core.refdata import ReferenceData
from gridflow.events import decode_message
from gridflow.retry import outage_policy, retry_async
from gridflow.settings import Settings
from processors import steps
from processors.deadlines import FOLLOWED_HEADERS
from processors.delivery import GridflowApp
from processors.tablestore import (
    GridflowTable,
    consumer_instance_id,
    store_url,
    table_options,
)

log = logging.getLogger("gridflow.processors")

ARCHIVE_RETRY = outage_policy("archive")  # MinIO back is found within 5 s


@dataclass
class Runtime:
    """Everything the agents need, built once from the composition root's pieces
    (processors.worker.build_runtime over a bootstrap.Bundle)."""

    settings: Settings
    ref: ReferenceData
    planner: DeadlinePlanner
    clock: Clock
    object_store: Any = None  # minio.Minio; None disables the archive agent
    deadlines: Any = None  # processors.deadlines.DeadlineRuntime; None disables deadlines
    pipeline: bool = True  # intake, filing and cases (False: a worker for the archive only)


async def with_retry(what: str, fn: Any, *args: Any) -> Any:
    """Run blocking I/O in a thread; on failure retry by ARCHIVE_RETRY, forever."""
    return await retry_async(ARCHIVE_RETRY, what, fn, *args, logger=log)


ROLES = ("all", "pipeline", "archive")


def app_id_for(prefix: str, pipeline: bool) -> str:
    """The faust app id (and consumer group) of a worker: the pipeline's agents, with or
    without the archive, share one; a worker running only the archive has its own, so its
    offsets on case-events are its own and its rebalances never pause the pipeline."""
    return f"{prefix}-processor" if pipeline else f"{prefix}-archive"


def build_app(rt: Runtime, app_id: str | None = None) -> GridflowApp:
    s = rt.settings
    prefix = s.topic_prefix
    app = GridflowApp(
        app_id or app_id_for(prefix, rt.pipeline),
        dense_topics=[spec.name(prefix) for spec in topics.CATALOGUE],
        broker=f"kafka://{s.kafka_bootstrap}",
        store=store_url(s.worker_store),
        Table=GridflowTable,
        topic_partitions=topics.CASE_PARTITIONS,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # faust's changelog and repartition topics: as many replicas as the catalogue's
        # (processors.worker resolves GRIDFLOW_KAFKA_REPLICATION 0 against the cluster first).
        topic_replication_factor=s.kafka_replication or 1,
        web_enabled=False,
        datadir=str(s.faust_data_dir),
        topic_disable_leader=False,
        stream_wait_empty=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # Batch what the agents send for a few milliseconds: one produce request per batch
        # instead of one per record (the worker's largest cost at linger 0; docs/PERFORMANCE.md).
        producer_linger=0.005,
        broker_session_timeout=s.worker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.worker_session_timeout_s / 3),
        consumer_group_instance_id=consumer_instance_id(s.worker_instance_id),
    )

    def topic(spec: topics.TopicSpec) -> faust.TopicT:
        return app.topic(spec.name(prefix), partitions=spec.partitions, key_type=bytes,
                         value_type=bytes, key_serializer="raw", value_serializer="raw")

    t = {spec.suffix: topic(spec) for spec in topics.CATALOGUE}

    if rt.pipeline:
        _install_pipeline(app, t, rt)
    if rt.object_store is not None:
        _install_archive(app, t, rt)
    if rt.deadlines is not None and rt.pipeline:
        rt.deadlines.install(app, t, rt)
    return app


def _install_pipeline(app: GridflowApp, t: dict[str, Any], rt: Runtime) -> None:
    """Intake, filing and the case processor: a report → its case's events in one step (or,
    keyed otherwise, report → located → command → case events)."""
    s = rt.settings
    kind = s.worker_store
    recent_cases = app.Table("recent-cases", default=None, partitions=topics.CASE_PARTITIONS,
                             options=table_options(kind))
    cases = app.Table("cases", default=None, partitions=topics.CASE_PARTITIONS,
                      options=table_options(kind))
    # Every table's changes are sent once per key and commit; the cases last, after the book
    # and the recent cases of the same commit (processors.tablestore).
    cases.flush_rank = 1  # type: ignore[attr-defined]  # a GridflowTable (app.Table)
    # Values read or written are remembered decoded: the steps never change a value they read
    # or wrote in place (gridflow.core builds new ones: frozen dataclasses, copied lists).
    for table in (recent_cases, cases):
        table.read_cache = True  # type: ignore[attr-defined]

    names = {suffix: topic.get_topic_name() for suffix, topic in t.items()}

    async def emit(out: steps.Outputs, clocks_filed: bool = False) -> None:
        # Straight to the producer: the values are bytes already, so faust's channel layer
        # (future messages, serializer lookups, sensors) is pure per-record cost here. Still
        # at least once: faust flushes the producer before it commits any consumed offset,
        # and the ledger refuses the commit if one of these sends failed (processors.delivery).
        # `clocks_filed`: the case events carry the mark that their clocks are in the book.
        producer, track = app.producer, app.send_ledger.track
        marked = FOLLOWED_HEADERS if clocks_filed else None
        for suffix, key, value in out.sends:
            headers = marked if suffix == "case-events" else None
            track(await producer.send(names[suffix], key.encode(), value, None, None, headers))

    radius_m, window = s.dedupe_radius_m, timedelta(hours=s.dedupe_window_hours)

    # The filing agent and the case processor (below) decide from their tables, so neither
    # decides a record before the one ahead of it on its partition
    # (processors.delivery.GridflowConsumer.in_order).
    filing_in_order = app.in_order("filing", [names["reports-located"]])

    @app.agent(t["reports-located"], supervisor_strategy=CrashingSupervisor)
    async def filing(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            if not filing_in_order(m):
                continue
            key = (event.key or b"").decode("utf-8", "replace")
            out = steps.filing_step_keyed(event.value, recent_cases, key, rt.clock(), m.topic,
                                          m.partition, m.offset, radius_m, window)
            await emit(out)

    # Finished cases leave `cases` after evict_days of domain time (gridflow.core.eviction):
    # the case agent then also follows the deadline ticks, which carry the domain time, and
    # keeps an index of finished cases by hour and a stub of each evicted case.
    evict_days = s.closed_case_evict_days if rt.deadlines is not None else 0.0
    reports_name, ticks_name = names["reports"], ""
    source_names = [reports_name, names["case-commands"]]
    if evict_days > 0:
        closed_index = app.Table("closed-cases", default=None, partitions=topics.CASE_PARTITIONS,
                                 options=table_options(kind))
        evicted = app.Table("evicted-cases", default=None, partitions=topics.CASE_PARTITIONS,
                            options=table_options(kind))
        for table in (closed_index, evicted):
            table.flush_rank = 1  # type: ignore[attr-defined]
            table.read_cache = True  # type: ignore[attr-defined]
        ticks_name = names["deadline-ticks"]
        source_names.append(ticks_name)
    # One agent, one ordered stream per partition, for the reports and the case commands (and
    # the ticks): a report is validated, located, checked for a near-duplicate, filed and its
    # case decided in one step when its case lands on the report's partition (issue 16: the API
    # keys reports by township and places the ticket on that township's partition,
    # intake.report_key and intake.ticket_for). All these topics have CASE_PARTITIONS
    # partitions and are read by the same workers, so faust assigns partition p of each to the
    # same worker (co-partitioned), and partition p of `cases` holds the cases keyed there.
    source = app.topic(*source_names, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

    # The stage clocks of the events decided here are filed in the same step, into the book of
    # this partition (issue 16, step 4): the deadline agent then skips these events.
    follower = (rt.deadlines.follower(app, t, rt)
                if rt.deadlines is not None and s.deadlines_inline else None)

    async def decide(raw: bytes, key: str, m: Any, made: Any = None, local: bool = False,
                     ) -> None:
        """A command for case `key` against the case table (as read from case-commands, or
        `local`: made by this step's intake, steps.Outputs.take_local_commands, with `made` the
        message when it has one)."""
        before = cases.get(key)
        if before is None and evict_days > 0:
            stub = evicted.get(key)
            if stub is not None:
                out, kept = steps.evicted_case_step(raw, stub, rt.clock(), m.topic,
                                                    m.partition, m.offset)
                await emit(out, follower is not None)  # a refusal: no clock to file
                if kept is not None:
                    evicted[key] = kept
                return
        out, state = steps.case_step(raw, before, rt.planner, rt.clock(), m.topic,
                                     key, m.partition, m.offset, made, in_order=not local)
        # The output first, then the state: a table write goes to Kafka only after the sends
        # made before it are acknowledged (processors.delivery.StateAfterOutput), so a state
        # that holds this command's id never reaches the changelog without its events.
        await emit(out, follower is not None)
        if follower is not None and out.events:
            # The book's changes, like the case's, go out at the commit: the book's first, and
            # the case's state waits for them as for its events (SendLedger.outputs_first).
            follower.follow(m.partition, out.events)
        if state is not None:
            cases[key] = state
            if evict_days > 0:
                eviction.EvictionIndex(closed_index, f"p{m.partition}:").note(before, state)
            waiting = state.get("waiting")
            if waiting or (before is not None and before.get("waiting")):
                log.info("case %s: %d command(s) waiting for events its state does not have "
                         "yet (state at seq %s; %s@%s)", key, len(waiting or ()),
                         state.get("seq"), m.topic, m.offset)

    case_in_order = app.in_order("case_processor", source_names)

    @app.agent(source, supervisor_strategy=CrashingSupervisor)
    async def case_processor(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            if not case_in_order(m):
                continue
            if m.topic == reports_name:
                out = steps.intake_and_file_step(event.value, rt.ref, recent_cases, rt.clock(),
                                                 m.topic, m.partition, m.offset,
                                                 topics.CASE_PARTITIONS, radius_m, window)
                here = out.take_local_commands(m.partition, topics.CASE_PARTITIONS)
                await emit(out)
                for key, value, made in here:
                    await decide(value, key, m, made, local=True)
                continue
            if m.topic == ticks_name:
                now = eviction.tick_time(event.value)
                if now is not None:
                    eviction.evict_due(cases, evicted, eviction.EvictionIndex(
                        closed_index, f"p{m.partition}:"), now, evict_days)
                continue
            await decide(event.value, (event.key or b"").decode("utf-8", "replace"), m)


def _install_archive(app: GridflowApp, t: dict[str, Any], rt: Runtime) -> None:
    """The photo archive: follows case-events, sends RecordPhotoArchived commands."""
    from processors import archive

    s = rt.settings
    cfg = archive.ArchiveConfig(s.bucket_archive, s.archive_retention_days,
                                s.max_photo_bytes, s.max_photo_pixels, s.archive_lock_mode)

    app.reads_only([t["case-events"].get_topic_name()], lambda m: _has_photo(m.value))

    @app.agent(t["case-events"], supervisor_strategy=CrashingSupervisor)
    async def photo_archive(stream: Any) -> None:
        # Events are taken a few at a time and their photos archived concurrently (bounded:
        # the check is CPU work in threads, the copies are I/O). Per photo the order holds:
        # its RecordPhotoArchived is acknowledged before its incoming copy is removed; the
        # commands go out in event order; the events are acknowledged (their offsets
        # committed) only once the whole batch is done, so a crash re-runs it (idempotent).
        limit = asyncio.Semaphore(archive.CONCURRENCY)

        async def bounded(what: str, fn: Any, *args: Any) -> Any:
            async with limit:
                return await with_retry(what, fn, *args)

        async for batch in stream.take(archive.BATCH, within=archive.BATCH_WITHIN_S):
            jobs = []
            for raw in batch:
                if not _has_photo(raw):
                    continue
                try:
                    event = decode_message(raw, ev.EVENT_TYPES)
                except ev.SchemaError:
                    continue  # the sinks dead-letter what they cannot read
                jobs += [(event, ref) for ref in archive.photos_of(event)]
            if not jobs:
                continue
            cmds = await asyncio.gather(*(
                # no rt.clock() here: the lock's retain-until date is real time
                bounded(f"archive {ref.get('key')}", archive.archive_photo, rt.object_store,
                        cfg, event, ref) for event, ref in jobs))
            acks = [await t["case-commands"].send(key=event.case_id.encode(),
                                                  value=cmd.encode())
                    for (event, _), cmd in zip(jobs, cmds, strict=True)]
            for ack in acks:
                await ack  # acknowledged before any incoming copy goes
            archived = [ref for (_, ref), cmd in zip(jobs, cmds, strict=True)
                        if cmd.data.get("status") == "archived"]
            if archived:  # one DeleteObjects request for the batch's incoming copies
                await with_retry(f"remove {len(archived)} incoming photos",
                                 archive.remove_incoming_many, rt.object_store, archived)


def _has_photo(raw: bytes | None) -> bool:
    """Whether a case event may refer to a photo: every reference carries its sha256."""
    return raw is not None and b'"sha256"' in raw


def clock_for(settings: Settings) -> Clock:
    return clock_from_spec(settings.clock)
