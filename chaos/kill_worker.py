"""Scenario: the worker killed with SIGKILL again and again under a steady stream of reports.

Reports go straight onto `<prefix>.reports`, each with a real photo in the incoming bucket
(what the API does before it answers 202), so every report on that topic is one the system
has promised to keep. The worker is killed at
random moments — some in its first second, before its first commit, some mid-stream — and
restarted at once; the SQL sink is killed too, every `sink_every` cycles. Afterwards every
report id on the reports topic must have its row in the read models (filed, merged or
refused): anything else is lost, and the run says which, with its partition and offset.

Meanwhile the departments sign every task the read models show dispatched, as the API would
(stamped with the case's last seq there): a task dispatched just before a kill is one whose
state the crash can lose while its dispatch is already on the log and in the read models.
Every sign must be accepted, none refused because of a crash (docs/ARCHITECTURE.md, item 8).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from minio import Minio
from sqlalchemy import func, select

from demo.images import make_jpeg
from gridflow import events as ev
from gridflow import topics
from gridflow.core.intake import report_key
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.events import Message, derived_id, iso
from gridflow.settings import Settings
from infra import services
from objectstore import make_client
from sinks.models import (
    Case,
    CommandOutcome,
    Report,
    Task,
    create_schema,
    make_engine,
    table_of,
)

# Up-times before a kill: a third in the first seconds (the first commit of a new group, a
# rebalance still under way), the rest anywhere up to `max_up_s`.
EARLY_UP_S = (0.3, 0.8, 1.5, 2.5)


@dataclass
class KillReport:
    prefix: str
    cycles: int
    sink_kills: int
    sent: int = 0
    kept: int = 0
    lost: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, id)
    duplicate_rows: int = 0
    catch_up_s: float = 0.0
    seconds: float = 0.0
    worker_log: str = ""
    audit_clean: bool | None = None  # gridflow audit verify's verdict (None: not run)
    audit_lines: list[str] = field(default_factory=list)
    signs_sent: int = 0
    signs_accepted: int = 0
    signs_refused: list[tuple[str, str]] = field(default_factory=list)  # (task id, code)
    signs_undecided: list[str] = field(default_factory=list)  # task ids
    signer_read_error: str = ""  # the signer's last failure to read the read models
    signer_reads: tuple[int, int] = (0, 0)  # the signer's reads of the read models: answered, failed
    worker_starts: int = 0  # worker processes started (faust's worker service)
    ready_after_s: list[float] = field(default_factory=list)  # each start that got ready

    @property
    def clean(self) -> bool:
        return (not self.lost and self.duplicate_rows == 0 and self.kept == self.sent
                and self.audit_clean is not False and not self.signs_refused
                and not self.signs_undecided and self.signs_accepted == self.signs_sent)

    def lines(self) -> list[str]:
        out = [
            f"kill-worker: {self.cycles} worker kills (SIGKILL), {self.sink_kills} sink kills, "
            f"prefix {self.prefix}, {self.seconds:.0f} s",
            f"  reports acknowledged (on {self.prefix}.reports): {self.sent}",
            f"  reports in the read models:                  {self.kept}",
            f"  lost (acknowledged, absent):                 {len(self.lost)}",
            f"  duplicated report rows:                      {self.duplicate_rows}",
            f"  caught up after the last kill in:            {self.catch_up_s:.1f} s",
        ]
        if self.ready_after_s:
            ready = sorted(self.ready_after_s)
            out.append(f"  workers ready after their start:             median "
                       f"{ready[len(ready) // 2]:.1f} s, longest {ready[-1]:.1f} s "
                       f"({len(ready)} of {self.worker_starts} starts ready before their kill)")
        out += [
            f"  tasks signed by their departments:           {self.signs_sent}",
            f"  signs accepted:                              {self.signs_accepted}",
            f"  signs refused / undecided:                   {len(self.signs_refused)} / "
            f"{len(self.signs_undecided)}",
        ]
        for partition, offset, report_id in self.lost[:20]:
            out.append(f"  LOST {report_id} at reports[{partition}]@{offset}")
        for task_id, code in self.signs_refused[:20]:
            out.append(f"  SIGN REFUSED {task_id}: {code}")
        for task_id in self.signs_undecided[:20]:
            out.append(f"  SIGN UNDECIDED {task_id}")
        if self.signs_sent == 0:
            answered, failed = self.signer_reads
            out.append(f"  signer's reads of the read models: {answered} answered, {failed} failed"
                       + (f" (last: {self.signer_read_error})" if self.signer_read_error else ""))
        return out + verdict_lines(self.audit_clean, self.audit_lines, self.clean)


_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[(\d+)\] \[INFO\] "
                       r"\[\^(?:Worker\]: Starting|---GridflowRecovery\]: Worker ready)",
                       re.MULTILINE)


def readiness(log_text: str) -> tuple[int, list[float]]:
    """From a worker log (faust's lines, several processes one after another): how many worker
    processes started, and for each that got ready, the seconds from faust's worker service
    starting to its recovery's "Worker ready" (it reads every partition from then on)."""
    started: dict[str, datetime] = {}
    ready: list[float] = []
    for match in _LOG_LINE.finditer(log_text):
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        pid = match.group(2)
        if match.group(0).endswith("Starting"):
            started[pid] = at
        elif pid in started:
            ready.append((at - started.pop(pid)).total_seconds())
    return len(started) + len(ready), ready


def sample_report(ref: ReferenceData, index: int, rng: random.Random, run: str,
                  photo: dict[str, object], now: datetime | None = None) -> Message:
    """A grid worker's report inside their own grid, with one photo already in the incoming
    bucket (`photo`: its reference, as the API makes it)."""
    workers = sorted(ref.workers.values(), key=lambda w: w.id)
    w = workers[index % len(workers)]
    box = ref.grids[w.grid_code].bbox
    rid = f"{run}-{index:06d}"
    now_s = iso(now or datetime.now(UTC))
    actor = f"worker:{w.id}@{w.grid_code}"
    return Message(
        id=derived_id("report", rid), type=ev.REPORT_SUBMITTED, case_id="", at=now_s, actor=actor,
        data={"report_id": rid, "source": "grid_worker", "channel": "app", "reporter": actor,
              "category_code": "E0101", "description": "道路积水（故障注入测试）",
              "lat": rng.uniform(box.min_lat, box.max_lat),
              "lon": rng.uniform(box.min_lon, box.max_lon),
              "captured_at": now_s, "worker_grid_code": w.grid_code, "photos": [photo]},
    )


def upload_photo(store: Minio, bucket: str, run: str, index: int) -> dict[str, object]:
    """A small real JPEG in the incoming bucket, as the API stores a worker's photo."""
    data = make_jpeg(96, 72, seed=index, noise=0.3)
    sha = hashlib.sha256(data).hexdigest()
    key = f"reports/{run}-{index:06d}/0-{sha[:16]}.jpg"
    store.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
    return {"bucket": bucket, "key": key, "size": len(data), "sha256": sha,
            "content_type": "image/jpeg", "role": "before"}


class ReportProducer(threading.Thread):
    """Puts reports on the reports topic at a steady rate, each acknowledged (acks=all), each
    with its photo uploaded first (the claim check); report times from `clock`."""

    def __init__(self, settings: Settings, ref: ReferenceData, rate: float, seed: int,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(daemon=True)
        self.settings, self.ref, self.rate = settings, ref, rate
        self.clock = clock
        self.rng = random.Random(seed)
        self.run_id = "chaos" + uuid.uuid4().hex[:6]
        self.sent: list[str] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                 enable_idempotence=True)
        name = topics.REPORTS.name(self.settings.topic_prefix)
        store = make_client(self.settings)
        try:
            i = 0
            while not self.stop_event.is_set():
                photo = upload_photo(store, self.settings.bucket_incoming, self.run_id, i)
                msg = sample_report(self.ref, i, self.rng, self.run_id, photo,
                                    self.clock() if self.clock else None)
                key = report_key(self.ref, msg.data["report_id"], msg.data.get("lat"),
                                 msg.data.get("lon"))  # as the API keys it
                producer.send(name, key=key.encode(), value=msg.encode()).get(timeout=60)
                self.sent.append(msg.data["report_id"])
                i += 1
                self.stop_event.wait(1.0 / self.rate)
        except BaseException as exc:  # reported by the scenario, not lost in a thread
            self.error = exc
        finally:
            producer.close()

    def finish(self, timeout_s: float = 60.0) -> None:
        """Stops putting reports on the topic; raises what made the thread fail, if anything."""
        self.stop_event.set()
        self.join(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"producing reports failed: {self.error!r}")


class Signer(threading.Thread):
    """Signs each task the read models show dispatched, once, as its department would through
    the API: a SignTask on case-commands stamped with the case's last seq in the read models
    (producers.commands.publish_command), acknowledged (acks=all)."""

    def __init__(self, settings: Settings, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.settings, self.every_s = settings, every_s
        self.signed: dict[str, str] = {}  # task id -> command id
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.last_read_error = ""  # why the read models could not be read, last time
        self.reads = [0, 0]  # reads of the read models answered, failed

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                 enable_idempotence=True)
        engine = make_engine(self.settings.database_url)
        name = topics.CASE_COMMANDS.name(self.settings.topic_prefix)
        tasks, cases = table_of(Task).c, table_of(Case).c
        dispatched = (select(tasks.task_id, tasks.case_id, tasks.department, cases.last_seq)
                      .join_from(table_of(Task), table_of(Case), tasks.case_id == cases.case_id)
                      .where(tasks.state == "dispatched"))
        try:
            while not self.stop_event.wait(self.every_s):
                try:
                    with engine.connect() as conn:
                        rows = conn.execute(dispatched).all()
                except Exception as exc:  # noqa: BLE001 - e.g. the sink has not made its tables yet
                    self.last_read_error = repr(exc)
                    self.reads[1] += 1
                    continue
                self.reads[0] += 1
                for task_id, case_id, department, seen in rows:
                    if task_id in self.signed or self.stop_event.is_set():
                        continue
                    msg = Message(id=derived_id("chaos-sign", task_id), type=ev.SIGN_TASK,
                                  case_id=case_id, at=iso(datetime.now(UTC)),
                                  actor=f"dept:{department}",
                                  data={"task_id": task_id, "seen_seq": seen})
                    producer.send(name, key=case_id.encode(), value=msg.encode()).get(timeout=60)
                    self.signed[task_id] = msg.id
        except BaseException as exc:  # reported by the scenario, not lost in a thread
            self.error = exc
        finally:
            producer.close()
            engine.dispose()

    def finish(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        self.join(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"signing tasks failed: {self.error!r}")


def sign_outcomes(database_url: str, signed: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """The outcome of each sign by task id: (accepted, refusal code)."""
    engine = make_engine(database_url)
    try:
        out = table_of(CommandOutcome).c
        wanted = {cid: tid for tid, cid in signed.items()}
        found: dict[str, tuple[bool, str]] = {}
        ids = list(wanted)
        with engine.connect() as conn:
            for i in range(0, len(ids), 500):
                for cid, accepted, code in conn.execute(
                        select(out.command_id, out.accepted, out.code)
                        .where(out.command_id.in_(ids[i:i + 500]))):
                    found[wanted[cid]] = (bool(accepted), code or "")
        return found
    finally:
        engine.dispose()


def reports_topic_records(settings: Settings) -> Iterator[Any]:
    """Every record of the reports topic, from the beginning to the end it had when asked."""
    name = topics.REPORTS.name(settings.topic_prefix)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tps = [TopicPartition(name, p) for p in range(topics.REPORTS.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                yield from records
    finally:
        consumer.close()


def reports_on_topic(settings: Settings) -> dict[str, tuple[int, int]]:
    """Every report id on the reports topic, with its partition and offset."""
    return {topics.report_id_of(r.value, r.key): (r.partition, r.offset)
            for r in reports_topic_records(settings)}


def report_rows(database_url: str) -> tuple[set[str], int]:
    """Report ids in the read models, and how many rows repeat something already there: a
    second case opened by one report, or a second routing task of one department in a case."""
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        reports, cases, tasks = (table_of(m).c for m in (Report, Case, Task))
        with engine.connect() as conn:
            ids = {row[0] for row in conn.execute(select(reports.report_id))}
            repeats = 0
            for cols, where in (((cases.report_id,), cases.report_id.is_not(None)),
                                ((tasks.case_id, tasks.department),
                                 tasks.dispatch_reason == "routing")):
                per = select(func.count().label("n")).where(where).group_by(*cols).subquery()
                repeats += int(conn.execute(
                    select(func.coalesce(func.sum(per.c.n - 1), 0))).scalar_one())
        return ids, repeats
    finally:
        engine.dispose()


def verdict_lines(audit_clean: bool | None, audit_lines: list[str], clean: bool) -> list[str]:
    """The closing lines of a scenario's accounting: the audit's verdict (when it ran), with
    its first differences, and whether anything was lost."""
    out = []
    if audit_clean is not None:
        out.append("  gridflow audit verify:                       "
                   + ("clean" if audit_clean else "DIFFERENCES"))
        if not audit_clean:
            out += ["    " + line for line in audit_lines[:40]]
    out.append("  verdict: " + ("nothing lost / 无丢失" if clean else "LOSS / 有丢失"))
    return out


def audit_verdict(settings: Settings, echo: Callable[[str], None]) -> tuple[bool, list[str]]:
    """`gridflow audit verify` on the scenario's log and database: read models against a fresh
    replay, hash chains, and completeness (every record a group committed past handed on)."""
    from audit import report as audit_report
    from audit.verify import verify

    echo("  running gridflow audit verify")
    result = verify(settings, settings.database_url, prefix=settings.topic_prefix)
    return result.clean, list(audit_report.verify_lines(result))


def _audit(settings: Settings, report: KillReport, echo: Callable[[str], None]) -> None:
    report.audit_clean, report.audit_lines = audit_verdict(settings, echo)


def run(settings: Settings, log_dir: Path, *, cycles: int = 12, rate: float = 10.0,
        max_up_s: float = 12.0, sink_every: int = 3, session_timeout_s: float = 6.0,
        static_membership: bool = True, audit: bool = True, catch_up_timeout_s: float = 240.0,
        seed: int = 1,
        echo: Callable[[str], None] = print) -> KillReport:
    """Run the scenario on a fresh topic prefix and SQLite database; return its accounting.

    `static_membership` (the worker's default) restarts the worker under the same group
    instance id (derived from its data directory), so it takes its partitions straight back
    instead of waiting out the session timeout; False runs it with dynamic membership."""
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_(
        topic_prefix=prefix, database_url=f"sqlite:///{log_dir / (prefix + '.db')}",
        faust_data_dir=log_dir / "faust", worker_session_timeout_s=session_timeout_s,
        worker_instance_id="" if static_membership else "dynamic")
    topics.ensure_topics(settings.kafka_bootstrap, prefix)
    rng = random.Random(seed)
    ref = load_reference_data(settings.refdata_dir)
    report = KillReport(prefix, cycles, 0)
    t0 = time.monotonic()
    worker_args = ["worker", "--loglevel", "info"]  # every agent, the photo archive included

    def start(name: str, args: list[str]) -> services.Service:
        return services.start(name, args, settings, log_dir)

    producer = ReportProducer(settings, ref, rate, seed)
    signer = Signer(settings)
    worker = start("worker", worker_args)
    sink = start("sink", ["sink"])
    producer.start()
    signer.start()
    try:
        for cycle in range(1, cycles + 1):
            up = rng.choice(EARLY_UP_S) if cycle % 3 == 1 else rng.uniform(1.0, max_up_s)
            time.sleep(up)
            worker.kill()
            worker = start("worker", worker_args)
            what = "worker"
            if sink_every and cycle % sink_every == 0:
                sink.kill()
                sink = start("sink", ["sink"])
                report.sink_kills += 1
                what = "worker and sink"
            echo(f"  cycle {cycle}/{cycles}: {what} killed after {up:.1f} s; "
                 f"{len(producer.sent)} reports acknowledged so far")
        producer.finish()
        signer.finish()
        last_kill = time.monotonic()
        on_topic = reports_on_topic(settings)
        report.sent = len(on_topic)
        echo(f"  {report.sent} reports acknowledged; waiting for the read models to catch up")
        deadline = last_kill + catch_up_timeout_s
        while True:
            worker.check()
            sink.check()
            ids, repeats = report_rows(settings.database_url)
            kept = ids & on_topic.keys()
            if len(kept) == report.sent or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        report.signs_sent = len(signer.signed)
        report.signer_read_error = signer.last_read_error
        report.signer_reads = (signer.reads[0], signer.reads[1])  # answered, failed
        while True:  # every sign decided (it went on the topic before the last kill)
            outcomes = sign_outcomes(settings.database_url, signer.signed)
            if len(outcomes) == len(signer.signed) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        report.catch_up_s = time.monotonic() - last_kill
        report.signs_accepted = sum(ok for ok, _ in outcomes.values())
        report.signs_refused = sorted((t, code) for t, (ok, code) in outcomes.items() if not ok)
        report.signs_undecided = sorted(signer.signed.keys() - outcomes.keys())
        report.kept = len(kept)
        report.duplicate_rows = repeats
        report.lost = sorted((*on_topic[rid], rid) for rid in on_topic.keys() - ids)
        if audit:
            _audit(settings, report, echo)
    finally:
        producer.stop_event.set()
        signer.stop_event.set()
        worker.stop()
        sink.stop()
        # The run's topics go with it (its logs and SQLite database stay in log_dir): left
        # behind, every run added a dozen topics that each later broker start had to load.
        # A run whose audit found differences keeps them: they are the evidence (a case's
        # records at every offset, where the read models keep each event's first copy only).
        if report.audit_clean is False:
            echo(f"  the run's topics are kept for inspection, under the prefix {prefix!r}")
        else:
            topics.delete_topics(settings.kafka_bootstrap, prefix)
        report.seconds = time.monotonic() - t0
        report.worker_log = str(worker.log_path)
        with contextlib.suppress(OSError):
            report.worker_starts, report.ready_after_s = readiness(
                worker.log_path.read_text(errors="replace"))
    return report


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Callable[[str], None]) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario kill-worker`."""
    cycles = options.get("cycles") or (50 if options.get("full") else 12)
    result = run(settings, log_dir, cycles=cycles, rate=options.get("rate") or 10.0,
                 session_timeout_s=options.get("session_timeout") or 6.0,
                 static_membership=bool(options.get("static", True)),
                 seed=options.get("seed") or 1, echo=echo)
    return result.clean, result.lines()
