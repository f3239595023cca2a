"""Scenario storage-outage: MinIO unreachable for 60 s during uploads and archiving, then
PostgreSQL unreachable for 60 s under the SQL sink and the API's receipts.

The API and the worker reach MinIO through one FlakyProxy, the API and the sink reach
PostgreSQL through another (chaos.proxy); simulated phones (chaos.common.Phones) report at a
steady rate and retry after Retry-After. First MinIO goes down and comes back, the run waits
until everything has caught up; then the same with PostgreSQL.

What it proves: while the API cannot store a photo, or cannot write the receipt that makes a
retry safe, it says 503 with Retry-After and acknowledges nothing; the photo archive waits and
retries without moving past an event; the sink waits and resumes from the offsets stored with
its rows; afterwards every acknowledged report is in the read models once, every photo
archived.
"""

from __future__ import annotations

import time
from pathlib import Path

from chaos import common
from chaos.kill_worker import audit_verdict
from chaos.proxy import FlakyProxy
from gridflow.settings import Settings


def run(settings: Settings, log_dir: Path, *, outage_s: float = 60.0, rate: float = 3.0,
        warmup_s: float = 8.0, after_s: float = 5.0, seed: int = 1, audit: bool = True,
        echo: common.Echo = print) -> common.Accounting:
    place, s, ref = common.outage_place(settings, log_dir, "chaos-store")
    minio = FlakyProxy.to(s.s3_endpoint)
    postgres = FlakyProxy("127.0.0.1", s.postgres_port)
    minio.up()
    postgres.up()
    db_via_proxy = common.via_proxy(s.database_url, postgres.address)
    acc = common.Accounting("storage-outage", f"MinIO, then PostgreSQL, unreachable for "
                     f"{outage_s:.0f} s each at {rate:g} reports/s", s.topic_prefix)
    procs = common.Procs(log_dir)
    phones: list[common.Phones] = []
    t0 = time.monotonic()
    try:
        procs.start("worker", ["worker", "--loglevel", "info"],
                    s.with_(s3_endpoint=minio.address))
        procs.start("sink", ["sink"], s.with_(database_url=db_via_proxy))
        procs.start("api", ["api", "--workers", "1"],
                    s.with_(s3_endpoint=minio.address, database_url=db_via_proxy))
        common.wait_healthy(s.api_url, procs)
        tokens = common.phone_tokens(s, ref, 12, "chaos-store")
        acked: set[str] = set()
        for what, proxy in (("MinIO (uploads and the photo archive)", minio),
                            ("PostgreSQL (the sink and the API's receipts)", postgres)):
            batch = common.Phones(s.api_url, tokens, ref, rate, seed + len(phones))
            phones.append(batch)
            outage = common.phones_through_outage(batch, proxy, what, warmup_s, outage_s,
                                                  after_s, echo)
            echo("  waiting for the phones' retries and the pipeline (metrics) to catch up")
            before = set(acked)

            def acknowledged(b: common.Phones = batch, a: set[str] = before) -> set[str]:
                return a | b.acknowledged()

            seconds, lag, _ = common.wait_caught_up(s, procs, acknowledged, outage.up_at,
                                                    echo, settled=batch.settled)
            acc.recovery.append((f"{what.split(' ')[0]} back (outage {outage_s:.0f} s)",
                                 seconds))
            acked |= batch.acknowledged()
            acc.dead_letters = lag.dead_letters
            common.judge_answers(acc, batch, outage)
        common.account_acknowledged(acc, s, acked)
        if acc.counts.archived != acc.counts.photos:
            acc.problems.append(f"{acc.counts.photos - acc.counts.archived} photos not archived")
        if audit:
            acc.audit_clean, acc.audit_lines = audit_verdict(s, echo)
    finally:
        for batch in phones:
            batch.close()
        minio.down()
        postgres.down()
        procs.stop()
        acc.seconds = time.monotonic() - t0
        place.drop()
    return acc


# `gridflow chaos --scenario storage-outage`: 60 s each at 3 reports/s (--full: 5 reports/s, a
# longer stream before each outage)
cli = common.outage_cli(run, outage_s=60.0)
