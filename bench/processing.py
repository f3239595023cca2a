"""Processing benchmark: reports pre-loaded on the reports topic, the real worker and SQL sink
started as child processes (infra.services), timed until every case and task is in the
database; beside a bare aiokafka consumer that reads the same topic and produces one event per
input (acks=all, like the worker's producer).

Reports are residents' complaints without photos (so the archive agent has nothing to fetch),
1,000 per simulated day; the worker runs on a clock at the first report's time, so no deadline
falls due during the run. Set GRIDFLOW_BENCH_PYSPY=<dir> to record py-spy profiles of the
worker and the sink (speedscope JSON) while they run.

Reports are published as the API publishes them: keyed by township (intake.report_key), with
the ticket placed on the township's partition (intake.ticket_for), so the worker takes each from
report to its case's events in one step. For comparison in the same conditions,
GRIDFLOW_BENCH_REPORT_KEY=township leaves the ticket out (filed in one step, the case decided
one hop later: issue 16's first step) and GRIDFLOW_BENCH_REPORT_KEY=report_id keys them by
report id as before issue 16 (through `<p>.reports-located` too).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import (
    Context,
    Figure,
    Timer,
    fmt_rate,
    rate,
    say,
    spy,
    stop_spies,
    topic_prefix,
    tree_cpu_s,
)
from bench.load import County
from gridflow import topics
from gridflow.clock import scaled_spec
from infra import services
from infra.kafka import ensure_catalogue
from processors.app import app_id_for

FULL_REPORTS = 100_000
T0 = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)
PER_DAY = 1000
TARGET_RATE = 5000
TARGET_RATIO = 0.5
REPORT_KEY = os.environ.get("GRIDFLOW_BENCH_REPORT_KEY", "ticket")


def worker_count() -> int:
    """GRIDFLOW_BENCH_WORKERS: how many worker processes share the partitions (1 by default).
    Their CPU per report is given each, and summed as `workers`."""
    raw = os.environ.get("GRIDFLOW_BENCH_WORKERS", "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"GRIDFLOW_BENCH_WORKERS must be a whole number, got {raw!r}") from None
    if not 1 <= n <= topics.CASE_PARTITIONS:
        raise ValueError(f"GRIDFLOW_BENCH_WORKERS must be 1..{topics.CASE_PARTITIONS} (one "
                         f"partition each at most), got {n}")
    return n


IDLE_CPU_S = 0.05  # CPU seconds per second below which a process counts as idle


IDLE_WAIT_S = 900.0  # the deadline agent's tail lasted over 120 s at 100,000 reports


def _cpu_until_idle(procs: list[Any], limit_s: float = IDLE_WAIT_S
                    ) -> tuple[dict[str, float], float, bool]:
    """Each process's CPU seconds once all of them used less than IDLE_CPU_S in a second, how
    long that took (at most `limit_s`), and whether they were idle by then."""
    def now() -> dict[str, float]:
        return {p.name: tree_cpu_s(p.proc.pid) for p in procs if p.proc}

    t0 = time.monotonic()
    before = now()
    while time.monotonic() - t0 < limit_s:
        time.sleep(1.0)
        after = now()
        if all(after[name] - before.get(name, 0.0) < IDLE_CPU_S for name in after):
            return after, time.monotonic() - t0 - 1.0, True
        before = after
    return before, time.monotonic() - t0, False


def preload(bootstrap: str, topic: str, count: int, run: str) -> None:
    from kafka import KafkaProducer

    county = County()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=1 << 20)
    step = timedelta(days=1) / PER_DAY
    try:
        for i in range(count):
            key, value = county.keyed_report(i, run, T0 + i * step, keyed=REPORT_KEY)
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=30)


async def bare_baseline(bootstrap: str, source: str, target: str, count: int) -> float:
    """Read `source` from the beginning, produce one record per input to `target`; seconds
    until the last one is acknowledged."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    t0 = time.perf_counter()
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(source, p) for p in range(topics.CASE_PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen, pending = 0, []
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                for r in records:
                    pending.append(await producer.send(target, key=r.key, value=r.value))
                    seen += 1
            if len(pending) > 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - t0
    finally:
        await consumer.stop()
        await producer.stop()


def changelog_records(bootstrap: str, app_id: str) -> dict[str, int]:
    """Records on each table's changelog of a worker group (faust names them
    `<app id>-<table>-changelog`), by table: what the worker's state writes cost Kafka."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        head, tail = f"{app_id}-", "-changelog"
        counts: dict[str, int] = {}
        for name in sorted(consumer.topics()):
            if not (name.startswith(head) and name.endswith(tail)):
                continue
            tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
            ends = consumer.end_offsets(tps)
            starts = consumer.beginning_offsets(tps)
            counts[name[len(head):-len(tail)]] = sum(ends[tp] - starts[tp] for tp in tps)
        return counts
    finally:
        consumer.close()


def _counts(engine: object) -> tuple[int, int, int]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        reports = int(conn.execute(text("SELECT count(*) FROM reports")).scalar() or 0)
        tasks = int(conn.execute(text("SELECT count(*) FROM tasks")).scalar() or 0)
        wanted = int(conn.execute(text(
            "SELECT coalesce(sum(json_array_length(departments)), 0) FROM cases "
            "WHERE status != 'not_filed'")).scalar() or 0)
    return reports, tasks, wanted


def run(ctx: Context) -> list[Figure]:
    from sinks.models import create_schema, make_engine

    count = ctx.n(FULL_REPORTS, 200)
    run_dir = ctx.work_dir / "processing"
    run_dir.mkdir(parents=True, exist_ok=True)
    with topic_prefix(ctx.settings, ctx.unique("proc")) as prefix:
        source = topics.REPORTS.name(prefix)
        say(ctx.echo, f"processing: pre-loading {count:,} reports on {source} ...")
        with Timer() as t:
            preload(ctx.settings.kafka_bootstrap, source, count, ctx.run_id)
        say(ctx.echo, f"processing: pre-loaded in {t.seconds:.1f} s; baseline (bare aiokafka) ...")
        ensure_catalogue(ctx.settings.kafka_bootstrap, f"{prefix}-base")  # removed with prefix
        target = topics.CASE_EVENTS.name(f"{prefix}-base")
        base_s = asyncio.run(bare_baseline(ctx.settings.kafka_bootstrap, source, target, count))
        say(ctx.echo, f"processing: baseline {count:,} in {base_s:.1f} s; starting worker + sink")

        db = run_dir / "processing.db"
        url = f"sqlite:///{db}"
        engine = make_engine(url)
        create_schema(engine)
        settings = ctx.settings.with_(topic_prefix=prefix, database_url=url,
                                      clock=scaled_spec(T0, 1.0),
                                      faust_data_dir=run_dir / "faust")
        timeout_s = max(180.0, count / 50)
        t_start = time.monotonic()
        procs: list[services.Service] = []
        t_first = t_done = None
        tail_s, idle = 0.0, False
        reports = tasks = wanted = 0
        cpu_first: dict[str, float] = {}
        cpu_used: dict[str, float] = {}
        try:
            workers = [("worker" if n == 0 else f"worker{n + 1}", ["worker"])
                       for n in range(worker_count())]
            for name, args in (*workers, ("sink", ["sink", "--loglevel", "warning"])):
                procs.append(services.start(name, args, settings, run_dir))
                if procs[-1].proc is not None:
                    spy(name, procs[-1].proc.pid, min(timeout_s, 120))
            last_said = time.monotonic()
            while time.monotonic() - t_start < timeout_s:
                for p in procs:
                    p.check()
                reports, tasks, wanted = _counts(engine)
                if time.monotonic() - last_said >= 15:
                    last_said = time.monotonic()
                    per_s = reports / (last_said - t_first) if t_first else 0.0
                    say(ctx.echo, f"processing: {reports:,}/{count:,} reports in the database, "
                                  f"{tasks:,} tasks ({per_s:,.0f} reports/s)")
                if t_first is None and reports:
                    t_first = time.monotonic()
                    cpu_first = {p.name: tree_cpu_s(p.proc.pid) for p in procs if p.proc}
                if reports >= count and tasks >= wanted:
                    t_done = time.monotonic()
                    # The CPU of the whole work: what is left once the last task has landed
                    # (the deadline agent following the last events, changelog writes) is
                    # counted too, up to when both processes are idle.
                    at_idle, tail_s, idle = _cpu_until_idle(procs)
                    cpu_used = {name: used - cpu_first.get(name, 0.0)
                                for name, used in at_idle.items()}
                    break
                time.sleep(0.25)
        finally:
            stop_spies()
            for p in procs:
                p.stop()
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        changelogs = changelog_records(ctx.settings.kafka_bootstrap,
                                       app_id_for(prefix, pipeline=True))
    startup = (t_first or t_start) - t_start
    if t_done is None:
        elapsed = time.monotonic() - t_start
        return [Figure(
            "processing (reports → cases and tasks in the database)",
            f"{fmt_rate(rate(reports, elapsed - startup), 'reports/s')} (incomplete)",
            fmt_rate(rate(count, base_s), "events/s"), None,
            f"≥ {TARGET_RATE:,} reports/s and ≥ {TARGET_RATIO} of baseline", False,
            f"timed out after {elapsed:.0f} s with {reports:,}/{count:,} reports, "
            f"{tasks:,}/{wanted:,} tasks in the database",
            {"sizes": f"{count:,} reports"})]
    busy = t_done - (t_first or t_start)
    ours, base = rate(count, busy), rate(count, base_s)
    ratio = ours / base
    # CPU per report of each process while it was timed: steadier than the rate on a shared
    # machine (it does not count the time spent waiting for a core), and what to divide a
    # core's second by to see the ceiling of one process.
    per_report = {name: 1000 * used / count for name, used in cpu_used.items()}
    if sum(1 for name in per_report if name.startswith("worker")) > 1:
        per_report["workers"] = sum(ms for name, ms in per_report.items()
                                    if name.startswith("worker"))
    cpu_note = ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_report.items())
    per_table = {name: n / count for name, n in changelogs.items()}
    changelog_note = ", ".join(f"{name} {r:.2f}" for name, r in per_table.items() if r >= 0.005)
    # All the work, the deadline book and the sink's catching up included: a flow that defers
    # work past the last task (a trailing agent) looks faster in `ours` than it is.
    until_idle = rate(count, busy + tail_s)
    return [Figure(
        "processing (reports → cases and tasks in the database)", fmt_rate(ours, "reports/s"),
        f"{fmt_rate(base, 'events/s')} (aiokafka consume + produce)", ratio,
        f"≥ {TARGET_RATE:,} reports/s and ≥ {TARGET_RATIO} of baseline",
        ours >= TARGET_RATE and ratio >= TARGET_RATIO,
        f"{count:,} reports → {tasks:,} tasks in {busy:.1f} s after the first case appeared "
        f"(worker and sink start-up {startup:.1f} s not counted; {t_done - t_start:.1f} s in all); "
        f"baseline {base_s:.1f} s; {fmt_rate(until_idle, 'reports/s')} counted until the "
        f"worker and sink were done; CPU per report: {cpu_note} "
        + (f"(counted until both were idle, {tail_s:.0f} s after the last task landed)" if idle
           else f"(counted up to {tail_s:.0f} s after the last task landed; still busy then)")
        + f"; changelog records per report: {sum(per_table.values()):.2f} ({changelog_note})",
        {"sizes": f"{count:,} reports", "ours_rate": ours, "baseline_rate": base,
         "startup_s": startup, "busy_s": busy, "tasks": tasks, "rate_until_idle": until_idle,
         "changelog_per_report": per_table,
         "cpu_ms_per_report": per_report, "tail_s": tail_s, "idle": idle})]
