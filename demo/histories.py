"""Sample case histories made by the real aggregate (gridflow.core.case.decide), as sink records.

For the sink's tests, demos and throughput measurement. Deterministic: the same arguments
give the same events, ids and hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gridflow import events as ev
from gridflow.core.case import CaseState, decide, new_case
from gridflow.events import Message, iso
from sinks.sql import Record

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # a Monday, 09:00 in Beijing
WORKER = "worker:W1@G1"


class HoursPlanner:
    """Plain-clock deadlines: sign within 2 h, resolve within 48 h, verify within 24 h."""

    HOURS = {"sign": 2, "resolve": 48, "verify": 24}

    def due(self, category_code: str, severity: int, stage: str, start: datetime) -> datetime:
        return start + timedelta(hours=self.HOURS[stage])

    def add_working_days(self, start: datetime, days: float) -> datetime:
        return start + timedelta(days=days)


def photo(key: str, role: str = "before") -> dict[str, Any]:
    return {
        "bucket": "gridflow-incoming",
        "key": key,
        "size": 1000 + len(key),
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "content_type": "image/jpeg",
        "role": role,
    }


@dataclass
class Script:
    """Drives one case through decide(): each step is a command at t0 + minutes."""

    case_id: str
    t0: datetime = T0
    state: CaseState = field(init=False)
    events: list[Message] = field(default_factory=list)
    planner: HoursPlanner = field(default_factory=HoursPlanner)
    _n: int = 0

    def __post_init__(self) -> None:
        self.state = new_case(self.case_id)

    def do(
        self,
        type_: str,
        data: dict[str, Any] | None = None,
        actor: str = "system",
        minutes: float = 0,
    ) -> list[Message]:
        self._n += 1
        command = Message(
            id=f"{self.case_id}-c{self._n}",
            type=type_,
            case_id=self.case_id,
            at=iso(self.t0 + timedelta(minutes=minutes)),
            actor=actor,
            data=data or {},
        )
        decision = decide(self.state, command, self.planner)
        self.state = decision.state
        self.events += decision.events
        return decision.events

    def task(self, n: int) -> str:
        return f"{self.case_id}-T{n:02d}"

    def file(
        self,
        report_id: str,
        departments: Iterable[str] = ("D-CG",),
        minutes: float = 0,
        **extra: Any,
    ) -> list[Message]:
        key = f"{self.case_id}/{report_id}/1.jpg"
        return self.do(
            ev.FILE_REPORT,
            {
                "report": {
                    "report_id": report_id,
                    "reporter": WORKER,
                    "category_code": "E0102",
                    "description": "垃圾桶满溢",
                    "address": "青山村村委会旁",
                    "lat": 30.1,
                    "lon": 110.2,
                    "captured_at": iso(self.t0 + timedelta(minutes=minutes - 5)),
                    "photos": [photo(key)],
                },
                "category_code": "E0102",
                "category_name": "暴露垃圾",
                "severity": 1,
                "grid_code": "G1",
                "village_code": "V1",
                "township_code": "T1",
                "departments": list(departments),
                "routing_reason": "category E01 → D-CG",
                **extra,
            },
            actor=WORKER,
            minutes=minutes,
        )

    def archived(self, ref: dict[str, Any], minutes: float, **where: str) -> list[Message]:
        sha = ref["sha256"]
        return self.do(
            ev.RECORD_PHOTO_ARCHIVED,
            {
                "source_bucket": ref["bucket"],
                "source_key": ref["key"],
                "sha256": sha,
                "size": ref["size"],
                "role": ref.get("role", "before"),
                "status": "archived",
                "archive_bucket": "gridflow-archive",
                "archive_key": f"sha256/{sha[:2]}/{sha}.jpg",
                "thumbnail_key": f"thumbs/{sha[:2]}/{sha}.jpg",
                "width": 640,
                "height": 480,
                "exif": {"taken_at": iso(self.t0), "lat": 30.1, "lon": 110.2},
                "report_id": where.get("report_id", ""),
                "task_id": where.get("task_id", ""),
            },
            minutes=minutes,
        )


def simple_lifecycle(case_id: str, t0: datetime = T0) -> list[Message]:
    """File → sign → progress → resolve with photo → verify → closed → rated 5."""
    s = Script(case_id, t0)
    s.file(f"{case_id}-R1")
    t1, dept = s.task(1), "dept:D-CG"
    s.do(ev.SIGN_TASK, {"task_id": t1}, dept, minutes=30)
    s.do(ev.NOTE_PROGRESS, {"task_id": t1, "note": "已到现场"}, dept, minutes=60)
    s.do(
        ev.RESOLVE_TASK,
        {"task_id": t1, "note": "已清理", "photos": [photo(f"{case_id}/after.jpg")]},
        dept,
        minutes=90,
    )
    s.do(ev.VERIFY_TASK, {"task_id": t1}, WORKER, minutes=120)
    s.do(ev.RATE_CASE, {"score": 5, "comment": "很满意"}, WORKER, minutes=130)
    return s.events


def eventful_lifecycle(case_id: str, t0: datetime = T0) -> list[Message]:
    """One case that emits every event type the aggregate has (TaskClosed aside)."""
    s = Script(case_id, t0)
    filed = s.file(f"{case_id}-R1", ("D-CG", "D-ST"))  # two at once: whistled
    t1, t2 = s.task(1), s.task(2)
    cg, st = "dept:D-CG", "dept:D-ST"
    s.file(f"{case_id}-R2", minutes=10, distance_m=12.5)  # near-duplicate: merged
    s.archived(filed[0].data["report"]["photos"][0], 15, report_id=f"{case_id}-R1")
    due = s.state.tasks[t1].sign_due
    s.do(
        ev.WARN_DEADLINE,
        {"task_id": t1, "stage": "sign", "due_at": due, "fraction": 0.5},
        minutes=60,
    )
    s.do(ev.BREACH_DEADLINE, {"task_id": t1, "stage": "sign", "due_at": due}, minutes=121)
    s.do(
        ev.ESCALATE_TASK,
        {
            "task_id": t1,
            "stage": "sign",
            "due_at": due,
            "level": 1,
            "level_code": "village",
            "level_name": "村级",
        },
        minutes=122,
    )
    s.do(ev.SIGN_TASK, {"task_id": t1}, cg, minutes=150)  # late
    s.do(
        ev.SEND_BACK_TASK,
        {"task_id": t2, "reason": "属水利站职责", "reroute_to": "D-SL"},
        st,
        minutes=160,
    )
    t3, sl = s.task(3), "dept:D-SL"
    s.do(ev.SIGN_TASK, {"task_id": t3}, sl, minutes=170)
    s.do(ev.REQUEST_EXTENSION, {"task_id": t1, "days": 3, "reason": "需采购材料"}, cg, minutes=200)
    s.do(ev.DECIDE_EXTENSION, {"task_id": t1, "approve": True}, "supervisor:S1", minutes=210)
    s.do(ev.REQUEST_EXTENSION, {"task_id": t1, "days": 2, "reason": "再延"}, cg, minutes=220)
    s.do(
        ev.DECIDE_EXTENSION,
        {"task_id": t1, "approve": False, "reason": "不予延期"},
        "supervisor:S1",
        minutes=230,
    )
    s.do(
        ev.NOTE_PROGRESS,
        {"task_id": t1, "note": "清运中", "photos": [photo(f"{case_id}/progress.jpg")]},
        cg,
        minutes=240,
    )
    after = photo(f"{case_id}/after1.jpg")
    s.do(ev.RESOLVE_TASK, {"task_id": t1, "note": "已清理", "photos": [after]}, cg, minutes=300)
    s.do(ev.REJECT_TASK, {"task_id": t1, "reason": "垃圾仍在"}, WORKER, minutes=330)
    s.do(
        ev.RESOLVE_TASK,
        {"task_id": t1, "note": "已彻底清理", "photos": [photo(f"{case_id}/after2.jpg")]},
        cg,
        minutes=400,
    )
    s.archived({**after, "role": "after"}, 405, task_id=t1)
    s.do(ev.VERIFY_TASK, {"task_id": t1, "note": "核查通过"}, WORKER, minutes=420)
    s.do(ev.SIGN_TASK, {"task_id": t1}, cg, minutes=425)  # refused: already closed
    s.do(
        ev.WHISTLE_CASE,
        {"departments": ["D-HB"], "reason": "河道污染"},
        "supervisor:S1",
        minutes=430,
    )
    t4 = s.task(4)
    s.do(ev.CANCEL_TASK, {"task_id": t4, "reason": "已由水利站处置"}, "supervisor:S1", minutes=440)
    s.do(ev.NOTE_PROGRESS, {"task_id": t3, "note": "已到现场"}, sl, minutes=450)
    s.do(
        ev.RESOLVE_TASK,
        {"task_id": t3, "note": "已疏通", "photos": [photo(f"{case_id}/after3.jpg")]},
        sl,
        minutes=480,
    )
    s.do(ev.VERIFY_TASK, {"task_id": t3}, WORKER, minutes=500)  # → CaseClosed
    s.do(ev.RATE_CASE, {"score": 2, "comment": "不满意"}, WORKER, minutes=520)  # reopens both
    for minutes, (task, actor) in enumerate(((t1, cg), (t3, sl))):
        s.do(
            ev.RESOLVE_TASK,
            {"task_id": task, "note": "返工完成", "photos": [photo(f"{case_id}/{task}/redo.jpg")]},
            actor,
            minutes=600 + minutes,
        )
        s.do(ev.VERIFY_TASK, {"task_id": task}, WORKER, minutes=610 + minutes)
    s.do(ev.RATE_CASE, {"score": 5, "comment": "满意"}, WORKER, minutes=700)
    return s.events


def not_filed(case_id: str, t0: datetime = T0) -> list[Message]:
    """A report outside every grid: CaseNotFiled with the reason."""
    s = Script(case_id, t0)
    s.do(
        ev.REFUSE_REPORT,
        {
            "report": {
                "report_id": f"{case_id}-R1",
                "reporter": "resident:U9",
                "category_code": "E0102",
                "description": "路边垃圾",
                "lat": 31.9,
                "lon": 111.9,
                "photos": [],
            },
            "code": "outside_county",
            "reason_zh": "上报位置不在本县任何网格内",
            "reason_en": "the location is outside every grid of the county: (31.9, 111.9)",
        },
        actor="resident:U9",
    )
    return s.events


def records(
    events: Iterable[Message], topic: str, partition: int = 0, first_offset: int = 0
) -> list[Record]:
    """Events as consecutive records of one partition (timestamp = event time)."""
    out = []
    for i, e in enumerate(events):
        ms = int(e.at_dt.timestamp() * 1000)
        out.append(Record(topic, partition, first_offset + i, e.case_id.encode(), e.encode(), ms))
    return out


def interleaved(cases: list[list[Message]], topic: str, partitions: int = 4) -> list[Record]:
    """Many cases spread over partitions as Kafka would (case i → partition i % n), in time order
    across cases while each case keeps its own order."""
    by_partition: dict[int, list[Message]] = {p: [] for p in range(partitions)}
    for i, events in enumerate(cases):
        by_partition[i % partitions].extend(events)
    out: list[Record] = []
    for p, events in by_partition.items():
        events.sort(key=lambda e: (e.at, e.case_id, e.seq))
        out += records(events, topic, p)
    out.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return out
