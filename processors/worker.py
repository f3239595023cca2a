"""Composition root of the stream processors, and the `gridflow worker` command.

Builds reference data, deadline policy, calendar, clock and object-store client
from settings, wires them into the faust app and runs a worker until SIGTERM.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import click

from gridflow.calendars import end_warning, load_working_calendar
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, WorkingCalendar, load_bundled_calendar
from gridflow.core.refdata import load_reference_data
from gridflow.core.sla import SlaPlanner, load_bundled_policy
from gridflow.objectstore import make_client
from gridflow.settings import Settings, load_settings
from processors.app import ROLES, Runtime, app_id_for, build_app, clock_for
from processors.tablestore import claim_data_dir, resolve_instance_id

log = logging.getLogger("gridflow.worker")


def working_calendar(settings: Settings | None = None) -> WorkingCalendar:
    """The calendar of `settings` (its calendar directory, read now: a year added there is
    picked up by restarting the worker), or the bundled one; past its last configured year,
    plain Monday-Friday.

    Refusing every deadline that reaches into a year whose holiday notice is not yet
    configured would stop dispatch at year end; the worker's log, `gridflow status` and the
    supervisors' board warn 60 days ahead instead (gridflow.calendars).
    """
    cal = load_working_calendar(settings) if settings is not None else load_bundled_calendar()
    return replace(cal, unknown_years=UNKNOWN_YEARS_WEEKDAYS)


def build_runtime(settings: Settings, with_archive: bool = True, with_deadlines: bool = True,
                  with_pipeline: bool = True) -> Runtime:
    ref = load_reference_data(settings.refdata_dir)
    clock = clock_for(settings)
    calendar = working_calendar(settings)
    warning = end_warning(calendar, clock(), settings)
    if warning:
        log.warning("%s", warning)
    planner = SlaPlanner(load_bundled_policy(), calendar)
    rt = Runtime(settings=settings, ref=ref, planner=planner, clock=clock,
                 object_store=make_client(settings) if with_archive else None,
                 pipeline=with_pipeline)
    if with_deadlines:
        from processors.deadlines import DeadlineRuntime

        rt.deadlines = DeadlineRuntime(planner.policy, planner.calendar)
    return rt


def runtime_for_role(settings: Settings, role: str = "all") -> Runtime:
    """"all": every agent in one worker; "pipeline": all but the photo archive; "archive":
    the photo archive alone (its own consumer group, see processors.app.app_id_for)."""
    if role not in ROLES:
        raise click.BadParameter(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return build_runtime(settings, with_archive=role != "pipeline",
                         with_deadlines=role != "archive", with_pipeline=role != "archive")


def run_worker(settings: Settings, loglevel: str = "warning", role: str = "all") -> None:
    import faust

    from gridflow import telemetry, topics

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
    log.info("worker data directory %s (store: %s), group member %s", data_dir,
             settings.worker_store, instance_id)
    app = build_app(runtime_for_role(settings, role))
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
    worker.execute_from_commandline()


@click.command("worker")
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--role", default="all", show_default=True, type=click.Choice(list(ROLES)),
              help="all: every agent; pipeline: intake, filing, cases and deadlines; archive: "
                   "the photo archive alone (run one of each to keep photo work off the "
                   "path from report to dispatched task).")
@click.option("--nice", "niceness", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Lower this worker's CPU priority (e.g. an archive worker on a machine "
                   "it shares with the pipeline).")
def worker_command(loglevel: str, role: str, niceness: int) -> None:
    """Run the stream processors (intake, filing, cases, archive, deadlines) until stopped."""
    from gridflow.telemetry import configure_logging

    settings = load_settings()
    configure_logging(settings, loglevel, "worker")
    if niceness:
        os.nice(niceness)
    run_worker(settings, loglevel, role)
