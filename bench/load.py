"""Load for the benchmarks: reports of the sample county (valid, filed, spread over its grids
and categories) and photo bytes that differ per upload without re-encoding a JPEG each time.
"""

from __future__ import annotations

import http.client
import json
import random
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from gridflow.core.geo import random_point_in
from gridflow.core.intake import CHINA_TZ, report_key, ticket_for
from gridflow.core.refdata import ReferenceData, Worker, load_reference_data
from gridflow.events import REPORT_SUBMITTED, Message, decode_message, derived_id, iso

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

    def keyed_report(self, i: int, run: str, at: datetime,
                     keyed: str = "ticket") -> tuple[str, bytes]:
        """(key, value) of a resident's ReportSubmitted as the API publishes it: keyed by its
        township (intake.report_key), carrying the ticket answered (intake.ticket_for), whose
        case lands on the township's partition. For comparison, `keyed="township"` leaves the
        ticket out, as the API did in the first step of issue 16 (filed in one step, the case
        decided one hop later), and `keyed="report_id"` keys it by report id as before issue 16
        (two hops to the FileReport)."""
        value = self.resident_submitted(i, run, at)
        report_id = f"{run}-{i:07d}"
        if keyed == "report_id":
            return report_id, value
        msg = decode_message(value)  # the spot is random: read it back from the report
        lat, lon = msg.data["lat"], msg.data["lon"]
        key = report_key(self.ref, report_id, lat, lon)
        if keyed == "ticket":
            value = replace(msg, case_id=ticket_for(self.ref, report_id, lat, lon, at)).encode()
        return key, value

    def resident_submitted(self, i: int, run: str, at: datetime) -> bytes:
        """A resident's ReportSubmitted without photos, as the API publishes it."""
        s = self.spot(i)
        report_id = f"{run}-{i:07d}"
        reporter = self.residents[i % len(self.residents)]
        data = {
            "report_id": report_id,
            "reporter": reporter,
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
        return Message(id=derived_id("report", report_id), type=REPORT_SUBMITTED,
                       case_id="", at=iso(at), actor=reporter, data=data).encode()


@cache
def base_jpeg(target: int = PHOTO_BYTES) -> bytes:
    """A real 1600×1200 JPEG with EXIF (capture time, GPS) of about `target` bytes."""
    from demo.images import make_jpeg

    noise = 0.09 * (target / PHOTO_BYTES)
    return make_jpeg(1600, 1200, seed=5, noise=noise, quality=85,
                     taken_at=datetime(2026, 11, 17, 10, 0), gps=(32.2, 110.0))


@cache
def small_jpeg() -> bytes:
    """A 640×480 JPEG as the simulator sends (a phone app that downsizes)."""
    from demo.images import make_jpeg

    return make_jpeg(640, 480, seed=6, quality=85, taken_at=datetime(2026, 11, 17, 10, 0),
                     gps=(32.2, 110.0))


def variant(jpeg: bytes, i: int) -> bytes:
    """The same picture with a JPEG comment segment naming `i`: other bytes, other sha256."""
    text = f"gridflow bench photo {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def variants(jpeg: bytes, count: int) -> Iterator[bytes]:
    for i in range(count):
        yield variant(jpeg, i)


# --- the upload client ----------------------------------------------------------------------


def multipart_body(report: dict[str, Any], photos: list[bytes]) -> tuple[bytes, str]:
    """(body, Content-Type) of a grid worker's upload: the report JSON part, then the photos."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"report\"\r\n"
            f"Content-Type: application/json\r\n\r\n").encode()
    pieces = [head, json.dumps(report, ensure_ascii=False).encode()]
    for i, photo in enumerate(photos):
        pieces.append(f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; "
                      f"filename=\"IMG_{i + 1:04d}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
                      .encode())
        pieces.append(photo)
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(pieces), f"multipart/form-data; boundary={boundary}"


class Uploader:
    """One keep-alive HTTP/1.1 connection (http.client), used by one thread at a time: the
    load generator's client. Threads over http.client are the shape of the raw baseline's
    client (the MinIO SDK: urllib3 over http.client, one connection per thread) and cost a
    fraction of the CPU of an asyncio HTTP client, which on this 2-core machine competes with
    the API for the same cores."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        u = urlsplit(base_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body); status 0 when no answer came (connection refused, reset, timeout).
        A kept-alive connection the server had closed is reopened and the request sent once
        more (uploads are idempotent by report id)."""
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh or attempt:
                    return 0, b""
        return 0, b""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
