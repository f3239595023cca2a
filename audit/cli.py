"""`gridflow replay`, `gridflow audit verify|case` and `gridflow archive-log`.

Guarantee: exit 0 when done and clean, 1 when differences or problems were found (verify,
case, an inexact what-if baseline), 2 on a usage or infrastructure error (a non-empty target,
a gap in the log, Kafka / MinIO / the database unreachable), with the reason in Chinese and
English on stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from gridflow.settings import Settings, load_settings

EXIT_CLEAN, EXIT_DIFFERENCES, EXIT_ERROR = 0, 1, 2


def _say(line: str = "") -> None:
    click.echo(line)
    sys.stdout.flush()


@contextmanager
def _errors() -> Iterator[None]:
    """Infrastructure and input errors become one clear message and exit code 2."""
    from kafka.errors import KafkaError
    from minio.error import S3Error
    from sqlalchemy.exc import SQLAlchemyError

    from audit.archiver import ArchiveGap
    from audit.dbcompare import NotEmpty
    from audit.logsource import LogGap, LogUnavailable
    from audit.moments import MomentError
    from audit.segments import SegmentError
    from gridflow.core.calendar import CalendarError
    from gridflow.core.sla import PolicyError

    try:
        yield
    except (NotEmpty, LogGap, LogUnavailable, MomentError, SegmentError, ArchiveGap,
            PolicyError, CalendarError) as exc:
        click.echo(f"gridflow: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except S3Error as exc:
        click.echo(f"gridflow: object store error / 对象存储错误: {exc.code}: {exc.message}",
                   err=True)
        sys.exit(EXIT_ERROR)
    except (KafkaError, SQLAlchemyError, OSError) as exc:
        click.echo(f"gridflow: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_ERROR)


def _existing_database(url: str) -> str:
    """A live database to read: a SQLite file that does not exist is an error, not created."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(str(parsed.database)).exists():
            click.echo(f"gridflow: no database at {url} / 数据库不存在", err=True)
            sys.exit(EXIT_ERROR)
    return url


def _store(settings: Settings) -> Any:
    from bootstrap import bootstrap

    return bootstrap(settings).object_store


def _prefixed(settings: Settings, prefix: str | None, bucket: str | None = None) -> Settings:
    changes: dict[str, Any] = {}
    if prefix:
        changes["topic_prefix"] = prefix
    if bucket:
        changes["bucket_archive"] = bucket
    return settings.with_(**changes) if changes else settings


prefix_option = click.option("--prefix", default=None, metavar="P",
                             help="Topic prefix of the log [default: GRIDFLOW_TOPIC_PREFIX].")
archive_option = click.option("--from-archive", is_flag=True,
                              help="Read the segment archive first, then Kafka from where it "
                                   "ends (for history past Kafka's retention).")
bucket_option = click.option("--bucket", default=None, metavar="B",
                             help="Bucket of the segment archive [default: "
                                  "GRIDFLOW_BUCKET_ARCHIVE].")


# --- replay ----------------------------------------------------------------------------------


@click.command("replay")
@click.option("--into", "into", default=None, metavar="URL",
              help="SQLAlchemy URL of an EMPTY database to rebuild the read models in.")
@click.option("--until", default=None, metavar="TIME",
              help="Build the state as of this moment: 'YYYY-MM-DD HH:MM[:SS]' is Beijing time; "
                   "ISO 8601 with an offset is taken as given.")
@prefix_option
@archive_option
@bucket_option
@click.option("--batch", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Records per database transaction.")
@click.option("--policy", "policy_file", default=None, type=click.Path(dir_okay=False),
              help="What-if: re-run deadline decisions under this SLA policy (JSON).")
@click.option("--calendar", "calendar_file", default=None, type=click.Path(dir_okay=False),
              help="What-if: ... under this working calendar (JSON).")
@click.option("--ideal-clock", is_flag=True,
              help="What-if: fire every decision at its exact instant instead of where the "
                   "record proves the live clock stood.")
@click.option("--max-tick-lag", default=None, type=click.FloatRange(min=0), metavar="SECONDS",
              help="What-if: assume the live deadline clock never trailed event time by more "
                   "than this (tick interval plus processing), so decisions also fire then.")
@click.option("--json", "as_json", is_flag=True, help="What-if: print the comparison as JSON.")
def replay(into: str | None, until: str | None, prefix: str | None, from_archive: bool,
           bucket: str | None, batch: int, policy_file: str | None, calendar_file: str | None,
           ideal_clock: bool, max_tick_lag: float | None, as_json: bool) -> None:
    """Rebuild the read models from the log into an empty database (or, with --policy /
    --calendar, re-run the deadline decisions under another policy, in memory)."""
    settings = _prefixed(load_settings(), prefix, bucket)
    whatif = policy_file is not None or calendar_file is not None
    if whatif and (into or until):
        raise click.UsageError("--policy/--calendar run in memory: drop --into/--until")
    if not whatif and not into:
        raise click.UsageError("give --into <database url> (or --policy/--calendar for a what-if)")
    with _errors():
        store = _store(settings) if from_archive else None
        if whatif:
            sys.exit(_whatif(settings, store, policy_file, calendar_file, ideal_clock,
                             max_tick_lag, as_json))
        from audit import report
        from audit.moments import parse_moment
        from audit.replay import replay_into

        moment = parse_moment(until) if until else None
        if moment is not None:
            _say(moment.explanation)
        _say(f"回放 / replaying {settings.topic_prefix}.case-events"
             + (" (segment archive, then Kafka)" if store else "") + f" into {into}")
        result = replay_into(settings, str(into), until=moment.utc if moment else None,
                             store=store, batch=batch, progress=sys.stderr)
        for line in report.replay_lines(result):
            _say(line)


def _whatif(settings: Settings, store: Any, policy_file: str | None, calendar_file: str | None,
            ideal_clock: bool, max_tick_lag: float | None, as_json: bool) -> int:
    from audit import report, whatif
    from bootstrap import bootstrap
    from gridflow.core.calendar import WorkingCalendar
    from gridflow.core.sla import SlaPolicy

    world = bootstrap(settings)
    ref = world.ref
    levels = {code: d.level for code, d in ref.departments.items()}
    names = {code: d.name for code, d in ref.departments.items()}
    # what the worker decides with (bootstrap.Bundle.planner): the bundled policy, the configured
    # calendar (GRIDFLOW_CALENDAR_DIR)
    recorded = whatif.Regime(world.planner.policy, world.calendar, levels)
    other = whatif.Regime(
        SlaPolicy.load(Path(policy_file)) if policy_file else recorded.policy,
        WorkingCalendar.load(Path(calendar_file)) if calendar_file else recorded.calendar,
        levels,
    )
    log = read_events(settings, store)
    clock = whatif.IDEAL if ideal_clock else whatif.RECORD
    lag = None if max_tick_lag is None else timedelta(seconds=max_tick_lag)
    comparison = whatif.compare(log, recorded, other, clock=clock, max_lag=lag)
    if as_json:
        _say(json.dumps(report.whatif_json(comparison), ensure_ascii=False, indent=1,
                        default=str))
    else:
        for line in report.whatif_lines(comparison, policy_file or "recorded (bundled)",
                                        calendar_file or "recorded (bundled)", names, lag):
            _say(line)
    return EXIT_CLEAN if comparison.reproduction.exact else EXIT_DIFFERENCES


def read_events(settings: Settings, store: Any) -> list[Any]:
    """Every case event of the log (archive first with `store`), with where it lies."""
    from audit import logsource
    from audit.whatif import Recorded
    from gridflow import topics
    from gridflow.events import SchemaError, decode_message

    topic = topics.CASE_EVENTS.name(settings.topic_prefix)
    kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-whatif")
    out = []
    try:
        plans = logsource.plan(kc, [topic], store=store, bucket=settings.bucket_archive)
        for batch in logsource.read(kc, plans, store=store, bucket=settings.bucket_archive):
            for r in batch:
                try:
                    m = decode_message(r.value or b"", typed=False)
                except SchemaError:
                    continue
                if m.case_id:
                    out.append(Recorded(r.partition, r.offset, m))
    finally:
        kc.close()
    return out


# --- audit verify / case -----------------------------------------------------------------------


@click.group("audit")
def audit() -> None:
    """Auditor's tools: verify the live database against the log, a case's full history."""


@audit.command("verify")
@click.option("--database", "database_url", default=None, metavar="URL",
              help="The live read-model database [default: GRIDFLOW_DATABASE_URL].")
@prefix_option
@archive_option
@bucket_option
@click.option("--scratch", "scratch_url", default=None, metavar="URL",
              help="An EMPTY database to replay into [default: a temporary SQLite file].")
@click.option("--consumer", "consumer_name", default="sql-sink", show_default=True,
              help="The live sink's consumer name (whose offsets set the cut).")
@click.option("--max-diffs", default=50, show_default=True, type=click.IntRange(min=1),
              help="Differences to print: read-model rows, and lost records.")
def verify_command(database_url: str | None, prefix: str | None, from_archive: bool,
                   bucket: str | None, scratch_url: str | None, consumer_name: str,
                   max_diffs: int) -> None:
    """Replay the log into a scratch database, compare it with the live read models table by
    table, verify every case's hash chain against the ledger, and check that no record the
    pipeline's consumer groups committed past was lost. Exit 0 clean, 1 differences."""
    from audit import report
    from audit.verify import verify

    settings = _prefixed(load_settings(), prefix, bucket)
    with _errors():
        result = verify(settings, _existing_database(database_url or settings.database_url),
                        consumer_name=consumer_name, scratch_url=scratch_url,
                        store=_store(settings) if from_archive else None, max_diffs=max_diffs,
                        progress=sys.stderr)
    for line in report.verify_lines(result):
        _say(line)
    sys.exit(EXIT_CLEAN if result.clean else EXIT_DIFFERENCES)


@audit.command("case")
@click.argument("case_id")
@click.option("--database", "database_url", default=None, metavar="URL",
              help="Read the ledger of this database [default: GRIDFLOW_DATABASE_URL].")
@click.option("--from-log", is_flag=True, help="Read the case's events from the log instead.")
@prefix_option
@archive_option
@bucket_option
@click.option("--no-photos", is_flag=True, help="Do not check the photos in the object store.")
def case_command(case_id: str, database_url: str | None, from_log: bool, prefix: str | None,
                 from_archive: bool, bucket: str | None, no_photos: bool) -> None:
    """The full, ordered history of a case: every event, who, when (Beijing time), what, and
    every photo checked against the object store."""
    from audit import history, logsource, report
    from bootstrap import bootstrap
    from gridflow import topics

    settings = _prefixed(load_settings(), prefix, bucket)
    world = bootstrap(settings)
    names = {code: d.name for code, d in world.ref.departments.items()}
    with _errors():
        store = _store(settings)
        if from_log or from_archive:
            topic = topics.CASE_EVENTS.name(settings.topic_prefix)
            kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-audit-case")
            try:
                events = history.load_from_log(kc, topic, case_id,
                                               store=store if from_archive else None,
                                               bucket=settings.bucket_archive)
            finally:
                kc.close()
            source = f"the log {topic}" + (" (segment archive and Kafka)" if from_archive else "")
        else:
            url = _existing_database(database_url or settings.database_url)
            engine = world.engine(url)
            events = history.load_from_ledger(engine, case_id)
            source = f"the ledger of {engine.url.render_as_string(hide_password=True)}"
        if not events:
            click.echo(f"gridflow: no events of case {case_id} in {source} / 未找到该案件",
                       err=True)
            sys.exit(EXIT_ERROR)
        h = history.build_history(case_id, source, events, names)
        h.photos = history.expected_photos(m for m, _, _ in events)
        if not no_photos:
            history.check_photos(store, h.photos)
    for line in report.history_lines(h, checked_photos=not no_photos):
        _say(line)
    sys.exit(EXIT_CLEAN if h.clean or (no_photos and not h.findings) else EXIT_DIFFERENCES)


# --- archive-log -------------------------------------------------------------------------------


@click.command("archive-log")
@prefix_option
@bucket_option
@click.option("--segment-records", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Records per segment.")
@click.option("--seal-after", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seal a shorter tail segment once its newest record is this many seconds old.")
@click.option("--once", is_flag=True, help="Archive what is there and exit.")
@click.option("--seal", is_flag=True, help="With --once: seal every tail now.")
@click.option("--interval", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between rounds when running continuously.")
@click.option("--lock-mode", default=None, type=click.Choice(["GOVERNANCE", "COMPLIANCE"]),
              help="Object-lock mode of the segments (retention GRIDFLOW_ARCHIVE_RETENTION_DAYS) "
                   "[default: GRIDFLOW_ARCHIVE_LOCK_MODE, GOVERNANCE unless set].")
def archive_log_command(prefix: str | None, bucket: str | None, segment_records: int,
                        seal_after: float, once: bool, seal: bool, interval: float,
                        lock_mode: str | None) -> None:
    """Copy the case-events and dead-letters topics into immutable, object-locked segment files
    with manifests (log-segments/<topic>/<partition>/...). Idempotent; runs until stopped."""
    from audit import archiver, logsource
    from audit.replay import log_topics

    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _prefixed(load_settings(), prefix, bucket)
    cfg = archiver.ArchiveConfig(settings.bucket_archive, segment_records, seal_after,
                                 seal_partial=seal, retention_days=settings.archive_retention_days,
                                 lock_mode=lock_mode or settings.archive_lock_mode)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _errors():
        store = _store(settings)
        archiver.ensure_bucket(store, settings.bucket_archive)
        kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-archiver")
        try:
            _rounds(lambda: archiver.archive_log(kc, store, log_topics(settings.topic_prefix), cfg),
                    once, interval, stop, settings.bucket_archive)
        finally:
            kc.close()


def _rounds(run: Callable[[], Any], once: bool, interval: float, stop: threading.Event,
            bucket: str) -> None:
    """Archive rounds until stopped; a transient Kafka / object-store failure waits a round
    (nothing is skipped: the next round resumes after the last manifest)."""
    from kafka.errors import KafkaError
    from minio.error import S3Error

    from audit.logsource import LogUnavailable
    from gridflow.core.retry import RetryPolicy
    from gridflow.retry import Backoff

    # a failed round is tried again a round later (the rounds' own pace, not a growing delay)
    backoff = Backoff(RetryPolicy("archive-log", interval, interval, factor=1.0), stop,
                      logging.getLogger("gridflow.audit.archiver"),
                      "nothing is skipped: the next round resumes after the last manifest")
    first = True
    while not stop.is_set():
        try:
            result = run()
        except (KafkaError, S3Error, LogUnavailable, OSError) as exc:
            if once:
                raise
            backoff.wait("archiving failed", exc)
            continue
        backoff.reset()
        for m in result.completed:
            _say(f"completed manifest of {m['segment_key']} ({m['count']} records)")
        for m in result.written:
            _say(f"归档 / archived s3://{bucket}/{m['segment_key']} ({m['count']} records, "
                 f"offsets {m['first_offset']}..{m['last_offset']})")
        pending = ", ".join(f"{k} {n}" for k, n in sorted(result.pending.items()))
        if once or first or result.written or result.completed:
            _say(f"archive-log: {len(result.written)} new segment(s), {result.records} records"
                 + (f"; waiting to seal: {pending}" if pending else ""))
        first = False
        if once:
            return
        stop.wait(interval)
