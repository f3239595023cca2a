"""Worker restart benchmark (issue 15, "Restart time does not grow with history"): how long a
worker takes from its start until it processes again, and its resident memory, with N cases in
the case processor's table.

The table's changelog is filled straight (synthetic but realistic case states: 11% of the
cases open with a dispatched task, the rest closed after a signed, resolved and verified task,
~1 KB of JSON each, as `gridflow.core.case.decide` makes them), keyed and partitioned as the
worker writes them. Then `gridflow worker --role pipeline` is started as a child process and a
resident's report is put on `<p>.reports`; the time runs from the start of the process until
that report's first case event is on `<p>.case-events`. Resident memory (VmRSS, and its peak
VmHWM) is read from /proc right after.

Runs, for each size: the memory store (every start restores the whole changelog); RocksDB on
a new machine (an empty data directory: the whole changelog, into RocksDB); RocksDB with its
local state (the same data directory again, after a clean stop); and, on a changelog where the
closed cases have been evicted (gridflow.core.eviction: the open cases in `cases`, a stub of
each closed one in `evicted-cases`, as compaction leaves them), the memory store and RocksDB on
a new machine again.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Context, Figure, say, topic_prefix
from gridflow import topics
from infra import services

FULL_SIZES = (100_000, 1_000_000)
OPEN_SHARE = 0.11  # the workbench benchmark's year: 10,946 open tasks of 100,000 cases
TARGET_S = 15.0  # back to processing within 15 s at 1,000,000 cases
RESTART_TIMEOUT_S = 900.0
# Above this many cases the whole-changelog restores (memory store, new machine) are cut off
# at BIG_RESTORE_TIMEOUT_S (they run at ~1,000 records/s here: 1,000,000 would take ~20 min
# each), and the local state of a RocksDB worker is written straight into its data directory,
# as a worker that had restored or built it would have left it (`build_local_state`).
FULL_RESTORE_MAX = 200_000
BIG_RESTORE_TIMEOUT_S = 300.0
T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
PLACEHOLDER = "AJ20260105-TEMPLATE"


# Where a start's time goes, from the worker's log: (label, what the line contains)
PHASES = (
    ("imported", "worker data directory"),
    ("joined", "Joined group"),
    ("restored", "Recovery complete"),
    ("ready", "Worker ready"),
)
_STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def phases(log: Path, started: float) -> dict[str, float]:
    """Seconds from the process start (wall clock `started`) to each phase's first log line."""
    out: dict[str, float] = {}
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        for label, needle in PHASES:
            if label not in out and needle in line:
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out[label] = at - started
    return out


@dataclass
class Restart:
    what: str
    cases: int
    seconds: float | None  # None: not processing within the run's timeout
    timeout_s: float
    rss: int
    peak: int
    changelog_records: int
    phases: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        secs = f"{self.seconds:.1f} s" if self.seconds is not None else "not back"
        where = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items())
        return (f"{self.what:<34} {self.cases:>9,} cases  {secs:>9}  RSS {self.rss / 2**20:,.0f} MiB"
                f" (peak {self.peak / 2**20:,.0f} MiB)  [{where}]")


def templates() -> tuple[str, str, str]:
    """JSON of an open case, a closed case and a closed case's eviction stub, with
    PLACEHOLDER where the case id goes."""
    from gridflow import events as ev
    from gridflow.core.case import decide, new_case
    from gridflow.core.eviction import stub_of
    from gridflow.events import Message, iso

    class Hours:
        def due(self, category_code: str, severity: int, stage: str, start: datetime) -> datetime:
            return start + timedelta(hours={"sign": 2, "resolve": 48, "verify": 24}[stage])

        def add_working_days(self, start: datetime, days: float) -> datetime:
            return start + timedelta(days=days)

    planner = Hours()
    actor = "worker:GW0001@421099101201001"
    photo = {"bucket": "gridflow-incoming", "key": f"reports/r/0-{'a' * 16}.jpg", "size": 48213,
             "sha256": "a" * 64, "content_type": "image/jpeg"}
    file_cmd = Message(
        id="f", type=ev.FILE_REPORT, case_id=PLACEHOLDER, at=iso(T0), actor=actor,
        data={"report": {"report_id": "bench-report-000001", "reporter": actor,
                         "description": "路边垃圾堆积, 请处理", "lat": 30.123456,
                         "lon": 114.654321, "photos": [photo]},
              "category_code": "E0301", "category_name": "暴露垃圾", "severity": 1,
              "grid_code": "421099101201001", "village_code": "421099101201",
              "township_code": "421099101", "departments": ["421099101201.cwh"],
              "routing_reason": "category E0301 → village committee"})
    state = decide(new_case(PLACEHOLDER), file_cmd, planner).state
    open_json = json.dumps(state.to_dict(), ensure_ascii=False)
    tid = next(iter(state.tasks))
    steps = [(ev.SIGN_TASK, "dept:421099101201.cwh", {}),
             (ev.RESOLVE_TASK, "dept:421099101201.cwh", {"note": "已清理", "photos": [photo]}),
             (ev.VERIFY_TASK, actor, {})]
    for n, (type_, who, extra) in enumerate(steps, 1):
        c = Message(id=f"c{n}", type=type_, case_id=PLACEHOLDER,
                    at=iso(T0 + timedelta(hours=n)), actor=who, data={"task_id": tid, **extra})
        state = decide(state, c, planner).state
    assert state.status == "closed"
    closed = state.to_dict()
    return open_json, json.dumps(closed, ensure_ascii=False), json.dumps(stub_of(closed))


def case_ids(count: int) -> list[str]:
    from gridflow.core.intake import case_id_for

    step = timedelta(days=365) / max(count, 1)
    return [case_id_for(f"bench-{i:07d}", T0 + i * step) for i in range(count)]


def changelog(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def create_changelogs(bootstrap: str, app_id: str) -> None:
    """The changelog topics faust would make: compacted, one partition per case partition."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    try:
        admin.create_topics([
            NewTopic(changelog(app_id, t), topics.CASE_PARTITIONS, 1,
                     topic_configs={"cleanup.policy": "compact"})
            for t in ("cases", "evicted-cases")], timeout_ms=60000)
    finally:
        admin.close()


def fill(bootstrap: str, app_id: str, count: int, evicted: bool) -> int:
    """Put `count` cases on the changelogs, each in the partition of its case id (as the case
    agent writes it); with `evicted`, the closed ones as stubs in evicted-cases. Returns the
    number of records written. (aiokafka's batch API: ~10x kafka-python's rate here.)"""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from kafka.partitioner.default import murmur2

    open_json, closed_json, stub_json = templates()
    cases_topic, stubs_topic = changelog(app_id, "cases"), changelog(app_id, "evicted-cases")
    every_open = max(1, round(1 / OPEN_SHARE))

    def records() -> Any:
        for i, case_id in enumerate(case_ids(count)):
            partition = (murmur2(case_id.encode()) & 0x7FFFFFFF) % topics.CASE_PARTITIONS
            key = json.dumps(case_id).encode()
            if i % every_open == 0:
                yield cases_topic, partition, key, open_json.replace(PLACEHOLDER, case_id)
            elif evicted:
                yield stubs_topic, partition, key, stub_json.replace(PLACEHOLDER, case_id)
            else:
                yield cases_topic, partition, key, closed_json.replace(PLACEHOLDER, case_id)

    async def produce() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1,
                                    max_batch_size=1 << 20, linger_ms=50)
        await producer.start()
        batches: dict[tuple[str, int], Any] = {}
        pending: list[Any] = []
        written = 0
        try:
            for topic, partition, key, value in records():
                batch = batches.get((topic, partition))
                if batch is None:
                    batch = batches[(topic, partition)] = producer.create_batch()
                if batch.append(key=key, value=value.encode(), timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[(topic, partition)] = producer.create_batch()
                    batch.append(key=key, value=value.encode(), timestamp=None)
                written += 1
                if len(pending) > 64:
                    await asyncio.gather(*pending)
                    pending = []
            for (topic, partition), batch in batches.items():
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return written

    return asyncio.run(produce())


def build_local_state(bootstrap: str, app_id: str, data_dir: Path) -> None:
    """Write what a RocksDB worker keeps of the changelogs into `data_dir` (its first slot):
    every record of the `cases` and `evicted-cases` changelogs in the partition's database,
    with the changelog offset it holds (processors.tablestore)."""
    from faust.stores.rocksdb import RocksDBOptions, Store
    from kafka import KafkaConsumer, TopicPartition

    from processors.tablestore import ROCKSDB_OPTIONS

    tables = data_dir / app_id / "w0" / "v1" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    options = RocksDBOptions(**dict[str, Any](ROCKSDB_OPTIONS))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    try:
        for table in ("cases", "evicted-cases"):
            for p in range(topics.CASE_PARTITIONS):
                tp = TopicPartition(changelog(app_id, table), p)
                end = consumer.end_offsets([tp])[tp]
                db = options.open(tables / f"{table}-{p}.db")
                if end:
                    consumer.assign([tp])
                    consumer.seek_to_beginning(tp)
                    last = -1
                    while last < end - 1:
                        for records in consumer.poll(timeout_ms=1000).values():
                            batch = faust_rocksdict().WriteBatch(raw_mode=True)
                            for r in records:
                                batch.put(r.key, r.value)
                                last = r.offset
                            db.write(batch)
                    db.put(Store.offset_key, str(last).encode())
                db.close()
    finally:
        consumer.close()


def faust_rocksdict() -> Any:
    import rocksdict

    return rocksdict


def _proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class EventWatch:
    """Case events from now on: which reports have reached `<p>.case-events`."""

    def __init__(self, settings: Any) -> None:
        from kafka import KafkaConsumer, TopicPartition

        events = topics.CASE_EVENTS.name(settings.topic_prefix)
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                      enable_auto_commit=False, consumer_timeout_ms=200)
        tps = [TopicPartition(events, p) for p in range(topics.CASE_PARTITIONS)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.seen: set[str] = set()

    def wait(self, wanted: set[str], timeout_s: float, check: Any = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check is not None:
                check()
            for record in self.consumer:
                self.seen.add(json.loads(record.value).get("case_id", ""))
            if wanted <= self.seen:
                return True
        return False

    def close(self) -> None:
        self.consumer.close()


def put_reports(ctx: Context, settings: Any, numbers: range) -> set[str]:
    """Residents' reports on `<p>.reports`; the case ids they will be filed under."""
    from kafka import KafkaProducer

    from bench.load import County
    from gridflow.core.intake import case_id_for
    from gridflow.events import decode_message

    county, wanted = County(), set()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for n in numbers:
            at = datetime.now(UTC)
            report_id = f"{ctx.run_id}-{n:07d}"
            key, value = county.keyed_report(n, ctx.run_id, at)
            producer.send(topics.REPORTS.name(settings.topic_prefix), key=key.encode(),
                          value=value).get(timeout=60)
            wanted.add(decode_message(value).case_id or case_id_for(report_id, at))
    finally:
        producer.close()
    return wanted


def start_worker(settings: Any, run_dir: Path, name: str) -> services.Service:
    return services.start(name, ["worker", "--role", "pipeline", "--loglevel", "info"],
                          settings, run_dir)


def restart(ctx: Context, settings: Any, run_dir: Path, name: str, n: int, what: str,
            cases: int, records: int, timeout_s: float = RESTART_TIMEOUT_S) -> Restart:
    """Start a worker; time until a report put on the topic at its start has its first case
    event; read its memory; stop it cleanly."""
    watch = EventWatch(settings)
    t0, wall0 = time.monotonic(), time.time()
    worker = start_worker(settings, run_dir, name)
    wanted = put_reports(ctx, settings, range(n, n + 1))
    seconds = None
    rss = peak = 0
    try:
        if watch.wait(wanted, timeout_s, worker.check):
            seconds = time.monotonic() - t0
        assert worker.proc is not None
        rss, peak = _proc_kib(worker.proc.pid, "VmRSS"), _proc_kib(worker.proc.pid, "VmHWM")
    finally:
        watch.close()
        worker.stop(timeout_s=60)
    result = Restart(what, cases, seconds, timeout_s, rss, peak, records,
                     phases(run_dir / f"{name}.log", wall0))
    say(ctx.echo, f"restart: {result.line()}")
    return result


@dataclass
class Recovery:
    what: str
    seconds: float | None

    def line(self) -> str:
        secs = f"{self.seconds:.1f} s" if self.seconds is not None else "not within the wait"
        return f"{self.what}: {secs}"


def recovery(ctx: Context, run_dir: Path, kills: int = 3, dynamic: bool = True,
             ) -> list[Recovery]:
    """Issue 15, "Back to work fast after a crash": a worker killed with SIGKILL and restarted
    at once (static membership, the default; then dynamic, for comparison), timed from the kill
    until a report put on the topic right after it has its first case event; and one of two
    workers stopped cleanly (SIGTERM), timed until reports on every partition are processed by
    the other."""
    import signal

    out: list[Recovery] = []
    n = 1_000_000
    with topic_prefix(ctx.settings, ctx.unique("rec")) as prefix:
        for membership in ("", "dynamic") if dynamic else ("",):
            settings = ctx.settings.with_(topic_prefix=prefix, worker_instance_id=membership,
                                          faust_data_dir=run_dir / f"rec{membership or 'static'}")
            label = "static membership" if not membership else "dynamic membership"
            watch = EventWatch(settings)
            worker = start_worker(settings, run_dir, f"rec-{label.split()[0]}")
            try:
                n += 1
                if not watch.wait(put_reports(ctx, settings, range(n, n + 1)), 300, worker.check):
                    raise RuntimeError("the worker did not start processing")
                for k in range(kills if not membership else 1):
                    time.sleep(3.0)  # a worker at work, its offsets committed
                    t0 = time.monotonic()
                    worker.kill()
                    worker = start_worker(settings, run_dir, f"rec-{label.split()[0]}-{k}")
                    n += 1
                    ok = watch.wait(put_reports(ctx, settings, range(n, n + 1)), 300,
                                    worker.check)
                    out.append(Recovery(f"SIGKILL, restarted at once, {label} (session "
                                        f"timeout {settings.worker_session_timeout_s:.0f} s)",
                                        time.monotonic() - t0 if ok else None))
                    say(ctx.echo, f"restart: {out[-1].line()}")
            finally:
                watch.close()
                worker.stop(timeout_s=60)
        # two workers (static, their own data directories); the first stopped cleanly
        settings = ctx.settings.with_(topic_prefix=prefix, faust_data_dir=run_dir / "rec-two")
        watch = EventWatch(settings)
        first = start_worker(settings, run_dir, "rec-first")
        second = start_worker(settings, run_dir, "rec-second")
        try:
            n += 1
            def both() -> None:
                first.check()
                second.check()

            if not watch.wait(put_reports(ctx, settings, range(n, n + 12)), 300, both):
                raise RuntimeError("the two workers did not start processing")
            n += 12
            time.sleep(5.0)
            assert first.proc is not None
            t0 = time.monotonic()
            os.killpg(first.proc.pid, signal.SIGTERM)
            ok = watch.wait(put_reports(ctx, settings, range(n, n + 12)), 300, second.check)
            out.append(Recovery("one of two workers stopped cleanly (SIGTERM): 12 reports "
                                "on every partition processed by the other",
                                time.monotonic() - t0 if ok else None))
            say(ctx.echo, f"restart: {out[-1].line()}")
        finally:
            watch.close()
            first.stop(timeout_s=60)
            second.stop(timeout_s=60)
    return out


def run(ctx: Context) -> list[Figure]:
    sizes = [ctx.n(s, 200) for s in FULL_SIZES]
    if os.environ.get("GRIDFLOW_BENCH_RESTART_SIZES"):  # e.g. "1000000": those sizes only
        sizes = [int(v) for v in os.environ["GRIDFLOW_BENCH_RESTART_SIZES"].split(",")]
    if ctx.quick:  # the smoke run: the smallest size, one kill, no 60 s dynamic wait
        sizes = sizes[:1]
    run_dir = ctx.work_dir / "restart"
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[Restart] = []
    k = 0
    for size in sizes:
        for evicted in (False, True):
            tag = f"rs{size}{'e' if evicted else ''}"
            with topic_prefix(ctx.settings, ctx.unique(tag)) as prefix:
                app_id = f"{prefix}-processor"
                create_changelogs(ctx.settings.kafka_bootstrap, app_id)
                t = time.monotonic()
                records = fill(ctx.settings.kafka_bootstrap, app_id, size, evicted)
                say(ctx.echo, f"restart: {records:,} case records on the changelogs of {app_id} "
                              f"in {time.monotonic() - t:.1f} s"
                              f"{' (closed cases as eviction stubs)' if evicted else ''}")
                base = ctx.settings.with_(topic_prefix=prefix, closed_case_evict_days=30.0)
                kept = "closed cases evicted: " if evicted else ""
                big = size > FULL_RESTORE_MAX
                # (store, data directory, what, local state written beforehand)
                runs = [("memory", run_dir / f"{tag}-mem", f"{kept}memory store", False)]
                if not big:  # a new machine restores as the memory store does (see the doc)
                    runs.append(("rocksdb", run_dir / f"{tag}-rdb",
                                 f"{kept}RocksDB, new machine", False))
                if not evicted or big:
                    runs.append(("rocksdb", run_dir / f"{tag}-rdb",
                                 f"{kept}RocksDB, local state", big))
                if big and evicted:
                    runs = runs[1:]  # the memory store's restore: measured on the full changelog
                for store, data_dir, what, prebuild in runs:
                    k += 1
                    settings = base.with_(worker_store=store, faust_data_dir=data_dir)
                    if prebuild:
                        t = time.monotonic()
                        build_local_state(ctx.settings.kafka_bootstrap, app_id, data_dir)
                        say(ctx.echo, f"restart: local state written in "
                                      f"{time.monotonic() - t:.1f} s")
                    results.append(restart(
                        ctx, settings, run_dir, f"worker-{tag}-{k}", k, what, size, records,
                        timeout_s=BIG_RESTORE_TIMEOUT_S if big and not prebuild
                        else RESTART_TIMEOUT_S))
    recovered = recovery(ctx, run_dir, kills=1 if ctx.quick else 3, dynamic=not ctx.quick)
    return figures(results, sizes) + [
        Figure(f"recovery: {r.what}", f"{r.seconds:.1f} s" if r.seconds is not None
               else "not processing within 300 s",
               target="processing again within 10 s" if "SIGKILL" in r.what else "at once",
               met=(r.seconds is not None and r.seconds <= 10.0) if "static" in r.what
               else None, raw={"seconds": r.seconds, "what": r.what})
        for r in recovered]


def figures(results: list[Restart], sizes: list[int]) -> list[Figure]:
    out: list[Figure] = []
    largest = max(sizes)
    for r in results:
        target, met = f"processing within {TARGET_S:.0f} s at 1,000,000 cases", None
        if r.cases == largest and largest >= 1_000_000:
            met = r.seconds is not None and r.seconds <= TARGET_S
        secs = f"{r.seconds:.1f} s" if r.seconds is not None else \
            f"not processing within {r.timeout_s:.0f} s"
        out.append(Figure(
            f"restart, {r.cases:,} cases: {r.what}",
            f"{secs}; RSS {r.rss / 2**20:,.0f} MiB (peak {r.peak / 2**20:,.0f} MiB)",
            target=target, met=met,
            note=f"{r.changelog_records:,} records on the changelogs",
            raw={"seconds": r.seconds, "rss": r.rss, "peak": r.peak, "cases": r.cases,
                 "what": r.what, "phases": r.phases}))
    return out
