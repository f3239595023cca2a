"""Replay benchmark: a log of case events read from Kafka into a fresh SQLite / PostgreSQL
database by the real sink (sinks.runner.run_sink, drain), beside a bulk insert of the very
rows that replay produced (sqlite3 executemany / PostgreSQL COPY) into a fresh schema.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Context, Figure, Timer, fmt_rate, pg_database, rate, say, topic_prefix
from gridflow import topics
from gridflow.events import canonical_json, iso, parse_ts

FULL_EVENTS = 1_000_000
TEMPLATE_CASE = "AJ000000"
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TARGET_RATE = 50_000
TARGET_RATIO = 0.5


# --- the log ------------------------------------------------------------------------------


class CaseLog:
    """Case histories made from one real one (demo.histories.eventful_lifecycle, every event type)
    by renaming the case, shifting its times and re-chaining its hashes: case k starts k
    minutes after case 0, so the log interleaves cases as a live county's would."""

    def __init__(self) -> None:
        from demo import histories as sample

        events = sample.eventful_lifecycle(TEMPLATE_CASE, sample.T0)
        self.template = [e.to_dict() for e in events]
        text = json.dumps(self.template, ensure_ascii=False, sort_keys=True)
        self.parts = _TS.split(text)
        self.times = [parse_ts(t) for t in _TS.findall(text)]
        self.per_case = len(events)

    def case(self, k: int) -> list[tuple[datetime, bytes]]:
        """Case k's events as (event time, encoded bytes), chained like the case agent's."""
        shift = timedelta(minutes=k)
        pieces = [self.parts[0]]
        for t, part in zip(self.times, self.parts[1:], strict=True):
            pieces += [iso(t + shift), part]
        case_id = f"AJ{k:06d}"
        docs = json.loads("".join(pieces).replace(TEMPLATE_CASE, case_id))
        out, prev = [], ""
        for d in docs:
            d["id"] = f"{d['id'][:24]}{k:08x}"
            d["prev_hash"] = prev
            raw = canonical_json(d)
            prev = hashlib.sha256(raw).hexdigest()
            out.append((parse_ts(d["at"]), raw))
        return out


def partitions_of(count: int, partitions: int) -> tuple[dict[int, list[bytes]], int]:
    """At least `count` events: whole cases, case k on partition k % n, each partition in time
    order. Returns {partition: values} and the number of events."""
    log = CaseLog()
    cases = -(-count // log.per_case)
    by_p: dict[int, list[tuple[datetime, int, bytes]]] = {p: [] for p in range(partitions)}
    for k in range(cases):
        rows = by_p[k % partitions]
        for seq, (at, raw) in enumerate(log.case(k)):
            rows.append((at, k * 100 + seq, raw))
    out = {}
    for p, rows in by_p.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[p] = [r[2] for r in rows]
    return out, cases * log.per_case


def produce(bootstrap: str, topic: str, values: dict[int, list[bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=8 << 20)
    try:
        for p, rows in values.items():
            for raw in rows:
                key = raw[raw.index(b'"case_id":"') + 11:][:8]
                producer.send(topic, key=key, value=raw, partition=p)
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=30)


# --- the baseline: the same rows, bulk-inserted ----------------------------------------------

TABLES = ("cases", "tasks", "reports", "photos", "case_events", "task_history",
          "command_outcomes", "sink_offsets", "dead_letters")


def sqlite_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}
    finally:
        conn.close()


def sqlite_bulk_insert(path: Path, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    """executemany of every table's rows in one transaction; returns seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        with Timer() as t:
            conn.execute("BEGIN IMMEDIATE")
            for table, batch in rows.items():
                if batch:
                    marks = ",".join("?" * len(batch[0]))
                    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
            conn.execute("COMMIT")
        return t.seconds
    finally:
        conn.close()


def pg_dump(dsn: str) -> dict[str, bytes]:
    import psycopg

    out = {}
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for table in TABLES:
            buf = io.BytesIO()
            with cur.copy(f"COPY {table} TO STDOUT") as copy:
                for chunk in copy:
                    buf.write(chunk)
            out[table] = buf.getvalue()
    return out


def pg_copy_in(dsn: str, data: dict[str, bytes]) -> float:
    """COPY FROM STDIN of every table's rows in one transaction; returns seconds."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with Timer() as t:
            for table, block in data.items():
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    for i in range(0, len(block), 1 << 20):
                        copy.write(block[i:i + (1 << 20)])
            conn.commit()
    return t.seconds


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# --- the run ------------------------------------------------------------------------------


def _replay(ctx: Context, prefix: str, url: str, events: int) -> tuple[float, int]:
    from sinks.models import create_schema, make_engine
    from sinks.runner import run_sink

    engine = make_engine(url)
    try:
        create_schema(engine)
        with Timer() as t:
            progress = run_sink(ctx.settings, engine, "replay", topic_prefix=prefix, drain=True,
                                replay=True)
        return t.seconds, progress.totals.applied
    finally:
        engine.dispose()


def _fresh_schema(url: str) -> None:
    from sinks.models import create_schema, make_engine

    engine = make_engine(url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()


def _figure(db: str, events: int, ours_s: float, applied: int, base_s: float, how: str,
            ctx: Context) -> Figure:
    ours, base = rate(applied, ours_s), rate(events, base_s)
    ratio = ours / base if base else None
    met = ours >= TARGET_RATE and ratio is not None and ratio >= TARGET_RATIO and applied == events
    note = f"{events:,} events; {applied:,} applied in {ours_s:.1f} s; baseline {base_s:.1f} s"
    if applied != events:
        note += f"; only {applied:,} of {events:,} applied"
    return Figure(
        f"replay into {db}", fmt_rate(ours, "events/s"), f"{fmt_rate(base, 'events/s')} ({how})",
        ratio, f"≥ {TARGET_RATE:,} events/s and ≥ {TARGET_RATIO} of baseline", met, note,
        {"events": events, "applied": applied, "ours_s": ours_s, "baseline_s": base_s,
         "ours_rate": ours, "baseline_rate": base},
    )


def run(ctx: Context) -> list[Figure]:
    count = ctx.n(FULL_EVENTS, 2000)
    say(ctx.echo, f"replay: building {count:,} case events ...")
    with Timer() as t:
        values, events = partitions_of(count, topics.CASE_PARTITIONS)
    say(ctx.echo, f"replay: {events:,} events built in {t.seconds:.1f} s; producing to Kafka ...")
    figures = []
    with topic_prefix(ctx.settings, ctx.unique("replay")) as prefix:
        with Timer() as t:
            produce(ctx.settings.kafka_bootstrap, topics.CASE_EVENTS.name(prefix), values)
        del values
        say(ctx.echo, f"replay: produced in {t.seconds:.1f} s")
        # SQLite
        db = ctx.work_dir / "replay.db"
        base_db = ctx.work_dir / "replay-baseline.db"
        for p in (db, base_db):
            p.unlink(missing_ok=True)
        ours_s, applied = _replay(ctx, prefix, f"sqlite:///{db}", events)
        say(ctx.echo, f"replay: SQLite {applied:,} events in {ours_s:.1f} s")
        rows = sqlite_dump(db)
        _fresh_schema(f"sqlite:///{base_db}")
        base_s = sqlite_bulk_insert(base_db, rows)
        del rows
        for p in (db, base_db):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{p}{suffix}").unlink(missing_ok=True)
        figures.append(_figure("SQLite", events, ours_s, applied, base_s, "executemany", ctx))
        say(ctx.echo, f"replay: SQLite baseline {base_s:.1f} s")
        # PostgreSQL
        with pg_database(ctx.settings, ctx.unique("replay")) as url, \
                pg_database(ctx.settings, ctx.unique("replay-base")) as base_url:
            ours_s, applied = _replay(ctx, prefix, url, events)
            say(ctx.echo, f"replay: PostgreSQL {applied:,} events in {ours_s:.1f} s")
            data = pg_dump(_psycopg_dsn(url))
            _fresh_schema(base_url)
            base_s = pg_copy_in(_psycopg_dsn(base_url), data)
            say(ctx.echo, f"replay: PostgreSQL baseline {base_s:.1f} s")
        figures.append(_figure("PostgreSQL", events, ours_s, applied, base_s, "COPY", ctx))
    return figures


def iter_sizes(ctx: Context) -> Iterator[str]:
    yield f"replay: {ctx.n(FULL_EVENTS, 2000):,} case events"
