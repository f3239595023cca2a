"""`gridflow sink`: keep the SQL read models up to date from the case-events topic until stopped."""

from __future__ import annotations

import signal
import threading

import click

from gridflow.settings import load_settings


@click.command("sink")
@click.option(
    "--database",
    "database_url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL of the read models [default: GRIDFLOW_DATABASE_URL].",
)
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def sink(database_url: str | None, loglevel: str) -> None:
    """Apply case events and dead letters to the read models (at most once each)."""
    from gridflow import telemetry
    from sinks.models import create_schema, make_engine
    from sinks.runner import run_sink

    settings = load_settings()
    telemetry.configure_logging(settings, loglevel, "sink")
    url = database_url or settings.database_url
    engine = make_engine(url)
    create_schema(engine)
    # lag, dead letters, open and overdue tasks, the archive backlog; events applied
    telemetry.serve_metrics(settings.sink_metrics_port, settings.metrics_host,
                            telemetry.PipelineCollector(
                                settings.with_(database_url=url),
                                consumers=(telemetry.sink_consumer(),), read_models=True,
                                dead_letters=True))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"gridflow sink: {settings.topic_prefix}.case-events -> {engine.url!r}")
    # The broker answers a fetch once it holds 1 MiB or after sink_fetch_wait_ms: when the
    # sink keeps up, each transaction takes that long's events instead of a handful (the
    # per-transaction cost was most of the sink's CPU per report; docs/PERFORMANCE.md).
    fetch = {"fetch_min_bytes": 1 << 20, "fetch_max_wait_ms": settings.sink_fetch_wait_ms}
    progress = run_sink(settings, engine, stop_event=stop, consumer_config=fetch,
                        observer=telemetry.sink_observer(settings.clock))
    click.echo(f"gridflow sink: stopped after {progress.totals.applied} events")
