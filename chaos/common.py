"""What the fault scenarios share: a run's own topics and PostgreSQL database, its processes
with their metrics ports, simulated phones that retry as the app does, and the accounting.

Recovery is decided by reading the processes' metrics (chaos.observe), never by sleeping: a
run has caught up when the worker's group has nothing left on its inputs, the SQL sink has
nothing left and no photo waits for the archive, the notifier (if running) has nothing left
and nothing pending, and every acknowledged report has its row in the read models.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from chaos.observe import Samples, metrics_url, present, scrape, total
from demo import images
from gridflow import topics
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.settings import Settings
from infra import services
from infra.postgres import drop_database
from sinks.models import Case, Photo, Report, Task, create_schema, make_engine, table_of

Echo = Callable[[str], None]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a run's own topics and database ---------------------------------------------------------

@dataclass
class RunPlace:
    settings: Settings  # the run's: own prefix, database, metrics ports, API port
    admin: dict[str, Any]
    database: str

    def drop(self) -> None:

        topics.delete_topics(self.settings.kafka_bootstrap, self.settings.topic_prefix)
        drop_database(self.admin, self.database)


def new_place(settings: Settings, log_dir: Path, tag: str) -> RunPlace:
    """Fresh topics under a prefix of the run's own and a fresh PostgreSQL database (on the
    stack's server), free ports for the API and the metrics servers."""
    import psycopg

    prefix = f"{tag}-{uuid.uuid4().hex[:8]}"
    name = prefix.replace("-", "_")
    admin = dict(host="127.0.0.1", port=settings.postgres_port, user=settings.postgres_user,
                 dbname=settings.postgres_db, autocommit=True, connect_timeout=10)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    url = (f"postgresql+psycopg://{settings.postgres_user}@127.0.0.1:{settings.postgres_port}/"
           f"{name}")
    log_dir.mkdir(parents=True, exist_ok=True)
    run = settings.with_(
        topic_prefix=prefix, database_url=url, faust_data_dir=log_dir / "faust",
        api_port=free_port(), worker_metrics_port=free_port(), sink_metrics_port=free_port(),
        notify_metrics_port=free_port())
    topics.ensure_topics(settings.kafka_bootstrap, prefix, replication=settings.kafka_replication)
    return RunPlace(run, admin, name)


def via_proxy(database_url: str, address: str) -> str:
    """The same PostgreSQL URL, through `address` (host:port)."""
    head, rest = database_url.split("@", 1)
    _, path = rest.split("/", 1)
    return f"{head}@{address}/{path}"


# --- processes and their metrics ---------------------------------------------------------

@dataclass
class Procs:
    """The run's processes (infra.services children), each with its own settings."""

    log_dir: Path
    running: dict[str, services.Service] = field(default_factory=dict)
    args: dict[str, tuple[list[str], Settings]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], settings: Settings) -> services.Service:
        self.args[name] = (args, settings)
        svc = services.start(name, args, settings, self.log_dir)
        self.running[name] = svc
        return svc

    def restart(self, name: str) -> None:
        args, settings = self.args[name]
        self.running[name] = services.start(name, args, settings, self.log_dir)

    def kill(self, name: str) -> None:
        self.running[name].kill()

    def check(self) -> None:
        for svc in self.running.values():
            svc.check()

    def stop(self) -> None:
        for svc in self.running.values():
            svc.stop()


@dataclass
class Lag:
    """One look at the metrics of the worker, the sink and the notifier."""

    worker: float | None = None  # records behind on the worker group's inputs (ticks aside)
    sink: float | None = None
    backlog: float | None = None  # photos not archived yet
    notify: float | None = None
    pending: float | None = None  # notices not delivered yet
    dead_letters: float | None = None

    def done(self, with_notify: bool) -> bool:
        parts = [self.worker, self.sink, self.backlog]
        if with_notify:
            parts += [self.notify, self.pending]
        return all(p == 0 for p in parts)

    def text(self) -> str:
        return (f"worker lag {self.worker}, sink lag {self.sink}, archive backlog {self.backlog}"
                + (f", notifier lag {self.notify}, notices pending {self.pending}"
                   if self.notify is not None else ""))


def read_lag(settings: Settings, group: str, with_notify: bool) -> Lag:
    """The pipeline's lag from the processes' /metrics (None where a number is missing)."""
    lag = Lag()

    def get(port: int) -> Samples | None:
        try:
            return scrape(metrics_url(port), timeout_s=15)
        except httpx.HTTPError:
            return None

    w = get(settings.worker_metrics_port)
    if w is not None and present(w, "gridflow_consumer_lag", consumer=group):
        lag.worker = sum(v for n, lab, v in w if n == "gridflow_consumer_lag"
                         and lab.get("consumer") == group and lab.get("topic") != "deadline-ticks")
    s = get(settings.sink_metrics_port)
    if s is not None:
        if present(s, "gridflow_consumer_lag", consumer="sql-sink"):
            lag.sink = total(s, "gridflow_consumer_lag", consumer="sql-sink")
        if present(s, "gridflow_archive_backlog"):
            lag.backlog = total(s, "gridflow_archive_backlog")
        if present(s, "gridflow_dead_letters"):
            lag.dead_letters = total(s, "gridflow_dead_letters")
    if with_notify:
        n = get(settings.notify_metrics_port)
        if n is not None:
            if present(n, "gridflow_consumer_lag", consumer="notify"):
                lag.notify = total(n, "gridflow_consumer_lag", consumer="notify")
            if present(n, "gridflow_notifications_pending"):
                lag.pending = total(n, "gridflow_notifications_pending")
    return lag


@dataclass
class ReadModelCounts:
    reports: set[str] = field(default_factory=set)
    cases: int = 0
    tasks: int = 0
    photos: int = 0
    archived: int = 0
    duplicate_rows: int = 0


def read_models(database_url: str) -> ReadModelCounts:
    """What the read models hold, and how many rows repeat another (a second case opened by
    one report, a second routing task of one department in a case, one photo twice)."""
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        reports, cases, tasks, photos = (table_of(m).c for m in (Report, Case, Task, Photo))
        out = ReadModelCounts()
        with engine.connect() as conn:
            out.reports = {r[0] for r in conn.execute(select(reports.report_id))}
            out.cases = conn.execute(select(func.count()).select_from(table_of(Case))).scalar_one()
            out.tasks = conn.execute(select(func.count()).select_from(table_of(Task))).scalar_one()
            out.photos = conn.execute(
                select(func.count()).select_from(table_of(Photo))).scalar_one()
            out.archived = conn.execute(select(func.count()).where(
                photos.archive_status == "archived")).scalar_one()
            for cols, where in (((cases.report_id,), cases.report_id.is_not(None)),
                                ((tasks.case_id, tasks.department),
                                 tasks.dispatch_reason == "routing"),
                                ((photos.report_id, photos.sha256), photos.report_id.is_not(None))):
                per = select(func.count().label("n")).where(where).group_by(*cols).subquery()
                out.duplicate_rows += int(conn.execute(
                    select(func.coalesce(func.sum(per.c.n - 1), 0))).scalar_one())
        return out
    finally:
        engine.dispose()


def wait_caught_up(settings: Settings, procs: Procs, acknowledged: Callable[[], set[str]],
                   since: float, echo: Echo, *, with_notify: bool = False,
                   timeout_s: float = 300.0, settled: Callable[[], bool] = lambda: True,
                   ) -> tuple[float, Lag, ReadModelCounts]:
    """Poll the metrics (and the read models for the acknowledged reports) until the run has
    caught up; the seconds from `since` (time.monotonic() at the end of the fault)."""
    group = f"{settings.topic_prefix}-processor"
    deadline = since + timeout_s
    last_say = 0.0
    while True:
        procs.check()
        lag = read_lag(settings, group, with_notify)
        counts = read_models(settings.database_url)
        acked = acknowledged()
        missing = len(acked - counts.reports)
        now = time.monotonic()
        if settled() and lag.done(with_notify) and missing == 0:
            return now - since, lag, counts
        if now > deadline:
            echo(f"  NOT caught up after {timeout_s:.0f} s: {lag.text()}, {missing} acknowledged "
                 "reports not in the read models")
            return float("nan"), lag, counts
        if now - last_say > 10:
            last_say = now
            echo(f"    catching up ({now - since:.0f} s): {lag.text()}, {missing} reports to go")
        time.sleep(0.5)


# --- phones ---------------------------------------------------------------------------------

@dataclass
class Attempt:
    status: int  # 0: no answer (connection refused, timeout)
    seconds: float
    retry_after: str | None
    at: float  # time.monotonic() when answered


@dataclass
class PhoneReport:
    report_id: str
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: bool = False
    refused: str = ""  # a 4xx other than a retryable one: the body


class Load:
    """Requests made on a generator thread (`_generate`, at a steady rate) and sent from a pool
    of threads, each retried until it is answered; stopping ends only the new ones."""

    def __init__(self, name: str, concurrency: int, http: httpx.Client) -> None:
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix=name.rstrip("s"))
        self.futures: list[Any] = []
        self.stop_new = threading.Event()
        self.thread = threading.Thread(target=self._generate, daemon=True, name=name)
        self.http = http

    def _generate(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """No new requests; those under way keep retrying."""
        self.stop_new.set()
        self.thread.join(30)

    def settled(self) -> bool:
        return self.stop_new.is_set() and all(f.done() for f in list(self.futures))

    def close(self) -> None:
        self.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()


class Phones(Load):
    """Grid workers' phones: a new report every 1/rate s (a real JPEG), each sent until the
    API acknowledges it (202, or 200 for a retry); after a 503 the phone waits Retry-After and
    sends the same report (same id, same photo) again, as the app's outbox does."""

    def __init__(self, api_url: str, tokens: dict[str, str], ref: ReferenceData, rate: float,
                 seed: int, give_up_s: float = 400.0, concurrency: int = 48,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.api_url, self.tokens, self.ref, self.rate = api_url, tokens, ref, rate
        self.clock = clock or (lambda: datetime.now(UTC))  # when photos are taken
        self.rng = random.Random(seed)
        self.run_id = "ph" + uuid.uuid4().hex[:6]
        self.give_up_s = give_up_s
        self.reports: list[PhoneReport] = []
        super().__init__("phones", concurrency,
                         httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0),
                                      limits=httpx.Limits(max_connections=concurrency)))

    def acknowledged(self) -> set[str]:
        with self.lock:
            return {r.report_id for r in self.reports if r.acknowledged}

    def _generate(self) -> None:
        workers = sorted(self.tokens)
        i = 0
        while not self.stop_new.is_set():
            w = self.ref.workers[workers[i % len(workers)]]
            box = self.ref.grids[w.grid_code].bbox
            lat = self.rng.uniform(box.min_lat, box.max_lat)
            lon = self.rng.uniform(box.min_lon, box.max_lon)
            report = PhoneReport(f"{self.run_id}-{i:06d}")
            with self.lock:
                self.reports.append(report)
            self.futures.append(self.pool.submit(self._send, report, w.id, lat, lon, i))
            i += 1
            self.stop_new.wait(1.0 / self.rate)

    def _send(self, report: PhoneReport, worker: str, lat: float, lon: float, i: int) -> None:
        captured = (self.clock() - timedelta(minutes=1)).isoformat()
        body = {"report_id": report.report_id, "category_code": "E0101",
                "description": "道路积水（故障注入测试）", "lat": lat, "lon": lon,
                "captured_at": captured}
        photo = images.make_jpeg(160, 120, seed=i, noise=0.3, gps=(lat, lon))
        files = [("report", (None, json.dumps(body, ensure_ascii=False).encode(),
                             "application/json")),
                 ("photos", ("IMG.jpg", photo, "image/jpeg"))]
        headers = {"Authorization": f"Bearer {self.tokens[worker]}"}
        start = time.monotonic()
        while time.monotonic() - start < self.give_up_s:
            t0 = time.monotonic()
            try:
                r = self.http.post(f"{self.api_url}/api/v1/reports", files=files,
                                   headers=headers)
                status, retry_after = r.status_code, r.headers.get("Retry-After")
            except httpx.HTTPError:
                status, retry_after = 0, None
            now = time.monotonic()
            report.attempts.append(Attempt(status, now - t0, retry_after, now))
            if status in (200, 202):
                report.acknowledged = True
                return
            if status in (503, 409, 0):  # unavailable, in progress, no answer: again
                wait = float(retry_after) if retry_after and retry_after.isdigit() else 2.0
                time.sleep(wait)
                continue
            report.refused = f"{status}: {r.text[:200]}"
            return

    # --- what the API answered -----------------------------------------------------------

    def answers(self) -> Counter[int]:
        with self.lock:
            return Counter(a.status for r in self.reports for a in r.attempts)

    def unavailable_without_retry_after(self) -> int:
        with self.lock:
            return sum(1 for r in self.reports for a in r.attempts
                       if a.status == 503 and not (a.retry_after or "").isdigit())

    def slowest_503(self) -> float:
        with self.lock:
            return max((a.seconds for r in self.reports for a in r.attempts if a.status == 503),
                       default=0.0)

    def answered_between(self, t0: float, t1: float) -> Counter[int]:
        with self.lock:
            return Counter(a.status for r in self.reports for a in r.attempts if t0 <= a.at <= t1)


def phone_tokens(settings: Settings, ref: ReferenceData, count: int, tag: str) -> dict[str, str]:
    """Session tokens of `count` grid workers, signed in through the account store (as the
    tests and the simulator do)."""
    from accounts.sample import SampleSessions
    from accounts.store import AccountStore

    engine = make_engine(settings.database_url)
    try:
        from gridflow import durable

        durable.upgrade(engine)
        sessions = SampleSessions(AccountStore(engine, ref), tag)
        workers = sorted(ref.workers)[:count]
        return {w: sessions.token(w) for w in workers}
    finally:
        engine.dispose()


def wait_healthy(url: str, procs: Procs, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check()
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} did not answer in {timeout_s:.0f} s")


# --- the accounting --------------------------------------------------------------------------

@dataclass
class Accounting:
    """What a scenario counts; `clean` when nothing acknowledged was lost or doubled."""

    scenario: str
    what: str
    prefix: str
    acknowledged: int = 0
    counts: ReadModelCounts = field(default_factory=ReadModelCounts)
    lost: list[str] = field(default_factory=list)
    notices: dict[str, int] = field(default_factory=dict)  # deliveries, distinct, repeats, ...
    dead_letters: float | None = None
    recovery: list[tuple[str, float]] = field(default_factory=list)  # (fault, seconds)
    api: list[str] = field(default_factory=list)  # lines about what the API answered
    problems: list[str] = field(default_factory=list)  # anything that breaks a promise
    audit_clean: bool | None = None
    audit_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return self.acknowledged - len(self.lost)

    @property
    def clean(self) -> bool:
        return (not self.lost and self.counts.duplicate_rows == 0 and not self.problems
                and self.audit_clean is not False and not (self.dead_letters or 0)
                and all(s == s for _, s in self.recovery))  # NaN: never caught up

    def lines(self) -> list[str]:
        c = self.counts
        out = [f"{self.scenario}: {self.what}, prefix {self.prefix}, {self.seconds:.0f} s",
               f"  reports acknowledged by the API:             {self.acknowledged}",
               f"  in the read models: reports {len(c.reports)}, cases {c.cases}, "
               f"tasks {c.tasks}, photos {c.photos} ({c.archived} archived)",
               f"  lost (acknowledged, absent):                 {len(self.lost)}",
               f"  duplicated rows:                             {c.duplicate_rows}"]
        if self.notices:
            n = self.notices
            out.append(f"  notifications: {n.get('notices', 0)} notices, {n.get('deliveries', 0)} "
                       f"deliveries to the webhook, {n.get('distinct', 0)} distinct, "
                       f"{n.get('repeats', 0)} repeats (same Idempotency-Key), "
                       f"{n.get('missing', 0)} never delivered")
        out.append(f"  dead letters:                                {self.dead_letters:g}"
                   if self.dead_letters is not None else "  dead letters: (not read)")
        for fault, seconds in self.recovery:
            out.append(f"  recovery after {fault}: caught up in {seconds:.1f} s")
        out += [f"  {line}" for line in self.api]
        for report_id in self.lost[:20]:
            out.append(f"  LOST {report_id}")
        out += [f"  PROBLEM: {p}" for p in self.problems]
        from chaos.kill_worker import verdict_lines

        return out + verdict_lines(self.audit_clean, self.audit_lines, self.clean)


# --- outages under the phones ---------------------------------------------------------------

@dataclass
class Outage:
    what: str
    down_at: float = 0.0
    up_at: float = 0.0


def phones_through_outage(phones: Phones, proxy: Any, what: str, warmup_s: float,
                          outage_s: float, after_s: float, echo: Echo) -> Outage:
    """Phones report for `warmup_s`, then `proxy` goes down for `outage_s` and up again; new
    reports stop `after_s` later (those under way go on retrying)."""
    outage = Outage(what)
    phones.start()
    time.sleep(warmup_s)
    echo(f"  {what}: down for {outage_s:.0f} s ({len(phones.acknowledged())} reports "
         "acknowledged so far)")
    outage.down_at = time.monotonic()
    proxy.down()
    time.sleep(outage_s)
    proxy.up()
    outage.up_at = time.monotonic()
    answered = phones.answered_between(outage.down_at, outage.up_at)
    echo(f"  {what}: up again; the API answered meanwhile: "
         + ", ".join(f"{n}× {status or 'no answer'}" for status, n in sorted(answered.items())))
    time.sleep(after_s)
    phones.stop()
    return outage


def judge_answers(acc: Accounting, phones: Phones, outage: Outage) -> None:
    """What the API answered during and after an outage, into the accounting: every refusal a
    503 with Retry-After, no other failure, every report acknowledged in the end."""
    during = phones.answered_between(outage.down_at, outage.up_at)
    acc.api.append(f"API during {outage.what}: " + ", ".join(
        f"{n}× {status or 'no answer'}" for status, n in sorted(during.items()))
        + f"; slowest 503 {phones.slowest_503():.1f} s")
    tries = [len(r.attempts) for r in phones.reports if r.acknowledged]
    acc.api.append(f"phones' reports: {len(phones.reports)} sent, "
                   f"{sum(1 for r in phones.reports if r.acknowledged)} acknowledged, "
                   f"{sum(1 for t in tries if t > 1)} of them after retries "
                   f"(up to {max(tries, default=0)} tries)")
    bad = {s: n for s, n in phones.answers().items() if s not in (200, 202, 503, 409, 0)}
    if bad:
        acc.problems.append(f"answers other than 202/200/503/409: {bad}")
    if n := phones.unavailable_without_retry_after():
        acc.problems.append(f"{n} answers 503 without Retry-After")
    refused = [r for r in phones.reports if r.refused]
    if refused:
        acc.problems.append(f"{len(refused)} reports refused, e.g. {refused[0].refused}")
    never = [r.report_id for r in phones.reports if not r.acknowledged and not r.refused]
    if never:
        acc.problems.append(f"{len(never)} reports never acknowledged, e.g. {never[0]}")


def topic_copies(settings: Settings) -> Counter[str]:
    """How many records each report id has on the reports topic."""
    from chaos.kill_worker import reports_topic_records

    return Counter(topics.report_id_of(r.value, r.key) for r in reports_topic_records(settings))


# --- the outage scenarios' common frame (kafka-outage, storage-outage) ---------------------------


def outage_place(settings: Settings, log_dir: Path, tag: str) -> tuple[RunPlace, Settings,
                                                                       ReferenceData]:
    """A fault run's own place, its settings (a short session timeout: a restarted worker is
    back within seconds) and the reference data."""
    place = new_place(settings, log_dir, tag)
    s = place.settings.with_(worker_session_timeout_s=6.0)
    return place, s, load_reference_data(s.refdata_dir)


def account_acknowledged(acc: Accounting, settings: Settings, acked: set[str]) -> None:
    """Acknowledged reports against the read models: how many, and which never arrived."""
    acc.acknowledged = len(acked)
    acc.counts = read_models(settings.database_url)
    acc.lost = sorted(acked - acc.counts.reports)


OutageRun = Callable[..., Accounting]


def outage_cli(run: OutageRun, outage_s: float) -> Callable[..., tuple[bool, list[str]]]:
    """The `gridflow chaos --scenario ...` entry of an outage scenario: `outage_s` at 3 reports/s
    (--full: 5 reports/s, a longer stream before the outage; --rate, --seed)."""

    def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
            echo: Echo) -> tuple[bool, list[str]]:
        full = bool(options.get("full"))
        result = run(settings, log_dir, outage_s=outage_s,
                     rate=options.get("rate") or (5.0 if full else 3.0),
                     warmup_s=15.0 if full else 8.0, seed=options.get("seed") or 1, echo=echo)
        return result.clean, result.lines()

    return cli
