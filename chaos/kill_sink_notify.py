"""Scenario kill-sink-notify: the SQL sink and the notifier killed with SIGKILL under load.

Acknowledged reports (each with a real photo in the incoming bucket) go onto the reports topic
at a steady rate; the worker files them and dispatches a task each, the notifier tells the
department (every department's send method is a webhook: a local receiver counting each POST
by its Idempotency-Key). Meanwhile the sink and the notifier are killed at random moments —
in turn, and now and then both at once — and restarted at once.

What it proves: the sink applies every event once (its rows and offsets commit together), and
the notifier takes every notice in once and delivers it at least once; a notice delivered
again (killed between the webhook's 2xx and recording it) carries the same Idempotency-Key, so
the receiver drops it. The run counts the repeats.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from chaos.common import Accounting, Echo, Procs, new_place, read_models, wait_caught_up
from chaos.kill_worker import ReportProducer, audit_verdict, reports_on_topic
from chaos.observe import WebhookReceiver
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.settings import Settings
from sinks.models import Task, make_engine, table_of
from sinks.notify_models import NOTIFICATIONS, SENT


def run(settings: Settings, log_dir: Path, *, kills: int = 10, rate: float = 8.0,
        max_up_s: float = 8.0, session_timeout_s: float = 6.0, seed: int = 1,
        audit: bool = True, echo: Echo = print) -> Accounting:
    place = new_place(settings, log_dir, "chaos-sn")
    s = place.settings.with_(worker_session_timeout_s=session_timeout_s)
    ref = load_reference_data(s.refdata_dir)
    rng = random.Random(seed)
    acc = Accounting("kill-sink-notify", f"{kills} kills (SIGKILL) of the sink and the "
                     f"notifier at {rate:g} reports/s", s.topic_prefix)
    procs = Procs(log_dir)
    t0 = time.monotonic()
    producer = ReportProducer(s, ref, rate, seed)
    try:
        with WebhookReceiver() as hooks:
            start_pipeline(procs, s, webhook_config(log_dir / "notify.json", hooks.url, ref))
            producer.start()
            killed = {"sink": 0, "notify": 0}
            for k in range(1, kills + 1):
                up = rng.uniform(0.5, max_up_s)
                time.sleep(up)
                procs.check()
                which = ["sink", "notify"] if k % 4 == 0 else [("sink", "notify")[k % 2]]
                for name in which:
                    procs.kill(name)
                    killed[name] += 1
                for name in which:
                    procs.restart(name)
                echo(f"  kill {k}/{kills}: {' and '.join(which)} killed after {up:.1f} s; "
                     f"{len(producer.sent)} reports acknowledged so far")
            producer.finish()
            fault_end = time.monotonic()
            acked = set(reports_on_topic(s))
            acc.acknowledged = len(acked)
            acc.what = (f"{killed['sink']} sink and {killed['notify']} notifier kills (SIGKILL) "
                        f"at {rate:g} reports/s")
            echo(f"  {acc.acknowledged} reports acknowledged; waiting for the pipeline "
                 "(metrics) to catch up")
            seconds, lag, counts = wait_caught_up(s, procs, lambda: acked, fault_end, echo,
                                                  with_notify=True)
            acc.recovery.append(("the last kill", seconds))
            acc.counts = read_models(s.database_url)
            acc.lost = sorted(acked - acc.counts.reports)
            acc.dead_letters = lag.dead_letters
            account_notices(acc, s.database_url, hooks)
        if audit:
            acc.audit_clean, acc.audit_lines = audit_verdict(s, echo)
    finally:
        producer.stop_event.set()
        procs.stop()
        acc.seconds = time.monotonic() - t0
        place.drop()
    return acc


def webhook_config(path: Path, hooks_url: str, ref: ReferenceData) -> Path:
    """A notifier configuration at `path` sending every department's notices to the test
    webhook (`hooks_url`/department code), retrying quickly."""
    path.write_text(json.dumps({
        "retry": {"first_s": 0.5, "max_s": 5},
        "departments": {code: {"method": "webhook", "url": f"{hooks_url}/{code}",
                               "timeout_s": 5} for code in ref.departments},
    }), encoding="utf-8")
    return path


def start_pipeline(procs: Procs, s: Settings, notify_config: Path) -> None:
    """The worker, the sink and the notifier (with `notify_config`)."""
    procs.start("worker", ["worker", "--loglevel", "info"], s)
    procs.start("sink", ["sink"], s)
    procs.start("notify", ["notify", "--config", str(notify_config)], s)


def account_notices(acc: Accounting, database_url: str, hooks: WebhookReceiver,
                    settle_s: float = 60.0) -> None:
    """The notifier's promise, checked: every notice the database took in was sent, every one
    recorded as sent reached the webhook (once a key, repeats counted), every task routing
    dispatched has its notice. Figures into acc.notices, broken promises into acc.problems.

    Notices can still be arriving (a scenario whose simulated clock keeps firing deadlines
    takes in new ones every tick), so the check is made once taken in, sent and delivered
    agree, or after `settle_s`: a notice taken in a moment ago is in flight, not lost."""
    give_up = time.monotonic() + settle_s
    while True:
        notices, sent, routed = _notices(database_url)
        per_key = hooks.per_key()
        if (notices == len(sent) and sent == set(per_key)) or time.monotonic() > give_up:
            break
        time.sleep(0.5)
    acc.notices = {"notices": notices, "deliveries": hooks.deliveries,
                   "distinct": len(per_key), "repeats": hooks.repeats,
                   "missing": len(sent - set(per_key))}
    if sent != set(per_key):
        acc.problems.append(f"{len(sent - set(per_key))} notices recorded as sent never "
                            f"reached the webhook; {len(set(per_key) - sent)} delivered "
                            "but not recorded as sent")
    if notices != len(sent):
        acc.problems.append(f"{notices - len(sent)} notices not delivered")
    if notices < routed:
        acc.problems.append(f"{routed} tasks dispatched but {notices} notices")


def _notices(database_url: str) -> tuple[int, set[str], int]:
    """(notices taken in, ids of those sent, tasks dispatched by routing)."""
    engine = make_engine(database_url)
    try:
        c, tasks = NOTIFICATIONS.c, table_of(Task).c
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(NOTIFICATIONS)).scalar_one()
            sent = {r[0] for r in conn.execute(select(c.notice_id).where(c.status == SENT))}
            routed = conn.execute(select(func.count()).where(
                tasks.dispatch_reason == "routing")).scalar_one()
        return int(n), sent, int(routed)
    finally:
        engine.dispose()


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Echo) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario kill-sink-notify` (--full: 40 kills instead of 12)."""
    kills = options.get("cycles") or (40 if options.get("full") else 12)
    result = run(settings, log_dir, kills=kills, rate=options.get("rate") or 8.0,
                 session_timeout_s=options.get("session_timeout") or 6.0,
                 seed=options.get("seed") or 1, echo=echo)
    return result.clean, result.lines()
