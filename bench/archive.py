"""Photo archive benchmark: the archive agent's work per photo (processors.archive: read the
incoming object, verify size and sha256, decode and read EXIF, write the retention-locked
content-addressed copy and the thumbnail; then, per batch of `processors.archive.BATCH`
photos, remove their incoming copies with one request, as the agent does), beside a raw MinIO
get and put of the same objects. Both run at the agent's concurrency
(`processors.archive.CONCURRENCY` photos at once), alternating per batch; a one-at-a-time run
of each is measured beside them. The notes give this process's CPU per photo (ours and the
baseline's): on a busy 2-core machine the ratio follows it.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench.common import Context, Figure, buckets, fmt_rate, own_cpu_s, rate, s3_client, say
from bench.load import base_jpeg, variants
from gridflow import events as ev
from gridflow.events import Message, iso

FULL_PHOTOS = 400
TARGET_RATIO = 0.8


def _event(i: int, ref: dict[str, Any]) -> Message:
    return Message(id=f"bench-photo-{i}", type=ev.CASE_FILED, case_id=f"AJBENCH-{i:06d}",
                   at=iso(datetime.now(UTC)), actor="worker:W1",
                   data={"report": {"report_id": f"bench-{i}", "photos": [ref]}})


def run(ctx: Context) -> list[Figure]:
    from processors import archive

    count = ctx.n(FULL_PHOTOS, 10)
    base = base_jpeg()
    photos = list(variants(base, count))
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

        def raw_each(chunk: list[tuple[int, dict[str, Any]]], out: str) -> None:
            for _, ref in chunk:
                raw_one(ref, out)

        def archive_one(i: int, ref: dict[str, Any]) -> bool:
            cmd = archive.archive_photo(s3, cfg, _event(i, ref), ref)
            status = str(cmd.data.get("status"))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            return status == "archived"

        def ours_batch(pool: ThreadPoolExecutor | None,
                       batch: list[tuple[int, dict[str, Any]]]) -> None:
            done = (list(pool.map(lambda a: archive_one(*a), batch)) if pool is not None
                    else [archive_one(*a) for a in batch])
            archive.remove_incoming_many(s3, [ref for (_, ref), ok in zip(batch, done, strict=True)
                                              if ok])

        # The machine is shared: ours and the baseline alternate in rounds of `archive.BATCH`
        # photos (one at a time: of 5), so that a burst of someone else's load falls on both.
        seconds = {"raw1": 0.0, "ours1": 0.0, "raw": 0.0, "ours": 0.0}
        cpu = {"raw": 0.0, "ours": 0.0}

        def timed(name: str, fn: Any, *args: Any) -> None:
            t0, c0 = time.perf_counter(), own_cpu_s()
            fn(*args)
            seconds[name] += time.perf_counter() - t0
            if name in cpu:
                cpu[name] += own_cpu_s() - c0

        half = len(refs) // 4  # one-at-a-time comparison runs on a quarter of the photos
        for b in range(0, half, 5):
            chunk = list(enumerate(refs[b:min(b + 5, half)], start=b))
            timed("raw1", raw_each, chunk, raw_out)
            for one in chunk:  # one at a time: the agent's batch is that one photo
                timed("ours1", ours_batch, None, [one])
        rest = list(enumerate(refs[half:], start=half))
        with ThreadPoolExecutor(archive.CONCURRENCY) as pool:
            for b in range(0, len(rest), archive.BATCH):
                chunk = rest[b:b + archive.BATCH]
                timed("raw", lambda c: list(pool.map(lambda a: raw_one(a[1], raw_out2), c)),
                      chunk)
                timed("ours", ours_batch, pool, chunk)
        say(ctx.echo, f"archive: {len(rest)} photos: raw get+put {seconds['raw']:.1f} s, "
                      f"archived in {seconds['ours']:.1f} s ({statuses})")
    total_mb = total_mb * len(rest) / count
    count = len(rest)
    ours1, raw1 = rate(half, seconds["ours1"]), rate(half, seconds["raw1"])
    ours, raw = rate(count, seconds["ours"]), rate(count, seconds["raw"])
    ratio = ours / raw
    return [Figure(
        "photo archive (verify, EXIF, locked copy, thumbnail, remove incoming)",
        f"{fmt_rate(ours, 'photos/s')}, {rate(total_mb, seconds['ours']):.1f} MB/s",
        f"{fmt_rate(raw, 'photos/s')}, {rate(total_mb, seconds['raw']):.1f} MB/s (get + put)",
        ratio, f"≥ {TARGET_RATIO} of baseline",
        ratio >= TARGET_RATIO and statuses.get("archived") == len(refs),
        f"{count} distinct {len(base) / 1024:.0f} KB 1600×1200 JPEGs, "
        f"{archive.CONCURRENCY} at a time (the agent's concurrency), alternating with the "
        f"baseline per {archive.BATCH}; {statuses}; one at a time "
        f"({half} others): {fmt_rate(ours1, 'photos/s')} vs get + put "
        f"{fmt_rate(raw1, 'photos/s')} (ratio {ours1 / raw1:.2f}); this process's CPU per "
        f"photo {cpu['ours'] / count * 1e3:.1f} ms vs get + put {cpu['raw'] / count * 1e3:.1f} ms",
        {"sizes": f"{count} photos of {len(base) / 1024:.0f} KB", "ours_rate": ours,
         "baseline_rate": raw, "sequential_rate": ours1, "sequential_baseline_rate": raw1,
         "ours_cpu_ms": cpu["ours"] / count * 1e3,
         "baseline_cpu_ms": cpu["raw"] / count * 1e3})]
