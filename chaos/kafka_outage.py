"""Scenario kafka-outage: Kafka unreachable for the API's producer mid-stream (~30 s).

The API publishes through a KafkaProxy (chaos.proxy) that goes down for the outage; the
worker and the sink reach Kafka directly. Simulated phones (chaos.common.Phones) report at a
steady rate, and after a 503 wait Retry-After and send the same report (same id, same photo)
again, as the app's outbox does.

What it proves: while the log cannot acknowledge, the API answers 503 with Retry-After and
keeps nothing half-done (a report is acknowledged only once it is on the log); the retries
land once the log is back; every acknowledged report reaches the read models exactly once (a
report the API could not be sure about is republished under the same event id, and the
pipeline drops the copy).
"""

from __future__ import annotations

import time
from pathlib import Path

from chaos import common
from chaos.kill_worker import audit_verdict
from chaos.proxy import KafkaProxy
from gridflow.settings import Settings


def run(settings: Settings, log_dir: Path, *, outage_s: float = 30.0, rate: float = 3.0,
        warmup_s: float = 8.0, after_s: float = 5.0, seed: int = 1, audit: bool = True,
        echo: common.Echo = print) -> common.Accounting:
    place, s, ref = common.outage_place(settings, log_dir, "chaos-kafka")
    proxy = KafkaProxy.to(s.kafka_bootstrap)
    proxy.up()
    acc = common.Accounting("kafka-outage", f"Kafka unreachable for the API's producer for "
                     f"{outage_s:.0f} s at {rate:g} reports/s", s.topic_prefix)
    procs = common.Procs(log_dir)
    phones: common.Phones | None = None
    t0 = time.monotonic()
    try:
        procs.start("worker", ["worker", "--loglevel", "info"], s)
        procs.start("sink", ["sink"], s)
        procs.start("api", ["api", "--workers", "1"], s.with_(kafka_bootstrap=proxy.address))
        common.wait_healthy(s.api_url, procs)
        tokens = common.phone_tokens(s, ref, 12, "chaos-kafka")
        phones = common.Phones(s.api_url, tokens, ref, rate, seed)
        outage = common.phones_through_outage(phones, proxy, "Kafka (the API's producer)",
                                              warmup_s, outage_s, after_s, echo)
        echo("  waiting for the phones' retries and the pipeline (metrics) to catch up")
        seconds, lag, _ = common.wait_caught_up(s, procs, phones.acknowledged, outage.up_at,
                                                echo, settled=phones.settled)
        acc.recovery.append((f"Kafka back (outage {outage_s:.0f} s)", seconds))
        acked = phones.acknowledged()
        common.account_acknowledged(acc, s, acked)
        acc.dead_letters = lag.dead_letters
        common.judge_answers(acc, phones, outage)
        copies = common.topic_copies(s)
        twice = sum(1 for n in copies.values() if n > 1)
        acc.api.append(f"reports topic: {sum(copies.values())} records of {len(copies)} reports"
                       f" ({twice} published twice: an ack the API could not be sure of, "
                       "republished under the same event id)")
        if set(copies) - acked:
            acc.api.append(f"{len(set(copies) - acked)} reports on the log the API never "
                           "acknowledged (its answer was lost; the retry gets the first answer)")
        if audit:
            acc.audit_clean, acc.audit_lines = audit_verdict(s, echo)
    finally:
        if phones is not None:
            phones.close()
        proxy.down()
        procs.stop()
        acc.seconds = time.monotonic() - t0
        place.drop()
    return acc


# `gridflow chaos --scenario kafka-outage`: 30 s at 3 reports/s (--full: 5 reports/s, a longer
# stream before the outage)
cli = common.outage_cli(run, outage_s=30.0)
