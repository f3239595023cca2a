"""Ingest benchmark: grid workers' HTTP uploads of a 300 KB JPEG to the real API (`gridflow api`
as a child process, receipts in PostgreSQL), 32 at a time; beside a raw MinIO put of the same
bytes plus a Kafka produce (acks=all) of an event of the same size, at the same concurrency.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import (
    Context,
    Figure,
    buckets,
    fmt_ms,
    fmt_rate,
    own_cpu_s,
    percentile,
    pg_database,
    rate,
    s3_client,
    say,
    spy,
    stop_spies,
    topic_prefix,
    tree_cpu_s,
)
from bench.load import County, Uploader, base_jpeg, multipart_body, variant
from demo.simulator import sample_tokens
from gridflow import topics
from gridflow.settings import Settings
from infra import services

FULL_UPLOADS = 2000
CONCURRENCY = 32
TARGET_RATIO = 0.7


def start_api(settings: Settings, run_dir: Path, procs: list[services.Service] | None = None,
              ) -> services.Service:
    """`gridflow api` on a free port of `settings`; returns once /api/v1/health answers."""
    api = services.start("api", ["api", "--log-level", "warning"], settings, run_dir)
    if api.proc is not None:
        spy("api", api.proc.pid, 60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in [api, *(procs or [])]:
            p.check()
        try:
            if httpx.get(f"{settings.api_url}/api/v1/health", timeout=2).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    api.stop()
    raise RuntimeError(f"the API did not answer at {settings.api_url}")


class Uploads:
    """Grid workers' uploads of the sample county over `Uploader`s, one per thread."""

    def __init__(self, url: str, run: str, tokens: Mapping[str, str], seed: int = 23,
                 timeout: float = 120.0) -> None:
        """`tokens`: worker id → session token (demo.simulator.sample_tokens)."""
        self.url, self.run, self.timeout, self.tokens = url, run, timeout, tokens
        self.county = County(seed=seed)
        self.lock = threading.Lock()  # the county's draws
        self.local = threading.local()

    def one(self, i: int, photo: bytes, run: str | None = None) -> tuple[int, float, str]:
        """Upload report `i` with `photo`; (status, seconds, case id), status 0: no answer."""
        with self.lock:
            spot, report = self.county.client_report(i, run or self.run, datetime.now(UTC))
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = Uploader(self.url, self.timeout)
        body, ctype = multipart_body(report, [photo])
        headers = {"Authorization": f"Bearer {self.tokens[spot.worker.id]}",
                   "Content-Type": ctype}
        t0 = time.perf_counter()
        status, answer = client.post("/api/v1/reports", body, headers)
        seconds = time.perf_counter() - t0
        case_id = json.loads(answer).get("case_id", "") if status == 202 else ""
        return status, seconds, case_id


def drive(url: str, count: int, concurrency: int, run: str, photo_of: Callable[[int], bytes],
          tokens: Mapping[str, str]) -> tuple[float, list[tuple[int, float, str]]]:
    """`count` uploads, `concurrency` at a time (one thread and connection each)."""
    uploads = Uploads(url, run, tokens)
    indices = iter(range(count))
    results: list[tuple[int, float, str]] = []

    def worker() -> None:
        for i in indices:  # shared iterator: each index taken once
            results.append(uploads.one(i, photo_of(i)))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


def raw_baseline(settings: Settings, bucket: str, topic: str, count: int, concurrency: int,
                 photo_of: Callable[[int], bytes], event_size: int) -> tuple[float, list[float]]:
    """MinIO put + Kafka produce (acks=all, idempotent) per upload, `concurrency` threads."""
    from kafka import KafkaProducer

    s3 = s3_client(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             enable_idempotence=True, linger_ms=0)
    event = b"x" * event_size
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        data = photo_of(i)
        t0 = time.perf_counter()
        s3.put_object(bucket, f"raw/{i}.jpg", io.BytesIO(data), len(data),
                      content_type="image/jpeg")
        producer.send(topic, key=str(i).encode(), value=event).get(timeout=30)
        with lock:
            latencies.append(time.perf_counter() - t0)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            t0 = time.perf_counter()
            list(pool.map(one, range(count)))
            return time.perf_counter() - t0, latencies
    finally:
        producer.close(timeout=10)


def _event_size(bootstrap: str, topic: str) -> int:
    from demo.live import read_topic

    records = read_topic(bootstrap, topic, lambda rs: len(rs) >= 1, timeout_s=20)
    return len(records[0].value) if records else 1200


def run(ctx: Context) -> list[Figure]:
    from demo.live import free_port

    count = ctx.n(FULL_UPLOADS, 64)
    base = base_jpeg()
    run_dir = ctx.work_dir / "ingest"
    run_dir.mkdir(parents=True, exist_ok=True)

    def photo_of(i: int) -> bytes:
        return variant(base, i)

    with topic_prefix(ctx.settings, ctx.unique("ing")) as prefix, \
            buckets(ctx.settings, ctx.unique("ing")) as (incoming, _archive), \
            pg_database(ctx.settings, ctx.unique("ing")) as db_url:
        settings = ctx.settings.with_(topic_prefix=prefix, bucket_incoming=incoming,
                                      database_url=db_url, api_port=free_port())
        api = start_api(settings, run_dir)
        try:
            say(ctx.echo, f"ingest: {count} uploads of {len(base) / 1024:.0f} KB, "
                          f"{CONCURRENCY} at a time ...")
            api_pid = api.proc.pid if api.proc is not None else 0
            api_cpu0, client_cpu0 = tree_cpu_s(api_pid), own_cpu_s()
            seconds, results = drive(settings.api_url, count, CONCURRENCY, ctx.run_id,
                                     photo_of, sample_tokens(db_url))
            api_cpu, client_cpu = tree_cpu_s(api_pid) - api_cpu0, own_cpu_s() - client_cpu0
        finally:
            stop_spies()
            api.stop()
        accepted = [r for r in results if r[0] == 202]
        say(ctx.echo, f"ingest: {len(accepted)}/{count} accepted in {seconds:.1f} s; raw ...")
        event_size = _event_size(settings.kafka_bootstrap, topics.REPORTS.name(prefix))
        raw_cpu0 = own_cpu_s()
        raw_s, raw_lat = raw_baseline(settings, incoming, topics.DEAD_LETTERS.name(prefix), count,
                                      CONCURRENCY, photo_of, event_size)
        raw_cpu = own_cpu_s() - raw_cpu0
    lat = [r[1] for r in accepted]
    ours, raw = rate(len(accepted), seconds), rate(count, raw_s)
    ratio = ours / raw
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r[0]] = statuses.get(r[0], 0) + 1
    return [Figure(
        f"ingest (HTTP upload of a {len(base) / 1024:.0f} KB JPEG, {CONCURRENCY} concurrent)",
        f"{fmt_rate(ours, 'uploads/s')}, p50 {fmt_ms(percentile(lat, 0.5))}, "
        f"p99 {fmt_ms(percentile(lat, 0.99))}",
        f"{fmt_rate(raw, 'uploads/s')}, p50 {fmt_ms(percentile(raw_lat, 0.5))}, "
        f"p99 {fmt_ms(percentile(raw_lat, 0.99))} (MinIO put + Kafka produce)",
        ratio, f"≥ {TARGET_RATIO} of baseline",
        ratio >= TARGET_RATIO and len(accepted) == count,
        f"{count} uploads (HTTP status counts {statuses}); event {event_size} B; CPU per upload: "
        f"API {api_cpu / count * 1000:.1f} ms, load generator {client_cpu / count * 1000:.1f} ms, "
        f"raw baseline's client {raw_cpu / count * 1000:.1f} ms",
        {"sizes": f"{count} uploads × {len(base) / 1024:.0f} KB", "ours_rate": ours,
         "baseline_rate": raw, "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
         "api_cpu_ms": api_cpu / count * 1000, "client_cpu_ms": client_cpu / count * 1000,
         "baseline_client_cpu_ms": raw_cpu / count * 1000})]
