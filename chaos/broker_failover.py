"""Scenario broker-failover: the leader of the case-event partitions killed with SIGKILL in a
three-broker Kafka cluster, mid-stream, and restarted after a pause.

The run uses a three-node KRaft cluster on loopback (`gridflow up --brokers 3`): the one the
settings describe (GRIDFLOW_KAFKA_BROKERS=3, or a state dir whose `up --brokers 3` recorded
it), or, when the settings describe a single node, one of its own in `<state dir>/broker-
failover` on its own ports (the bootstrap port + 100 up), started for the run and stopped
afterwards; the single node is never touched. Its topics have three replicas and
min.insync.replicas 2, every producer writes with acks=all.

Grid workers' phones upload reports with a real photo through the API and residents file
complaints through Open311, both retrying after a 503 as the app does; the worker files and
dispatches, the SQL sink keeps the read models, the notifier tells the departments (a webhook
receiver counts every notice), the simulated clock runs fast enough for sign-for deadlines
to warn and breach within the run. Mid-stream the broker leading most case-events partitions
is killed with SIGKILL; after a pause it is started again. Then the run waits until the
pipeline has caught up (metrics) and the restarted broker is back in every partition's ISR,
and counts: acknowledged vs kept, duplicated rows and notices, deadlines fired twice or
never, dead letters, `gridflow audit verify`, the recovery time and what the API answered
while the broker was down (with two of three brokers alive it should go on answering 202).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from chaos.common import (
    Accounting,
    Echo,
    Load,
    Phones,
    Procs,
    new_place,
    phone_tokens,
    read_models,
    topic_copies,
    wait_caught_up,
    wait_healthy,
)
from chaos.kill_sink_notify import account_notices, start_pipeline, webhook_config
from chaos.kill_worker import audit_verdict
from chaos.observe import WebhookReceiver
from chaos.scale_out import SIM_START, deadline_accounting
from gridflow import topics
from gridflow.clock import clock_from_spec, scaled_spec
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.settings import Settings
from infra import stack
from infra.kafka import Kafka
from infra.procs import PidRecord

# A cluster of the scenario's own is this far above the settings' Kafka ports.
OWN_PORT_OFFSET = 100


# --- the cluster ----------------------------------------------------------------------------

@dataclass
class Cluster:
    settings: Settings  # with the cluster's bootstrap (every node)
    started: list[str]  # nodes this run started (stopped at the end)

    def node(self, broker_id: int) -> Kafka:
        return Kafka(self.settings, broker_id)

    def pid(self, broker_id: int) -> int | None:
        record = PidRecord.read(self.node(broker_id).pid_path)
        return record.pid if record is not None and record.alive() else None

    def stop_started(self, echo: Echo) -> None:
        """Stop the cluster when this run started it (a cluster found running is left so)."""
        if len(self.started) == self.settings.kafka_brokers:
            stack.down(self.settings, ["kafka"], echo=lambda m: echo(f"    {m}"))


def cluster_settings(settings: Settings) -> Settings:
    """The settings of the three-broker cluster the run uses: the settings' own when they
    describe one, else a cluster of the run's own (own state dir, own ports)."""
    shaped = stack.kafka_shape(settings)
    if shaped.kafka_brokers >= 3:
        return shaped
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    return settings.with_(
        state_dir=settings.state_dir / "broker-failover", kafka_brokers=1,
        kafka_bootstrap=f"{host}:{int(port) + OWN_PORT_OFFSET}",
        kafka_controller_port=settings.kafka_controller_port + OWN_PORT_OFFSET,
    ).with_brokers(3)


def start_cluster(settings: Settings, echo: Echo) -> Cluster:
    s = cluster_settings(settings)
    echo(f"  three-broker cluster at {s.kafka_bootstrap} (state {s.state_dir})")
    started = stack.up(s, ["kafka"], echo=lambda m: echo(f"    {m}"), brokers=s.kafka_brokers)
    return Cluster(s, started)


def partition_leaders(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int]]]:
    """partition -> (leader broker id, in-sync replicas)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        [described] = admin.describe_topics([topic])
        return {p["partition_index"]: (p["leader_id"], sorted(p["isr_nodes"]))
                for p in described["partitions"]}
    finally:
        admin.close()


def under_replicated(bootstrap: str, prefix: str, replicas: int) -> int:
    """Partitions of the run's catalogue topics with fewer than `replicas` in sync."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        names = [spec.name(prefix) for spec in topics.CATALOGUE]
        return sum(1 for d in admin.describe_topics(names) for p in d["partitions"]
                   if len(p["isr_nodes"]) < replicas)
    finally:
        admin.close()


# --- residents ------------------------------------------------------------------------------

@dataclass
class Complaint:
    report_id: str
    statuses: list[tuple[int, float]] = field(default_factory=list)  # (status, when answered)
    acknowledged: bool = False
    refused: str = ""


class Residents(Load):
    """Residents filing complaints through Open311 at a steady rate, each with its own
    Idempotency-Key, retrying after a 503 (or no answer) until it is taken (201)."""

    def __init__(self, api_url: str, ref: ReferenceData, rate: float, run: str,
                 clock: Callable[[], datetime], give_up_s: float = 400.0) -> None:
        self.api_url, self.ref, self.rate, self.run = api_url, ref, rate, run
        self.clock = clock
        self.give_up_s = give_up_s
        self.complaints: list[Complaint] = []
        super().__init__("residents", 16, httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)))
        grids = sorted(ref.grids.values(), key=lambda g: g.code)
        self.places = [g.bbox for g in grids]
        self.services = sorted(ref.services)

    def acknowledged(self) -> set[str]:
        with self.lock:
            return {c.report_id for c in self.complaints if c.acknowledged}

    def answered_between(self, t0: float, t1: float) -> Counter[int]:
        with self.lock:
            return Counter(s for c in self.complaints for s, at in c.statuses if t0 <= at <= t1)

    def _generate(self) -> None:
        from producers.open311 import resident_request

        i = 0
        while not self.stop_new.is_set():
            box = self.places[i % len(self.places)]
            lat = box.min_lat + (box.max_lat - box.min_lat) * ((i * 37 % 100) / 100)
            lon = box.min_lon + (box.max_lon - box.min_lon) * ((i * 61 % 100) / 100)
            form = {"service_code": self.services[i % len(self.services)],
                    "lat": f"{lat:.6f}", "long": f"{lon:.6f}",
                    "description": f"居民诉求（故障注入测试）{i}",
                    "device_id": f"{self.run}-dev{i % 7}"}
            key = f"{self.run}-{i:06d}"
            report_id = resident_request(form, self.ref, self.clock(), key).report_id
            complaint = Complaint(report_id)
            with self.lock:
                self.complaints.append(complaint)
            self.futures.append(self.pool.submit(self._send, complaint, form, key))
            i += 1
            self.stop_new.wait(1.0 / self.rate)

    def _send(self, complaint: Complaint, form: dict[str, str], key: str) -> None:
        start = time.monotonic()
        while time.monotonic() - start < self.give_up_s:
            try:
                r = self.http.post(f"{self.api_url}/open311/v2/requests.json", data=form,
                                   headers={"Idempotency-Key": key})
                status, retry_after = r.status_code, r.headers.get("Retry-After")
            except httpx.HTTPError:
                status, retry_after = 0, None
            complaint.statuses.append((status, time.monotonic()))
            if status in (200, 201):
                complaint.acknowledged = True
                return
            if status in (503, 409, 0):
                time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else 2.0)
                continue
            complaint.refused = f"{status}: {r.text[:200]}"
            return


# --- the run --------------------------------------------------------------------------------

def run(settings: Settings, log_dir: Path, *, rate: float = 4.0, complaint_rate: float = 1.0,
        warmup_s: float = 20.0, down_s: float = 30.0, after_s: float = 20.0,
        speed: float = 600.0, wait_deadlines: bool = True, seed: int = 1,
        audit: bool = True, echo: Echo = print) -> Accounting:
    """One kill of the case-events leader: `warmup_s` of traffic, SIGKILL, `down_s` with the
    broker down, restart, `after_s` more traffic, then the accounting."""
    t0 = time.monotonic()
    cluster = start_cluster(settings, echo)
    acc = Accounting("broker-failover", f"the case-events leader of 3 brokers killed "
                     f"(SIGKILL) for {down_s:.0f} s at {rate:g} reports/s and {complaint_rate:g} "
                     "complaints/s", "")
    place = None
    procs = Procs(log_dir)
    phones: Phones | None = None
    residents: Residents | None = None
    try:
        place = new_place(cluster.settings, log_dir, "chaos-brk")
        spec = scaled_spec(SIM_START, speed)
        clock = clock_from_spec(spec)
        s = place.settings.with_(worker_session_timeout_s=6.0, clock=spec)
        acc.prefix = s.topic_prefix
        ref = load_reference_data(s.refdata_dir)
        with WebhookReceiver() as hooks:
            start_pipeline(procs, s, webhook_config(log_dir / "notify.json", hooks.url, ref))
            procs.start("api", ["api", "--workers", "1"], s)
            wait_healthy(s.api_url, procs)
            phones = Phones(s.api_url, phone_tokens(s, ref, 12, "chaos-brk"), ref, rate, seed,
                            clock=clock)
            residents = Residents(s.api_url, ref, complaint_rate, "brk" + uuid.uuid4().hex[:6],
                                  clock)
            phones.start()
            residents.start()
            time.sleep(warmup_s)
            procs.check()

            events_topic = topics.CASE_EVENTS.name(s.topic_prefix)
            leaders = partition_leaders(s.kafka_bootstrap, events_topic)
            led = Counter(leader for leader, _ in leaders.values())
            victim = max(sorted(led), key=lambda b: led[b])
            pid = cluster.pid(victim)
            if pid is None:
                raise RuntimeError(f"broker {victim} leads case-events but is not running")
            before = read_models(s.database_url).reports
            echo("  case-events leaders: " + ", ".join(
                f"p{p}→{leader}" for p, (leader, _) in sorted(leaders.items()))
                + f"; killing broker {victim} (pid {pid}, SIGKILL) with "
                f"{len(phones.acknowledged()) + len(residents.acknowledged())} reports "
                "acknowledged so far")
            down_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            time.sleep(3.0)
            moved = _wait_leaders_moved(s.kafka_bootstrap, events_topic, victim, down_at, echo)
            time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
            procs.check()
            during_rows = len(read_models(s.database_url).reports - before)
            echo(f"  restarting broker {victim} after {time.monotonic() - down_at:.0f} s; "
                 f"meanwhile {during_rows} reports reached the read models")
            restart_at = time.monotonic()
            stack.up(cluster.settings, [f"kafka-{victim}"], echo=lambda m: echo(f"    {m}"))
            up_at = time.monotonic()
            phone_answers = phones.answered_between(down_at, restart_at)
            resident_answers = residents.answered_between(down_at, restart_at)
            time.sleep(after_s)
            phones.stop()
            residents.stop()

            echo("  waiting for the retries, the pipeline (metrics) and the ISR to catch up")
            acked_now = lambda: phones.acknowledged() | residents.acknowledged()  # noqa: E731
            seconds, lag, _ = wait_caught_up(
                s, procs, acked_now, up_at, echo, with_notify=True,
                settled=lambda: phones.settled() and residents.settled())
            acc.recovery.append((f"broker {victim} back (down {restart_at - down_at:.0f} s, "
                                 f"restart took {up_at - restart_at:.0f} s)", seconds))
            isr_s = _wait_isr(s, up_at, echo)
            if wait_deadlines:
                _wait_deadlines(s, procs, clock, echo)

            acked = phones.acknowledged() | residents.acknowledged()
            acc.acknowledged = len(acked)
            acc.counts = read_models(s.database_url)
            acc.lost = sorted(acked - acc.counts.reports)
            acc.dead_letters = lag.dead_letters
            account_notices(acc, s.database_url, hooks)
            events, twice, past, missing = deadline_accounting(s.database_url, clock())
            acc.api.append(f"deadlines: {events} warned/breached events, {twice} fired twice; "
                           f"{past} tasks past their sign-for deadline, {len(missing)} of them "
                           "never breached")
            if twice:
                acc.problems.append(f"{twice} deadlines fired twice")
            if missing:
                acc.problems.append(f"{len(missing)} tasks past due never breached, e.g. "
                                    f"{missing[0]}")
            acc.api.append(f"leadership: {moved}; restarted broker back in every ISR "
                           + (f"{isr_s:.1f} s after its restart" if isr_s == isr_s
                              else "NOT within 180 s"))
            if isr_s != isr_s:
                acc.problems.append(f"broker {victim} not back in sync")
            acc.api.append(f"while broker {victim} was down ({restart_at - down_at:.0f} s): "
                           f"{during_rows} reports reached the read models")
            _judge(acc, phones, residents, phone_answers, resident_answers)
            copies = topic_copies(s)
            acc.api.append(f"reports topic: {sum(copies.values())} records of {len(copies)} "
                           f"reports ({sum(1 for n in copies.values() if n > 1)} published twice, "
                           "same event id: an ack the API could not be sure of)")
        if audit:
            acc.audit_clean, acc.audit_lines = audit_verdict(s, echo)
    finally:
        for crowd in (phones, residents):
            if crowd is not None:
                crowd.close()
        procs.stop()
        acc.seconds = time.monotonic() - t0
        if place is not None:
            place.drop()
        cluster.stop_started(echo)
    return acc


def _wait_leaders_moved(bootstrap: str, topic: str, victim: int, since: float,
                        echo: Echo, timeout_s: float = 60.0) -> str:
    """Until no case-events partition is led by the killed broker; says how long it took."""
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        try:
            leaders = partition_leaders(bootstrap, topic)
        except Exception:  # noqa: BLE001 - the cluster is electing; ask again
            leaders = {}
        if leaders and all(leader not in (victim, -1) for leader, _ in leaders.values()):
            took = time.monotonic() - since
            text = (f"case-events leaders elsewhere {took:.1f} s after the kill ("
                    + ", ".join(f"p{p}→{leader}" for p, (leader, _) in sorted(leaders.items()))
                    + ")")
            echo(f"  {text}")
            return text
        time.sleep(0.5)
    return f"case-events partitions still led by broker {victim} after {timeout_s:.0f} s"


def _wait_isr(s: Settings, since: float, echo: Echo, timeout_s: float = 180.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if under_replicated(s.kafka_bootstrap, s.topic_prefix, 3) == 0:
                return time.monotonic() - since
        except Exception:  # noqa: BLE001
            pass
        time.sleep(1.0)
    echo("  the restarted broker is NOT back in every ISR")
    return float("nan")


def _wait_deadlines(s: Settings, procs: Procs, clock: Callable[[], datetime], echo: Echo,
                    timeout_s: float = 240.0) -> None:
    """Until every task's sign-for deadline (plus the slack) has passed on the simulated clock
    and each has its breach, or the timeout (what is missing is counted after)."""
    from chaos.scale_out import _last_due

    echo("  waiting for the sign-for deadlines to fall due and breach")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check()
        _, _, past, missing = deadline_accounting(s.database_url, clock())
        if clock() > _last_due(s) and not missing:
            return
        time.sleep(2.0)


def _judge(acc: Accounting, phones: Phones, residents: Residents,
           phone_answers: Counter[int], resident_answers: Counter[int]) -> None:
    def fmt(c: Counter[int]) -> str:
        return ", ".join(f"{n}× {status or 'no answer'}" for status, n in sorted(c.items())) or "-"

    acc.api.append(f"API while the broker was down: uploads {fmt(phone_answers)}; complaints "
                   f"{fmt(resident_answers)}; 503s {phone_answers[503] + resident_answers[503]}")
    acc.api.append(f"phones: {len(phones.reports)} reports sent, "
                   f"{len(phones.acknowledged())} acknowledged; residents: "
                   f"{len(residents.complaints)} complaints, {len(residents.acknowledged())} "
                   "acknowledged")
    bad = Counter({st: n for st, n in phones.answers().items()
                   if st not in (200, 202, 503, 409, 0)})
    bad.update(st for c in residents.complaints for st, _ in c.statuses
               if st not in (200, 201, 503, 409, 0))
    if bad:
        acc.problems.append(f"answers other than 2xx/503/409: {bad}")
    if n := phones.unavailable_without_retry_after():
        acc.problems.append(f"{n} answers 503 without Retry-After")
    never = [r.report_id for r in phones.reports if not r.acknowledged and not r.refused]
    never += [c.report_id for c in residents.complaints if not c.acknowledged and not c.refused]
    if never:
        acc.problems.append(f"{len(never)} reports never acknowledged, e.g. {never[0]}")
    refused = [r.refused for r in phones.reports if r.refused]
    refused += [c.refused for c in residents.complaints if c.refused]
    if refused:
        acc.problems.append(f"{len(refused)} reports refused, e.g. {refused[0]}")


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Echo) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario broker-failover`: 30 s down at 4 reports/s (--full: 60 s
    down at 6 reports/s after a longer stream, and every deadline awaited)."""
    full = bool(options.get("full"))
    result = run(settings, log_dir, rate=options.get("rate") or (6.0 if full else 4.0),
                 complaint_rate=2.0 if full else 1.0, warmup_s=40.0 if full else 20.0,
                 down_s=60.0 if full else 30.0, after_s=40.0 if full else 15.0,
                 seed=options.get("seed") or 1, echo=echo)
    return result.clean, result.lines()

