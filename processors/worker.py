"""Runs the stream processors: wires the pieces the composition root built (bootstrap.Bundle:
reference data, deadline planner over the working calendar, clock, object-store client) into
the faust app and runs a worker until SIGTERM. `gridflow worker` is bootstrap.commands.worker.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from gridflow.calendars import end_warning
from gridflow.clock import Clock
from gridflow.core.refdata import ReferenceData
from gridflow.core.sla import SlaPlanner
from gridflow.settings import Settings
from processors.app import ROLES, Runtime, app_id_for, build_app
from processors.tablestore import claim_data_dir, resolve_instance_id

log = logging.getLogger("gridflow.worker")


class WorkerPieces(Protocol):
    """What a worker is built from; the composition root (bootstrap.Bundle) supplies it.
    `object_store` is read only when the archive agent runs."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def ref(self) -> ReferenceData: ...
    @property
    def planner(self) -> SlaPlanner: ...
    @property
    def object_store(self) -> Any: ...


def build_runtime(pieces: WorkerPieces, with_archive: bool = True, with_deadlines: bool = True,
                  with_pipeline: bool = True, settings: Settings | None = None) -> Runtime:
    """The agents' runtime from `pieces` (`settings`: the worker's own, when it settled some
    at start-up, e.g. its data directory; default pieces.settings)."""
    settings = settings or pieces.settings
    clock, planner = pieces.clock, pieces.planner
    warning = end_warning(planner.calendar, clock(), settings)
    if warning:
        log.warning("%s", warning)
    rt = Runtime(settings=settings, ref=pieces.ref, planner=planner, clock=clock,
                 object_store=pieces.object_store if with_archive else None,
                 pipeline=with_pipeline)
    if with_deadlines:
        from processors.deadlines import DeadlineRuntime

        rt.deadlines = DeadlineRuntime(planner.policy, planner.calendar)
    return rt


def runtime_for_role(pieces: WorkerPieces, role: str = "all",
                     settings: Settings | None = None) -> Runtime:
    """"all": every agent in one worker; "pipeline": all but the photo archive; "archive":
    the photo archive alone (its own consumer group, see processors.app.app_id_for)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return build_runtime(pieces, with_archive=role != "pipeline", with_deadlines=role != "archive",
                         with_pipeline=role != "archive", settings=settings)


def use_event_loop(kind: str) -> str:
    """Make `kind` ("uvloop" or "asyncio") the loop asyncio hands out from now on (faust and
    aiokafka, and the consumer's own thread, take theirs from it). Returns the loop in use:
    "asyncio" where uvloop is asked for and not installed."""
    import asyncio

    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: the worker runs on asyncio's event loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    asyncio.set_event_loop_policy(None)  # asyncio's own
    return "asyncio"


def run_worker(pieces: WorkerPieces, loglevel: str = "warning", role: str = "all") -> None:
    import faust

    from gridflow import heap, telemetry, topics

    settings = pieces.settings
    loop = use_event_loop(settings.worker_loop)  # before faust makes its loop
    # The replication factor of faust's own topics (changelogs, repartitions) is decided here,
    # once: GRIDFLOW_KAFKA_REPLICATION, or what fits the cluster (3 on three brokers).
    settings = settings.with_(kafka_replication=topics.replication_factor(
        settings.kafka_bootstrap, settings.kafka_replication))
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_prefix,
                         replication=settings.kafka_replication)
    group = app_id_for(settings.topic_prefix, role != "archive")  # faust's group is its app id
    # This process's own data directory (its RocksDB files), kept while it lives.
    assert settings.faust_data_dir is not None  # Settings fills it in
    data_dir = claim_data_dir(settings.faust_data_dir, group)
    # Static group membership by default: a worker restarted after a crash takes its
    # partitions straight back; a clean stop leaves the group (processors.delivery).
    instance_id = resolve_instance_id(settings.worker_instance_id, role, data_dir)
    settings = settings.with_(faust_data_dir=data_dir, worker_instance_id=instance_id)
    log.info("worker data directory %s (store: %s, event loop: %s), group member %s", data_dir,
             settings.worker_store, loop, instance_id)
    app = build_app(runtime_for_role(pieces, role, settings))
    telemetry.serve_metrics(settings.worker_metrics_port, settings.metrics_host,
                            telemetry.PipelineCollector(settings, consumers=(
                                telemetry.worker_consumer(group, role == "archive"),)))
    json_logs = settings.log_format == "json"
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, logging_config=(
        telemetry.logging_config(settings, loglevel, "worker") if json_logs else None))
    # faust's start-up spinner sets the root logger to DEBUG (so that every record spins it):
    # every debug call in faust and aiokafka then builds a LogRecord that the handler drops,
    # ~7% of the worker's CPU (docs/PERFORMANCE.md). No spinner: records below the level are
    # not built at all, and "Ready" is logged at info instead.
    worker.spinner = None
    heap.settle()
    worker.execute_from_commandline()

