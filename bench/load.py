"""Load for the benchmarks: reports of the sample county (valid, filed, spread over its grids
and categories) and photo bytes that differ per upload without re-encoding a JPEG each time.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from gridflow.core.geo import random_point_in
from gridflow.core.intake import CHINA_TZ
from gridflow.core.refdata import ReferenceData, Worker, load_reference_data
from gridflow.events import REPORT_SUBMITTED, Message, derived_id, iso

PHOTO_BYTES = 300 * 1024


@dataclass(frozen=True)
class Spot:
    worker: Worker
    category: str
    lat: float
    lon: float


class County:
    """Deterministic draws from the sample county: who reports what, where."""

    def __init__(self, seed: int = 11, ref: ReferenceData | None = None) -> None:
        self.ref = ref or load_reference_data()
        self.rng = random.Random(seed)
        self.workers = sorted((w for w in self.ref.workers.values() if w.active),
                              key=lambda w: w.id)
        self.categories = sorted(c.code for c in self.ref.categories.values() if c.enabled)
        self.residents = [f"resident:R{i:05d}" for i in range(500)]

    def spot(self, i: int) -> Spot:
        worker = self.workers[i % len(self.workers)]
        lat, lon = random_point_in(self.ref.grids[worker.grid_code], self.rng)
        return Spot(worker, self.rng.choice(self.categories), round(lat, 6), round(lon, 6))

    def client_report(self, i: int, run: str, now: datetime) -> tuple[Spot, dict[str, Any]]:
        """The report part a grid worker's phone sends (POST /api/v1/reports)."""
        s = self.spot(i)
        taken = (now - timedelta(minutes=5)).astimezone(CHINA_TZ)
        return s, {
            "report_id": f"{run}-{i:07d}",
            "category_code": s.category,
            "description": "垃圾堆积, 请尽快处理",
            "lat": s.lat,
            "lon": s.lon,
            "captured_at": taken.isoformat(timespec="seconds"),
        }

    def resident_submitted(self, i: int, run: str, at: datetime) -> bytes:
        """A resident's ReportSubmitted without photos, as the API publishes it."""
        s = self.spot(i)
        data = {
            "report_id": f"{run}-{i:07d}",
            "reporter": self.residents[i % len(self.residents)],
            "category_code": s.category,
            "description": "路边垃圾堆积, 请处理",
            "lat": s.lat,
            "lon": s.lon,
            "captured_at": iso(at - timedelta(minutes=5)),
            "photos": [],
            "address": "",
            "source": "open311",
            "channel": "benchmark",
        }
        return Message(id=derived_id("report", data["report_id"]), type=REPORT_SUBMITTED,
                       case_id="", at=iso(at), actor=data["reporter"], data=data).encode()


@cache
def base_jpeg(target: int = PHOTO_BYTES) -> bytes:
    """A real 1600×1200 JPEG with EXIF (capture time, GPS) of about `target` bytes."""
    from gridflow.testing.images import make_jpeg

    noise = 0.09 * (target / PHOTO_BYTES)
    return make_jpeg(1600, 1200, seed=5, noise=noise, quality=85,
                     taken_at=datetime(2026, 11, 17, 10, 0), gps=(32.2, 110.0))


@cache
def small_jpeg() -> bytes:
    """A 640×480 JPEG as the simulator sends (a phone app that downsizes)."""
    from gridflow.testing.images import make_jpeg

    return make_jpeg(640, 480, seed=6, quality=85, taken_at=datetime(2026, 11, 17, 10, 0),
                     gps=(32.2, 110.0))


def variant(jpeg: bytes, i: int) -> bytes:
    """The same picture with a JPEG comment segment naming `i`: other bytes, other sha256."""
    text = f"gridflow bench photo {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def variants(jpeg: bytes, count: int) -> Iterator[bytes]:
    for i in range(count):
        yield variant(jpeg, i)
