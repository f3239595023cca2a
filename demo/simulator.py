"""Traffic simulator: the sample county's grid workers and residents driving a running API.

Deterministic per seed (which worker, where, which category, which photo bytes, which
mishap); only timing and the server's answers vary. Mix: photo reports with real JPEGs
carrying EXIF GPS and capture time, exact retries of an earlier upload (idempotency),
near-duplicates (a second worker reporting the same problem metres away), bad uploads (a
text file named .jpg), and residents' Open311 complaints. At-most `concurrency` requests are
in flight; requests start on a fixed schedule of `rate` per second.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from demo import images
from gridflow.core.geo import random_point_in
from gridflow.core.intake import CHINA_TZ
from gridflow.core.refdata import ReferenceData, Worker, load_reference_data

# Share of each kind of traffic (the rest: fresh photo reports).
MIX = {"retry": 0.08, "near_duplicate": 0.08, "bad_photo": 0.04, "resident": 0.12}
# What grid workers mostly report (市容环境, 街面秩序, 施工, 部件) — other categories rarer.
COMMON_CLASSES = ("E01", "E02", "E03", "E04", "P01", "P03")

DESCRIPTIONS = {
    "E01": ["路边垃圾堆积未清运", "垃圾桶满溢, 周边有散落垃圾", "河边有人焚烧秸秆"],
    "E02": ["电线杆上贴满小广告", "围墙上乱涂乱画"],
    "E03": ["工地夜间施工噪音大", "工地未覆盖防尘网, 扬尘严重"],
    "E04": ["商户占道经营", "车辆占用人行道停放", "流动摊贩占道"],
    "P01": ["井盖缺失, 存在安全隐患", "路灯不亮"],
    "P03": ["公厕设施损坏", "垃圾箱破损"],
}


@dataclass
class Planned:
    """One request the simulator will make, fully decided before it is sent."""

    index: int
    kind: str  # report | retry | near_duplicate | bad_photo | resident
    worker: Worker | None
    report: dict[str, Any] | None = None
    photos: list[bytes] = field(default_factory=list)
    form: dict[str, str] | None = None
    retry_of: int | None = None


@dataclass
class Outcome:
    kind: str
    status: int  # 0: no answer (connection error)
    latency_s: float
    code: str = ""  # error code from the body, or the exception name


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def counts(self) -> dict[str, int]:
        accepted = sum(1 for o in self.outcomes if o.status in (201, 202))
        replayed = sum(1 for o in self.outcomes if o.status == 200)
        refused = sum(1 for o in self.outcomes if 400 <= o.status < 500)
        failed = sum(1 for o in self.outcomes if o.status == 0 or o.status >= 500)
        return {
            "sent": len(self.outcomes),
            "accepted": accepted,
            "duplicates_by_retry": replayed,
            "refused": refused,
            "failed": failed,
        }

    def refusals(self) -> Counter[str]:
        return Counter(
            f"{o.status} {o.code}" for o in self.outcomes if o.status >= 400 or o.status == 0
        )

    def latency_ms(self, q: float) -> float:
        values = sorted(o.latency_s for o in self.outcomes if o.status)
        if not values:
            return float("nan")
        rank = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
        return values[rank] * 1000

    def render(self) -> str:
        c = self.counts()
        lines = [
            f"simulated {c['sent']} requests in {self.wall_s:.1f} s "
            f"({c['sent'] / self.wall_s if self.wall_s else 0:.1f}/s)",
            f"  accepted (新受理)            {c['accepted']}",
            f"  duplicates by retry (重复提交) {c['duplicates_by_retry']}",
            f"  refused (拒收)               {c['refused']}",
            f"  failed (失败, 5xx/无响应)      {c['failed']}",
            f"  latency p50 {self.latency_ms(0.5):.0f} ms, p99 {self.latency_ms(0.99):.0f} ms",
        ]
        kinds = Counter(o.kind for o in self.outcomes)
        lines.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for reason, n in self.refusals().most_common():
            lines.append(f"  refused/failed: {reason} × {n}")
        return "\n".join(lines)


def pick_kind(roll: float) -> str:
    """The traffic kind a uniform [0, 1) draw falls on, per MIX."""
    edge = 0.0
    for kind, share in MIX.items():
        edge += share
        if roll < edge:
            return kind
    return "report"


class Plan:
    """Decides each request from the seed; remembers earlier reports for retries and dups."""

    def __init__(self, ref: ReferenceData, seed: int, now: Callable[[], datetime]) -> None:
        self.ref = ref
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = now
        self.workers = sorted((w for w in ref.workers.values() if w.active), key=lambda w: w.id)
        self.categories = sorted(
            c.code for c in ref.categories.values() if c.enabled and c.class_code in COMMON_CLASSES
        )
        self.services = sorted(ref.services)
        self.sent: list[Planned] = []  # fresh reports, for retries and near-duplicates

    def _report(
        self,
        index: int,
        worker: Worker,
        category: str,
        lat: float,
        lon: float,
    ) -> tuple[dict[str, Any], list[bytes]]:
        taken = self.now().astimezone(CHINA_TZ) - timedelta(minutes=self.rng.randint(1, 30))
        count = self.rng.choices((1, 2, 3), weights=(5, 4, 1))[0]
        photos = [
            images.make_jpeg(
                480,
                360,
                seed=self.seed * 1_000_003 + index * 10 + i,
                taken_at=taken.replace(microsecond=0),
                gps=(lat, lon),
            )
            for i in range(count)
        ]
        report = {
            "report_id": f"sim{self.seed}-{index:06d}-{self.rng.getrandbits(32):08x}",
            "category_code": category,
            "description": self.rng.choice(DESCRIPTIONS.get(category[:3], ["发现问题, 请处理"])),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "captured_at": taken.isoformat(timespec="seconds"),
        }
        return report, photos

    def next(self, index: int) -> Planned:
        kind = pick_kind(self.rng.random())
        if kind in ("retry", "near_duplicate") and not self.sent:
            kind = "report"
        if kind == "retry":
            earlier = self.rng.choice(self.sent[-50:])
            return Planned(
                index,
                "retry",
                earlier.worker,
                earlier.report,
                earlier.photos,
                retry_of=earlier.index,
            )
        if kind == "resident":
            return self._resident(index)
        worker = self.rng.choice(self.workers)
        if kind == "near_duplicate":
            earlier = self.rng.choice(self.sent[-50:])
            assert earlier.report is not None
            others = [w for w in self.workers if w.id != earlier.worker.id]  # type: ignore[union-attr]
            worker = self.rng.choice(others)
            # ~10-30 m away: the same problem seen by a second worker.
            lat = earlier.report["lat"] + self.rng.uniform(-0.0002, 0.0002)
            lon = earlier.report["lon"] + self.rng.uniform(-0.0002, 0.0002)
            report, photos = self._report(index, worker, earlier.report["category_code"], lat, lon)
            planned = Planned(index, "near_duplicate", worker, report, photos)
            self.sent.append(planned)
            return planned
        lat, lon = random_point_in(self.ref.grids[worker.grid_code], self.rng)
        report, photos = self._report(index, worker, self.rng.choice(self.categories), lat, lon)
        if kind == "bad_photo":
            return Planned(index, "bad_photo", worker, report, [images.text_as_jpg()])
        planned = Planned(index, "report", worker, report, photos)
        self.sent.append(planned)
        return planned

    def _resident(self, index: int) -> Planned:
        grid = self.ref.grids[self.rng.choice(sorted(self.ref.grids))]
        lat, lon = random_point_in(grid, self.rng)
        code = self.rng.choice(self.services)
        service = self.ref.services[code]
        form = {
            "service_code": code,
            "lat": f"{lat:.6f}",
            "long": f"{lon:.6f}",
            "description": f"{service.service_name}: {service.description}",
            "device_id": f"sim-device-{self.rng.randrange(200):03d}",
            "phone": f"139{self.rng.randrange(10**8):08d}",
            "address_string": self.ref.area_name(grid.code),
        }
        return Planned(index, "resident", None, form=form)


async def send(client: httpx.AsyncClient, p: Planned, tokens: Mapping[str, str]) -> Outcome:
    """Send one planned request; a worker's upload with that worker's session token."""
    t0 = time.perf_counter()
    try:
        if p.kind == "resident":
            assert p.form is not None
            r = await client.post("/open311/v2/requests.json", data=p.form)
        else:
            assert p.worker is not None and p.report is not None
            files = [
                ("photos", (f"IMG_{i:04d}.jpg", data, "image/jpeg"))
                for i, data in enumerate(p.photos)
            ]
            r = await client.post(
                "/api/v1/reports",
                headers={"Authorization": f"Bearer {tokens[p.worker.id]}"},
                data={"report": json.dumps(p.report, ensure_ascii=False)},
                files=files,
            )
    except httpx.HTTPError as exc:
        return Outcome(p.kind, 0, time.perf_counter() - t0, type(exc).__name__)
    latency = time.perf_counter() - t0
    code = ""
    if r.status_code >= 400:
        try:
            body = r.json()
            code = body[0].get("code", "") if isinstance(body, list) else body.get("code", "")
        except (ValueError, AttributeError, IndexError):
            code = "non-json"
    return Outcome(p.kind, r.status_code, latency, str(code))


async def run(
    api: str,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    concurrency: int = 8,
    echo: Callable[[str], None] = print,
    ref: ReferenceData | None = None,
    timeout_s: float = 60.0,
    clock: Callable[[], datetime] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> Summary:
    """Drive the API at `api` for `count` requests or `duration` seconds. `tokens`: worker id →
    session token of every active worker (`sample_tokens`)."""
    if count is None and duration is None:
        raise ValueError("give count or duration")
    plan = Plan(ref or load_reference_data(), seed, clock or (lambda: datetime.now(UTC)))
    summary = Summary()
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    last_print = start

    async def one(p: Planned) -> None:
        async with gate:
            summary.add(await send(client, p, tokens or {}))

    async with httpx.AsyncClient(base_url=api, timeout=timeout_s) as client:
        tasks: list[asyncio.Task[None]] = []
        index = 0
        while True:
            elapsed = time.monotonic() - start
            if (count is not None and index >= count) or (
                duration is not None and elapsed >= duration
            ):
                break
            due = start + index / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            planned = await asyncio.to_thread(plan.next, index)  # JPEG encoding off the loop
            tasks.append(asyncio.create_task(one(planned)))
            index += 1
            if time.monotonic() - last_print >= 2.0:
                last_print = time.monotonic()
                c = summary.counts()
                echo(
                    f"[{last_print - start:6.1f}s] sent {index}, answered {c['sent']}: "
                    f"accepted {c['accepted']}, retries {c['duplicates_by_retry']}, "
                    f"refused {c['refused']}, failed {c['failed']}"
                )
        await asyncio.gather(*tasks)
    summary.wall_s = time.monotonic() - start
    return summary


def simulate(
    api: str,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    concurrency: int = 8,
    clock: Callable[[], datetime] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> Summary:
    """`run` on its own event loop, printing progress (for the CLI). `clock` dates the photos
    and capture times: give the API's clock when it runs a simulated one."""

    def echo(line: str) -> None:
        print(line, flush=True, file=sys.stdout)

    return asyncio.run(
        run(api, rate, count, duration, seed, concurrency, echo, clock=clock, tokens=tokens)
    )


def sample_tokens(database_url: str, ref: ReferenceData | None = None) -> dict[str, str]:
    """Worker id → a session token of every active grid worker of the reference data, opened in
    the API's database (their accounts are created first if missing). In memory only."""
    from accounts.sample import SampleSessions
    from accounts.store import AccountStore
    from sinks.models import make_engine

    ref = ref or load_reference_data()
    engine = make_engine(database_url)
    try:
        sessions = SampleSessions(AccountStore(engine, ref), "simulator")
        return {w.id: sessions.token(w.id) for w in ref.workers.values() if w.active}
    finally:
        engine.dispose()
