"""Audit of a real pipeline run: the stream worker and two live `gridflow sink`s (SQLite and
PostgreSQL) as child processes; a county's week scripted through case-commands with coarse
deadline ticks (photos, signing, a stale warning, breaches up the ladder, an extension, a
rework, a refusal), paused once to capture the live state. Then: replay equals live on both
databases, verify is clean, --until equals the captured state, the what-if under the
recorded policy reproduces the record and a stricter one breaches more, and a case's history
checks its photos in the object store."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import text
from streams import start_worker, wait_consumed

from audit import dbcompare
from audit.verify import verify
from demo.images import make_jpeg
from gridflow import events as ev
from gridflow import topics
from gridflow.clock import scaled_spec
from gridflow.core.sla import REFDATA_DIR
from gridflow.events import Message, iso
from gridflow.settings import Settings
from infra import services
from processors.app import app_id_for
from sinks.models import create_schema, make_engine
from tests.support.tenant import tenant
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
MOMENT = datetime(2026, 11, 17, 4, 0, tzinfo=UTC)  # Tuesday 12:00 in Beijing: the pause
END = datetime(2026, 11, 19, 9, 30, tzinfo=UTC)  # Thursday 17:30 in Beijing
GRID = "421099101201001"
VILLAGE = "421099101201.cwh"
COUNTY = "county.chengguan"
WORKER = f"worker:GW0001@{GRID}"
SUPERVISOR = "supervisor:S0001"
TICK = timedelta(minutes=30)


def bj(day: int, hour: int, minute: int = 0) -> datetime:
    """Day 0 = Monday 2026-11-16, Beijing wall time."""
    return datetime(2026, 11, 16 + day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


@dataclass
class CountyRun:
    settings: Settings
    prefix: str
    sqlite_url: str
    pg_url: str
    captured_url: str  # the live SQLite as it was at MOMENT
    archive_bucket: str
    photo_case: str
    events: list[dict[str, Any]] = field(default_factory=list)


class Driver:
    """Sends commands and ticks as the script says; waits for a step's events to land."""

    def __init__(self, settings: Settings, store: Any, incoming: str) -> None:
        self.prefix = settings.topic_prefix
        self.bootstrap = settings.kafka_bootstrap
        self.group = app_id_for(self.prefix, pipeline=True)  # the worker's consumer group
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        self.tail = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                  enable_auto_commit=False, group_id=None)
        topic = topics.CASE_EVENTS.name(self.prefix)
        self.tail.assign([TopicPartition(topic, p) for p in range(topics.CASE_PARTITIONS)])
        self.tail.seek_to_beginning()
        self.seen: list[dict[str, Any]] = []
        self.store, self.incoming = store, incoming
        self.n = 0
        self.services: list[services.Service] = []

    def command(self, type_: str, case_id: str, at: datetime, actor: str,
                **data: Any) -> Message:
        self.n += 1
        cmd = Message(id=f"cmd-{self.n}-{type_}", type=type_, case_id=case_id, at=iso(at),
                      actor=actor, data=data)
        self.producer.send(topics.CASE_COMMANDS.name(self.prefix), key=case_id.encode(),
                           value=cmd.encode())
        return cmd

    def step(self, commands: list[Message]) -> None:
        """Wait until every command was decided (events or a refusal) and the worker has
        processed every event so far (the deadline processor followed them), so the next
        tick sees their clocks."""
        self.producer.flush(timeout=30)
        ids = {c.id for c in commands}
        self.wait(lambda: ids <= {e.get("causation_id") for e in self.seen}
                  | {e["data"].get("command_id") for e in self.seen})
        wait_consumed(self.bootstrap, self.group, [topics.CASE_EVENTS.name(self.prefix)],
                      check=self.check)

    def tick(self, now: datetime) -> None:
        value = json.dumps({"now": iso(now)}).encode()
        for p in range(topics.CASE_PARTITIONS):
            self.producer.send(topics.DEADLINE_TICKS.name(self.prefix), key=str(p).encode(),
                               value=value, partition=p)

    def ticks(self, start: datetime, until: datetime) -> datetime:
        t = start
        while t <= until:
            self.tick(t)
            t += TICK
        self.producer.flush(timeout=30)
        return t

    def photo(self, report_id: str, seed: int, role: str = "before") -> dict[str, Any]:
        data = make_jpeg(320, 240, seed=seed, gps=(32.2, 110.0),
                         taken_at=datetime(2026, 11, 16, 9, 0))
        sha = hashlib.sha256(data).hexdigest()
        key = f"reports/{report_id}/{seed}-{sha[:16]}.jpg"
        self.store.put_object(self.incoming, key, io.BytesIO(data), len(data),
                              content_type="image/jpeg")
        return {"bucket": self.incoming, "key": key, "size": len(data), "sha256": sha,
                "content_type": "image/jpeg", "role": role}

    def poll(self) -> int:
        got = 0
        for batch in self.tail.poll(timeout_ms=200).values():
            for r in batch:
                self.seen.append(json.loads(r.value))
                got += 1
        return got

    def wait(self, done: Any, timeout_s: float = 60) -> None:
        """Read the tail until `done()`."""
        def polled() -> bool:
            self.poll()
            return bool(done())

        try:
            wait_until("the case events", polled, timeout_s, check=self.check, interval_s=0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; saw {len(self.seen)} events") from None

    def settle(self, urls: list[str], timeout_s: float = 90) -> None:
        """Nothing left in flight: the worker has processed every command, tick and event
        sent so far, and the topics it writes to did not grow meanwhile (so no agent has
        more to send); every live sink has applied all the events, and so has the tail."""
        deadline = time.monotonic() + timeout_s
        commands, ticks, events = (spec.name(self.prefix) for spec in (
            topics.CASE_COMMANDS, topics.DEADLINE_TICKS, topics.CASE_EVENTS))
        while True:
            ends = wait_consumed(self.bootstrap, self.group, [commands, ticks, events],
                                 deadline - time.monotonic(), check=self.check)
            written = {tp: o for tp, o in ends.items() if tp.topic != ticks}
            now = {tp: o for tp, o in self.tail.end_offsets(
                [TopicPartition(t, p) for t in (commands, events)
                 for p in self.tail.partitions_for_topic(t)]).items() if o}
            if now == written:
                break
        logged = {tp.partition: o for tp, o in written.items() if tp.topic == events}
        wait_until("every live sink to apply every event",
                   lambda: all(applied(url, events) == logged for url in urls),
                   deadline - time.monotonic(), check=self.check)
        self.wait(lambda: all(self.tail.position(TopicPartition(events, p)) >= o
                              for p, o in logged.items()), deadline - time.monotonic())

    def check(self) -> None:
        for s in self.services:
            s.check()

    def close(self) -> None:
        self.producer.close()
        self.tail.close()


def applied(url: str, topic: str) -> dict[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT partition, next_offset FROM sink_offsets "
                                     "WHERE topic = :t"), {"t": topic}).all()
        return {int(p): int(o) for p, o in rows}
    except Exception:  # the sink has not created its tables yet
        return {}
    finally:
        engine.dispose()


def play_county(d: Driver, urls: list[str], capture: Any) -> str:
    """The scripted week; returns the case with photos."""
    c = d.command
    files = []
    for case_id, dept, category, photos in (
        ("AJ-A", VILLAGE, "E0301", 0), ("AJ-H", COUNTY, "E0301", 0), ("AJ-F", VILLAGE, "E0301", 2),
        ("AJ-G", VILLAGE, "E0301", 0),
    ):
        report = {"report_id": f"r-{case_id}", "reporter": WORKER,
                  "photos": [d.photo(f"r-{case_id}", i) for i in range(photos)]}
        files.append(c(ev.FILE_REPORT, case_id, T0, WORKER, report=report, category_code=category,
                       severity=1, grid_code=GRID, village_code=GRID[:12],
                       township_code=GRID[:9], departments=[dept]))
    d.step(files)
    t = d.ticks(T0, T0)
    later = []
    for case_id, category, minutes in (("AJ-B", "E0301", 5), ("AJ-C", "E0102", 10),
                                       ("AJ-D", "E0301", 10), ("AJ-E", "E0301", 10)):
        report = {"report_id": f"r-{case_id}", "reporter": WORKER, "photos": []}
        later.append(c(ev.FILE_REPORT, case_id, T0 + timedelta(minutes=minutes), WORKER,
                       report=report, category_code=category, severity=1, grid_code=GRID,
                       village_code=GRID[:12], township_code=GRID[:9], departments=[VILLAGE]))
    d.step(later)
    dept = f"dept:{VILLAGE}"
    at = T0 + timedelta(minutes=20)
    d.step([c(ev.SIGN_TASK, k, at, dept, task_id=f"{k}-T01") for k in ("AJ-C", "AJ-D", "AJ-F",
                                                                         "AJ-G")]
           + [c(ev.SIGN_TASK, "AJ-E", at, "dept:county.huanjing", task_id="AJ-E-T01")])
    t = d.ticks(t, T0 + timedelta(minutes=60))
    d.step([c(ev.NOTE_PROGRESS, "AJ-F", T0 + timedelta(minutes=61), dept, task_id="AJ-F-T01",
              note="已安排人员到场"),
            c(ev.REQUEST_EXTENSION, "AJ-D", T0 + timedelta(minutes=61), dept, task_id="AJ-D-T01",
              days=2, reason="需协调多部门")])
    t = d.ticks(t, T0 + timedelta(minutes=90))
    d.step([c(ev.DECIDE_EXTENSION, "AJ-D", T0 + timedelta(minutes=91), SUPERVISOR,
              task_id="AJ-D-T01", approve=True)])
    # AJ-B: signed after its 80% warning fell due (10:41) but before the next tick (11:00):
    # the live warning goes stale; a perfect clock would have fired it first
    t = d.ticks(t, T0 + timedelta(minutes=100))
    d.step([c(ev.SIGN_TASK, "AJ-B", T0 + timedelta(minutes=106), dept, task_id="AJ-B-T01")])
    t = d.ticks(t, bj(0, 12))
    d.step([c(ev.RESOLVE_TASK, "AJ-F", bj(0, 12, 1), dept, task_id="AJ-F-T01",
              note="垃圾已清运", photos=[d.photo("r-AJ-F", 7, "after")])])
    t = d.ticks(t, bj(0, 15))
    d.step([c(ev.RESOLVE_TASK, "AJ-G", bj(0, 15, 1), dept, task_id="AJ-G-T01",
              note="已处理", photos=[d.photo("r-AJ-G", 8, "after")])])
    t = d.ticks(t, bj(0, 16))
    d.step([c(ev.VERIFY_TASK, "AJ-F", bj(0, 16, 1), WORKER, task_id="AJ-F-T01", note="已整改"),
            c(ev.REJECT_TASK, "AJ-G", bj(0, 16, 1), WORKER, task_id="AJ-G-T01",
              reason="整改不到位")])
    t = d.ticks(t, bj(0, 17))
    d.step([c(ev.RATE_CASE, "AJ-F", bj(0, 17, 1), WORKER, score=5, comment="满意")])
    t = d.ticks(t, bj(1, 10))  # AJ-C's resolve deadline passes at 09:10
    d.step([c(ev.NOTE_PROGRESS, "AJ-C", bj(1, 10, 1), dept, task_id="AJ-C-T01",
              note="正在清运")])
    t = d.ticks(t, MOMENT)
    d.settle(urls)
    capture()
    # --- after the pause ---
    t = d.ticks(t, bj(1, 14, 30))
    d.step([c(ev.RESOLVE_TASK, "AJ-G", bj(1, 14, 31), dept, task_id="AJ-G-T01",
              note="返工完成", photos=[d.photo("r-AJ-G", 9, "after")])])
    t = d.ticks(t, bj(1, 15, 30))
    d.step([c(ev.VERIFY_TASK, "AJ-G", bj(1, 15, 31), WORKER, task_id="AJ-G-T01")])
    t = d.ticks(t, bj(2, 10))
    d.step([c(ev.RESOLVE_TASK, "AJ-C", bj(2, 10, 1), dept, task_id="AJ-C-T01",
              note="已清运完毕", photos=[d.photo("r-AJ-C", 10, "after")])])
    t = d.ticks(t, bj(2, 11))
    d.step([c(ev.VERIFY_TASK, "AJ-C", bj(2, 11, 1), WORKER, task_id="AJ-C-T01")])
    d.ticks(t, END)
    d.settle(urls)
    return "AJ-F"


@pytest.fixture(scope="module")
def county(stack, tmp_path_factory) -> Iterator[CountyRun]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("county")
    with tenant(stack, f"t{uuid.uuid4().hex[:12]}") as own:
        prefix, store, incoming, archive, pg_url = (own.tag, own.s3, own.incoming, own.archive,
                                                    own.database_url)
        sqlite_url = f"sqlite:///{tmp / 'live.db'}"
        captured = tmp / "captured.db"
        settings = own.settings(stack.settings, database_url=sqlite_url,
                                clock=scaled_spec(T0, 0))
        for url in (sqlite_url, pg_url):
            create_schema(make_engine(url))
        procs = [start_worker(settings, tmp / "worker"),
                 services.start("sink-sqlite", ["sink"], settings, tmp),
                 services.start("sink-pg", ["sink", "--database", pg_url], settings, tmp)]
        driver = Driver(settings, store, incoming)
        driver.services = procs

        def capture() -> None:
            with sqlite3.connect(tmp / "live.db") as live, sqlite3.connect(captured) as copy:
                live.backup(copy)

        try:
            photo_case = play_county(driver, [sqlite_url, pg_url], capture)
            events = list(driver.seen)
        finally:
            driver.close()
            for p in procs:
                p.stop()
        yield CountyRun(settings, prefix, sqlite_url, pg_url, f"sqlite:///{captured}", archive,
                        photo_case, events)


def gridflow(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    import os

    from gridflow.settings import settings_env

    env = {**os.environ, **(settings_env(settings) if settings else {})}
    return subprocess.run([sys.executable, "-m", "bootstrap.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def same(a_url: str, b_url: str) -> dbcompare.CompareReport:
    a, b = make_engine(a_url), make_engine(b_url)
    try:
        with a.connect() as x, b.connect() as y:
            return dbcompare.compare(x, y)
    finally:
        a.dispose()
        b.dispose()


def types(run: CountyRun) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in run.events:
        out[e["type"]] = out.get(e["type"], 0) + 1
    return out


# --- the tests ------------------------------------------------------------------------------


def test_the_run_recorded_a_week_of_decisions(county: CountyRun) -> None:
    seen = types(county)
    for t in (ev.CASE_FILED, ev.PHOTO_ARCHIVED, ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED,
              ev.TASK_ESCALATED, ev.EXTENSION_GRANTED, ev.TASK_REOPENED, ev.COMMAND_REFUSED,
              ev.CASE_RATED, ev.CASE_CLOSED):
        assert seen.get(t), (t, seen)
    levels = {e["data"]["level"] for e in county.events if e["type"] == ev.TASK_ESCALATED}
    assert len(levels) >= 2


def test_replay_equals_live_on_sqlite_and_postgres(county: CountyRun, tmp_path, pg_url) -> None:  # type: ignore[no-untyped-def]
    into = f"sqlite:///{tmp_path / 'replay.db'}"
    result = gridflow("replay", "--into", into, "--prefix", county.prefix,
                      settings=county.settings)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "events/s" in result.stdout and "events/s" in result.stderr  # summary, progress
    diff = same(county.sqlite_url, into)
    assert diff.clean, [d.render() for d in diff.diffs]
    result = gridflow("replay", "--into", pg_url, "--prefix", county.prefix,
                      settings=county.settings)
    assert result.returncode == 0, result.stdout + result.stderr
    for live in (county.pg_url, county.sqlite_url):
        diff = same(live, pg_url)
        assert diff.clean, [d.render() for d in diff.diffs]
    counts = {t.table: t.live_rows for t in diff.tables}
    assert counts["cases"] == 8 and counts["case_events"] == len(county.events)


def test_verify_is_clean_on_both_live_databases(county: CountyRun) -> None:
    result = gridflow("audit", "verify", "--database", county.pg_url, "--prefix", county.prefix,
                      settings=county.settings)
    assert result.returncode == 0, result.stdout + result.stderr
    report = verify(county.settings, county.sqlite_url)
    assert report.clean, [d.render() for d in report.tables.diffs] + report.chain.findings
    assert report.chain.cases == 8 and report.chain.events == len(county.events)


def test_until_gives_the_state_captured_at_that_moment(county: CountyRun, tmp_path) -> None:  # type: ignore[no-untyped-def]
    into = f"sqlite:///{tmp_path / 'asof.db'}"
    result = gridflow("replay", "--into", into, "--until", "2026-11-17 12:00",
                      "--prefix", county.prefix, settings=county.settings)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "北京时间" in result.stdout and "2026-11-17T04:00:00Z" in result.stdout
    diff = same(county.captured_url, into)
    assert diff.clean, [d.render() for d in diff.diffs]
    later = same(county.sqlite_url, into)
    assert not later.clean  # the week went on after the pause
    # the same moment written with an offset reads the same
    again = f"sqlite:///{tmp_path / 'asof2.db'}"
    result = gridflow("replay", "--into", again, "--until", "2026-11-17T04:00:00Z",
                      "--prefix", county.prefix, settings=county.settings)
    assert result.returncode == 0 and same(county.captured_url, again).clean


def whatif(county: CountyRun, *args: str) -> tuple[int, dict[str, Any]]:
    result = gridflow("replay", "--prefix", county.prefix, "--json", *args,
                      settings=county.settings)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_whatif_under_the_recorded_policy_reproduces_the_recorded_decisions(
        county: CountyRun) -> None:
    code, out = whatif(county, "--policy", str(REFDATA_DIR / "sla_policy.json"))
    rep = out["reproduction"]
    assert code == 0 and rep["exact"], rep["mismatches"]
    assert rep["identical"] == rep["events"] == len(county.events)
    recorded = [e for e in county.events if e["actor"].startswith("system")
                and e["type"] in (ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED, ev.TASK_ESCALATED)]
    assert rep["deadline_reproduced"] == rep["deadline_recorded"] == len(recorded)
    assert out["recorded"]["escalations"] == out["whatif"]["escalations"]
    assert out["recorded"]["breaches"] == out["whatif"]["breaches"]
    # an assumed bound on the clock's lag is checked the same way (here ticks came in bursts,
    # so the live clock trailed event time without bound: no promise either way)
    code, lagged = whatif(county, "--policy", str(REFDATA_DIR / "sla_policy.json"),
                          "--max-tick-lag", "1800")
    assert lagged["reproduction"]["exact"] == (code == 0)
    # a perfect clock would have warned AJ-B before it was signed: the record did not
    code, ideal = whatif(county, "--policy", str(REFDATA_DIR / "sla_policy.json"),
                         "--ideal-clock")
    assert code == 1 and not ideal["reproduction"]["exact"]


def test_whatif_with_a_stricter_policy_shows_more_breaches(county: CountyRun, tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((REFDATA_DIR / "sla_policy.json").read_text(encoding="utf-8"))
    raw["default"]["sign"] = {"hours": 0.5}
    raw["default"]["resolve"] = {"hours": 4}
    raw["rules"] = []
    raw["escalation"] = str(REFDATA_DIR / "escalation.json")
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    code, out = whatif(county, "--policy", str(strict))
    assert code == 0
    rec, wi = out["recorded"], out["whatif"]
    assert sum(wi["breaches"].values()) > sum(rec["breaches"].values())
    overall = {k: v for k, v in (("rec", rec["indicators"][-1]), ("wi", wi["indicators"][-1]))}
    assert overall["wi"]["overdue"] >= overall["rec"]["overdue"]
    text_out = gridflow("replay", "--prefix", county.prefix, "--policy", str(strict),
                        settings=county.settings).stdout
    assert "按期结案率" in text_out and "升级督办" in text_out and "超时" in text_out


def test_case_history_checks_every_photo_in_the_object_store(county: CountyRun) -> None:
    args = ("audit", "case", county.photo_case, "--database", county.sqlite_url)
    result = gridflow(*args, settings=county.settings)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "立案" in out and "签收" in out and "办结" in out and "回访评价 5 分" in out
    assert "2026-11-16 09:00:00 北京时间" in out and "网格员 GW0001" in out
    assert out.count("✓ 存在且一致") == 3  # two before-photos, one after-photo
    from_log = gridflow("audit", "case", county.photo_case, "--from-log", "--no-photos",
                        "--prefix", county.prefix, settings=county.settings)
    assert from_log.returncode == 0 and "seq 1.." in from_log.stdout
    # one archived photo overwritten, another plainly deleted: both named, and both recorded
    # versions still there (the bucket is versioned: a DELETE only adds a delete marker)
    engine = make_engine(county.sqlite_url)
    with engine.connect() as conn:
        keys = [k for (k,) in conn.execute(text(
            "SELECT archive_key FROM photos WHERE case_id = :c ORDER BY added_at, id"),
            {"c": county.photo_case})]
    engine.dispose()
    from infra.minio import client as minio_client

    store = minio_client(county.settings, timeout_s=30, retries=2)
    forged = b"not the photo"
    store.put_object(county.archive_bucket, keys[0], io.BytesIO(forged), len(forged))
    store.remove_object(county.archive_bucket, keys[-1])
    result = gridflow(*args, settings=county.settings)
    assert result.returncode == 1
    assert "✗ 被覆盖, 记录的版本完好 / overwritten" in result.stdout
    assert "✗ 被加删除标记, 锁定版本完好 / delete_marker" in result.stdout
    assert "缺失" not in result.stdout and "every recorded version intact" in result.stdout
