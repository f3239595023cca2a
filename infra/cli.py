"""`gridflow up / down / status`: the local stack from the command line.

Guarantee: `up` and `down` exit non-zero on any failure with the server named and its log
tail; `status` always exits 0 and reports each server's state.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from gridflow.settings import Settings, load_settings
from infra import stack
from infra.lag import PipelineLag, lag_lines, pipeline_lag


def _echo(message: str) -> None:
    click.echo(message)
    sys.stdout.flush()


def _parse_only(only: str | None, brokers: int = 1) -> list[str] | None:
    if not only:
        return None
    names = [n.strip() for n in only.split(",") if n.strip()]
    allowed = set(stack.SERVER_NAMES) | {f"kafka-{i}" for i in range(1, brokers + 1)
                                         if brokers > 1}
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise click.BadParameter(
            f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(sorted(allowed))}",
            param_hint="--only",
        )
    return names


ONLY_HELP = (f"Comma-separated subset of: {', '.join(stack.SERVER_NAMES)} (`kafka` is every node "
             "of a cluster; kafka-1, kafka-2 ... one node).")


@click.command()
@click.option("--only", metavar="NAMES", help=ONLY_HELP)
@click.option("--brokers", type=click.IntRange(1, 9), default=None,
              help="Kafka nodes to run on loopback (each broker + KRaft controller): 3 is the "
                   "production shape (topics with 3 replicas, min.insync.replicas 2). Kept for "
                   "this state dir; default: as last run here, else GRIDFLOW_KAFKA_BROKERS (1).")
def up(only: str | None, brokers: int | None) -> None:
    """Install (first time), start and provision the local Kafka, MinIO and PostgreSQL."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # refused connections while starting
    settings = load_settings()
    if brokers is None and settings.kafka_brokers > 1:
        brokers = settings.kafka_brokers
    names = _parse_only(only, brokers or stack.kafka_shape(settings).kafka_brokers)
    t0 = time.monotonic()
    _echo(f"gridflow up: state {settings.state_dir}, cache {settings.cache_dir}")
    try:
        started = stack.up(settings, names, echo=_echo, brokers=brokers)
    except stack.StackError as exc:
        click.echo(f"\ngridflow up FAILED ({', '.join(exc.servers)}):\n{exc}", err=True)
        sys.exit(1)
    except (stack.ServerError, TimeoutError) as exc:
        click.echo(f"\ngridflow up FAILED:\n{exc}", err=True)
        sys.exit(1)
    what = f"started {', '.join(started)}" if started else "all were already running"
    _echo(f"gridflow up: ready in {time.monotonic() - t0:.1f} s ({what})")


@click.command()
@click.option("--only", metavar="NAMES", help=ONLY_HELP)
def down(only: str | None) -> None:
    """Stop the local servers started by `gridflow up` (SIGTERM, then SIGKILL after a timeout)."""
    settings = load_settings()
    t0 = time.monotonic()
    try:
        names = _parse_only(only, stack.kafka_shape(settings).kafka_brokers)
        stopped = stack.down(settings, names, echo=_echo)
    except (RuntimeError, TimeoutError) as exc:
        click.echo(f"gridflow down FAILED: {exc}", err=True)
        sys.exit(1)
    what = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
    _echo(f"gridflow down: {what} in {time.monotonic() - t0:.1f} s")


def _notices(settings: Settings) -> list[str]:
    """What operators must act on beside the servers, as of the configured clock's date:
    the working calendar ending within 60 days (or unloadable)."""
    from gridflow.calendars import calendar_notices
    from gridflow.clock import clock_from_spec

    try:
        now = clock_from_spec(settings.clock)()
    except ValueError as exc:
        return [f"GRIDFLOW_CLOCK 无效：{exc}"]
    return calendar_notices(settings, now)


def _pipeline_lag(settings: Settings, rows: list[stack.Status]) -> PipelineLag | None:
    """The consumers' lag when Kafka is among the servers shown and up."""
    if not any(r.server.startswith("kafka") and r.up for r in rows):
        return None
    return pipeline_lag(stack.kafka_shape(settings))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--only", metavar="NAMES", help=ONLY_HELP)
def status(as_json: bool, only: str | None) -> None:
    """Show each local server: state, pid, address, version, data dir, log, and what operators
    must act on (the working calendar ending soon). Always exits 0."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = load_settings()
    rows = stack.status(settings, _parse_only(only, stack.kafka_shape(settings).kafka_brokers))
    notices = _notices(settings)
    pipeline = _pipeline_lag(settings, rows)
    if as_json:
        out = json.loads(stack.status_json(rows, notices))
        out["pipeline"] = pipeline.to_json() if pipeline is not None else None
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    click.echo(stack.status_table(rows))
    if pipeline is not None:
        click.echo("")
        for line in lag_lines(pipeline):
            click.echo(line)
    for notice in notices:
        click.echo(f"\n注意：{notice}")
