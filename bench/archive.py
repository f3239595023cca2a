"""Photo archive benchmark: the archive agent's work per photo (processors.archive: read the
incoming object, verify size and sha256, decode and read EXIF, write the retention-locked
content-addressed copy and the thumbnail, remove the incoming copy), beside a raw MinIO get and
put of the same objects. Both run at the agent's concurrency (`processors.archive.CONCURRENCY`
photos at once); a one-at-a-time run of each is measured beside them for comparison, and a run
that removes the incoming copies per batch of `processors.archive.BATCH` photos with one
request (`archive.remove_incoming_many`) instead of one request per photo. The notes give this
process's CPU per photo (ours and the baseline's): on a busy 2-core machine the ratio follows it.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench.common import Context, Figure, Timer, buckets, fmt_rate, rate, s3_client, say
from bench.load import base_jpeg, variants
from gridflow import events as ev
from gridflow.events import Message, iso

FULL_PHOTOS = 400
TARGET_RATIO = 0.8


def _event(i: int, ref: dict[str, Any]) -> Message:
    return Message(id=f"bench-photo-{i}", type=ev.CASE_FILED, case_id=f"AJBENCH-{i:06d}",
                   at=iso(datetime.now(UTC)), actor="worker:W1",
                   data={"report": {"report_id": f"bench-{i}", "photos": [ref]}})


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def run(ctx: Context) -> list[Figure]:
    from processors import archive

    count = ctx.n(FULL_PHOTOS, 10)
    extra = count // 4  # for the run with the removal per batch
    base = base_jpeg()
    photos = list(variants(base, count + extra))
    total_mb = sum(len(p) for p in photos) / 1e6
    s3 = s3_client(ctx.settings)
    with buckets(ctx.settings, ctx.unique("arc")) as (incoming, archive_bucket), \
            buckets(ctx.settings, ctx.unique("raw")) as (raw_in, raw_out), \
            buckets(ctx.settings, ctx.unique("raw2")) as (_, raw_out2):
        say(ctx.echo, f"archive: uploading {count} photos of {len(base) / 1024:.0f} KB ...")
        refs = []
        for i, data in enumerate(photos):
            key = f"reports/bench-{i}/1.jpg"
            for bucket in (incoming, raw_in):
                s3.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
            refs.append({"bucket": incoming, "key": key, "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest(),
                         "content_type": "image/jpeg", "role": "before"})
        del photos
        refs, batched = refs[:count], refs[count:]
        cfg = archive.ArchiveConfig(archive_bucket, 1, ctx.settings.max_photo_bytes,
                                    ctx.settings.max_photo_pixels)
        statuses: dict[str, int] = {}
        lock = threading.Lock()

        def raw_one(ref: dict[str, Any], out: str) -> None:
            resp = s3.get_object(raw_in, ref["key"])
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
            s3.put_object(out, ref["key"], io.BytesIO(data), len(data),
                          content_type="image/jpeg")

        def archive_one(i: int, ref: dict[str, Any]) -> bool:
            cmd = archive.archive_photo(s3, cfg, _event(i, ref), ref, datetime.now(UTC))
            status = str(cmd.data.get("status"))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            return status == "archived"

        def ours_one(i: int, ref: dict[str, Any]) -> None:
            if archive_one(i, ref):
                archive.remove_incoming(s3, ref)

        half = len(refs) // 4  # one-at-a-time comparison runs on a quarter of the photos
        with Timer() as raw1_t:
            for ref in refs[:half]:
                raw_one(ref, raw_out)
        with Timer() as ours1_t:
            for i, ref in enumerate(refs[:half]):
                ours_one(i, ref)
        rest = refs[half:]
        cpu = _cpu_s()
        with ThreadPoolExecutor(archive.CONCURRENCY) as pool, Timer() as raw_t:
            list(pool.map(lambda ref: raw_one(ref, raw_out2), rest))
        raw_cpu, cpu = _cpu_s() - cpu, _cpu_s()
        say(ctx.echo, f"archive: raw get+put {len(rest)} in {raw_t.seconds:.1f} s")
        with ThreadPoolExecutor(archive.CONCURRENCY) as pool, Timer() as ours_t:
            list(pool.map(lambda a: ours_one(half + a[0], a[1]), enumerate(rest)))
        ours_cpu = _cpu_s() - cpu
        say(ctx.echo, f"archive: archived {len(rest)} in {ours_t.seconds:.1f} s ({statuses})")
        with ThreadPoolExecutor(archive.CONCURRENCY) as pool, Timer() as batched_t:
            numbered = list(enumerate(batched, start=count))
            for b in range(0, len(numbered), archive.BATCH):
                chunk = numbered[b:b + archive.BATCH]
                done = list(pool.map(lambda a: archive_one(*a), chunk))
                archive.remove_incoming_many(
                    s3, [ref for (_, ref), ok in zip(chunk, done, strict=True) if ok])
        say(ctx.echo, f"archive: archived {len(batched)} (removal per batch) in "
                      f"{batched_t.seconds:.1f} s")
    total_mb = total_mb * len(rest) / (count + extra)
    count = len(rest)
    ours1, raw1 = rate(half, ours1_t.seconds), rate(half, raw1_t.seconds)
    ours, raw = rate(count, ours_t.seconds), rate(count, raw_t.seconds)
    ours_b = rate(len(batched), batched_t.seconds)
    ratio = ours / raw
    return [Figure(
        "photo archive (verify, EXIF, locked copy, thumbnail, remove incoming)",
        f"{fmt_rate(ours, 'photos/s')}, {rate(total_mb, ours_t.seconds):.1f} MB/s",
        f"{fmt_rate(raw, 'photos/s')}, {rate(total_mb, raw_t.seconds):.1f} MB/s (get + put)",
        ratio, f"≥ {TARGET_RATIO} of baseline",
        ratio >= TARGET_RATIO and statuses.get("archived") == len(refs) + len(batched),
        f"{count} distinct {len(base) / 1024:.0f} KB 1600×1200 JPEGs, "
        f"{archive.CONCURRENCY} at a time (the agent's concurrency); {statuses}; one at a time "
        f"({half} others): {fmt_rate(ours1, 'photos/s')} vs get + put "
        f"{fmt_rate(raw1, 'photos/s')} (ratio {ours1 / raw1:.2f}); incoming copies removed per "
        f"batch of {archive.BATCH} with one request ({len(batched)} others): "
        f"{fmt_rate(ours_b, 'photos/s')} (ratio {ours_b / raw:.2f}); this process's CPU per "
        f"photo {ours_cpu / count * 1e3:.1f} ms vs get + put {raw_cpu / count * 1e3:.1f} ms",
        {"sizes": f"{count} photos of {len(base) / 1024:.0f} KB", "ours_rate": ours,
         "baseline_rate": raw, "sequential_rate": ours1, "sequential_baseline_rate": raw1,
         "batched_removal_rate": ours_b, "ours_cpu_ms": ours_cpu / count * 1e3,
         "baseline_cpu_ms": raw_cpu / count * 1e3})]
