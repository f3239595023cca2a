"""The commands of the long-running processes whose packages may not import the composition
root (processors and sinks, see the import-linter contracts): `gridflow worker`, `gridflow
sink`, `gridflow notify`. Each parses its options, calls `bootstrap()` and hands the pieces
to the code it runs.
"""

from __future__ import annotations

import os
import signal
import threading

import click

from bootstrap import bootstrap

LOGLEVELS = click.Choice(["debug", "info", "warning", "error"])


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@click.command("worker")
@click.option("--loglevel", default="warning", show_default=True, type=LOGLEVELS)
@click.option("--role", default="all", show_default=True,
              type=click.Choice(["all", "pipeline", "archive"]),
              help="all: every agent; pipeline: intake, filing, cases and deadlines; archive: "
                   "the photo archive alone (run one of each to keep photo work off the "
                   "path from report to dispatched task).")
@click.option("--nice", "niceness", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Lower this worker's CPU priority (e.g. an archive worker on a machine "
                   "it shares with the pipeline).")
def worker(loglevel: str, role: str, niceness: int) -> None:
    """Run the stream processors (intake, filing, cases, archive, deadlines) until stopped."""
    from gridflow.telemetry import configure_logging
    from processors.worker import run_worker

    world = bootstrap()
    configure_logging(world.settings, loglevel, "worker")
    if niceness:
        os.nice(niceness)
    run_worker(world, loglevel, role)


@click.command("sink")
@click.option("--database", "database_url", default=None, metavar="URL",
              help="SQLAlchemy URL of the read models [default: GRIDFLOW_DATABASE_URL].")
@click.option("--loglevel", default="info", show_default=True, type=LOGLEVELS)
def sink(database_url: str | None, loglevel: str) -> None:
    """Apply case events and dead letters to the read models (at most once each)."""
    from gridflow import heap, telemetry
    from sinks.gauges import DatabaseReader, read_model_gauges
    from sinks.models import create_schema
    from sinks.runner import run_sink

    world = bootstrap()
    settings = world.settings
    telemetry.configure_logging(settings, loglevel, "sink")
    url = database_url or settings.database_url
    engine = world.engine(url)
    create_schema(engine)
    # lag, dead letters, open and overdue tasks, the archive backlog; events applied
    telemetry.serve_metrics(settings.sink_metrics_port, settings.metrics_host,
                            telemetry.PipelineCollector(
                                settings, consumers=(telemetry.sink_consumer(),),
                                database=DatabaseReader(url, (read_model_gauges(world.clock),)),
                                dead_letters=True))
    stop = _stop_on_signals()
    click.echo(f"gridflow sink: {settings.topic_prefix}.case-events -> {engine.url!r}")
    # The broker answers a fetch once it holds 1 MiB or after sink_fetch_wait_ms: when the
    # sink keeps up, each transaction takes that long's events instead of a handful (the
    # per-transaction cost was most of the sink's CPU per report; docs/PERFORMANCE.md).
    fetch = {"fetch_min_bytes": 1 << 20, "fetch_max_wait_ms": settings.sink_fetch_wait_ms}
    heap.settle()
    progress = run_sink(settings, engine, stop_event=stop, consumer_config=fetch,
                        observer=telemetry.sink_observer(settings.clock))
    click.echo(f"gridflow sink: stopped after {progress.totals.applied} events")


@click.command("notify")
@click.option("--database", "database_url", default=None, metavar="URL",
              help="SQLAlchemy URL where the send states live [default: GRIDFLOW_DATABASE_URL].")
@click.option("--config", "config_path", default=None, metavar="PATH",
              type=click.Path(dir_okay=False),
              help="notify.json: each department's send method [default: the reference "
                   "data's notify.json; without one, every notice is logged].")
@click.option("--consumer", default="notify", show_default=True,
              help="Name under which positions are stored (one per notifier deployment).")
@click.option("--from-end", is_flag=True,
              help="Without stored positions, start at the log's end instead of its beginning.")
@click.option("--loglevel", default="info", show_default=True, type=LOGLEVELS)
def notify(database_url: str | None, config_path: str | None, consumer: str, from_end: bool,
           loglevel: str) -> None:
    """Notify departments of new tasks, deadline warnings, escalations and whistle-ups."""
    from gridflow import telemetry
    from gridflow.core.notify import NotifyConfigError, load_notify_config
    from sinks.gauges import DatabaseReader, notification_gauges
    from sinks.notify import Notifier, run_notifier
    from sinks.notify_models import create_notify_tables
    from sinks.notify_send import close_methods, default_methods

    world = bootstrap()
    settings = world.settings
    telemetry.configure_logging(settings, loglevel, "notify")
    try:
        config = load_notify_config(config_path, world.ref)
    except NotifyConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    url = database_url or settings.database_url
    engine = world.engine(url)
    create_notify_tables(engine)
    telemetry.serve_metrics(settings.notify_metrics_port, settings.metrics_host,
                            telemetry.PipelineCollector(
                                settings, consumers=(telemetry.notify_consumer(consumer),),
                                database=DatabaseReader(url, (notification_gauges,))))
    stop = _stop_on_signals()
    methods = default_methods()
    notifier = Notifier(engine, config, world.ref, methods, consumer=consumer)
    webhooks = sum(1 for c in config.contacts.values() if c.method == "webhook")
    click.echo(f"gridflow notify: {settings.topic_prefix}.case-events -> {webhooks} webhook "
               f"department(s), the rest {config.default.method if config.default else 'skipped'}"
               f" ({config.source}); send states in {engine.url!r}")
    try:
        total = run_notifier(settings, notifier, stop, from_end=from_end,
                             on_round=telemetry.count_notify_round)
    finally:
        notifier.close()
        close_methods(methods)
    click.echo(f"gridflow notify: stopped; {total.notices} notices taken in, {total.sent} sent, "
               f"{total.failed} failed attempts")
