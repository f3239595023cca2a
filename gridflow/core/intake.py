"""Intake (受理/立案): validate a submitted report, then decide whether and where it is filed.

Pure: `now` is passed in. A malformed payload raises `ReportInvalid` (field, Chinese and
English reason); a well-formed report always yields a `Filing`, filed or not-filed with a
reason code, never silently dropped. Case ids are deterministic per report id and day.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gridflow.core.geo import locate
from gridflow.core.partitioning import CASE_PARTITIONS, partition_of
from gridflow.core.refdata import ReferenceData
from gridflow.core.routing import RouteDecision, route
from gridflow.events import PhotoRef, SchemaError, iso, parse_ts

CHINA_TZ = timezone(timedelta(hours=8), "CST")  # ticket dates are local (UTC+8) days

REPORT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
REPORTER_RE = re.compile(r"^(worker|resident):([A-Za-z0-9_.-]{1,64})(@\d{15})?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PHOTO_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/heic"})

DEFAULT_MAX_FUTURE = timedelta(minutes=10)  # phone clocks drift; more is a wrong clock
MAX_PHOTOS = 9
MAX_DESCRIPTION = 2000
MAX_ADDRESS = 200


class ReportInvalid(ValueError):
    """A submitted report that does not match the schema: which field, and why (zh + en)."""

    def __init__(self, field: str, reason_zh: str, reason_en: str) -> None:
        super().__init__(f"{field}: {reason_en}")
        self.field, self.reason_zh, self.reason_en = field, reason_zh, reason_en


@dataclass(frozen=True)
class Report:
    """A validated report: a grid worker's photo report or a resident's complaint."""

    report_id: str  # client-made; a retried upload carries the same id
    reporter: str  # "worker:<id>" or "resident:<id>" (as case actors are written)
    reporter_kind: str  # worker | resident
    reporter_id: str
    category_code: str
    description: str
    lat: float
    lon: float
    captured_at: datetime  # aware, UTC
    photos: tuple[PhotoRef, ...]
    severity: int | None = None  # None: the category's default
    address: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what `validate_report` accepts back)."""
        out: dict[str, Any] = {
            "report_id": self.report_id, "reporter": self.reporter,
            "category_code": self.category_code, "description": self.description,
            "lat": self.lat, "lon": self.lon, "captured_at": iso(self.captured_at),
            "photos": [asdict(p) for p in self.photos], "address": self.address,
        }
        if self.severity is not None:
            out["severity"] = self.severity
        return out


# --- validation ----------------------------------------------------------------------


def _bad(field: str, zh: str, en: str) -> ReportInvalid:
    return ReportInvalid(field, zh, en)


def _string(data: Mapping[str, Any], field: str, name_zh: str) -> str:
    if field not in data or data[field] is None:
        raise _bad(field, f"缺少必填项「{name_zh}」", "required field is missing")
    value = data[field]
    if not isinstance(value, str):
        raise _bad(field, f"「{name_zh}」必须是文本", f"must be a string, got {type(value).__name__}")
    return value


def _number(data: Mapping[str, Any], field: str, name_zh: str, lo: float, hi: float) -> float:
    if field not in data or data[field] is None:
        raise _bad(field, f"缺少必填项「{name_zh}」", "required field is missing")
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, f"「{name_zh}」必须是数字", f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _bad(field, f"「{name_zh}」超出范围({lo}~{hi})", f"must be between {lo} and {hi}")
    return float(value)


def _reporter(data: Mapping[str, Any]) -> tuple[str, str, str]:
    raw = _string(data, "reporter", "上报人")
    m = REPORTER_RE.match(raw)
    if not m:
        raise _bad("reporter", "上报人格式应为 worker:<编号> 或 resident:<编号>",
                   "must be 'worker:<id>' or 'resident:<id>'")
    kind, ident = m.group(1), m.group(2)
    return f"{kind}:{ident}", kind, ident


def _captured_at(data: Mapping[str, Any], now: datetime, max_future: timedelta) -> datetime:
    raw = _string(data, "captured_at", "拍摄时间")
    try:
        ts = parse_ts(raw, "captured_at")
    except SchemaError as exc:
        raise _bad("captured_at", "拍摄时间须为带时区的 ISO-8601 时间, 如 2026-11-23T09:30:00+08:00",
                   str(exc)) from exc
    if ts - now > max_future:
        minutes = int(max_future.total_seconds() // 60)
        raise _bad("captured_at", f"拍摄时间晚于当前时间超过{minutes}分钟, 请校准手机时间",
                   f"is more than {minutes} minutes in the future (now {iso(now)})")
    return ts


def _photo(item: Any, index: int) -> PhotoRef:
    field = f"photos[{index}]"
    if not isinstance(item, Mapping):
        raise _bad(field, "照片引用必须是对象", "a photo reference must be an object")
    try:
        ref = PhotoRef.from_dict(dict(item))
    except SchemaError as exc:
        raise _bad(field, "照片引用不完整或格式错误", str(exc)) from exc
    if not SHA256_RE.match(ref.sha256):
        raise _bad(field, "照片校验值(sha256)格式错误", "sha256 must be 64 lowercase hex digits")
    if ref.size <= 0:
        raise _bad(field, "照片大小必须大于0", "size must be positive")
    if ref.content_type not in PHOTO_CONTENT_TYPES:
        raise _bad(field, "照片格式仅支持 JPEG/PNG/HEIC",
                   f"content_type {ref.content_type!r} is not one of {sorted(PHOTO_CONTENT_TYPES)}")
    return PhotoRef(ref.bucket, ref.key, ref.size, ref.sha256, ref.content_type, "before")


def _photos(data: Mapping[str, Any], kind: str, max_photos: int) -> tuple[PhotoRef, ...]:
    raw = data.get("photos", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _bad("photos", "照片必须是列表", "must be a list")
    low = 1 if kind == "worker" else 0
    if not low <= len(raw) <= max_photos:
        zh = f"网格员上报须附1至{max_photos}张照片" if low else f"最多上传{max_photos}张照片"
        raise _bad("photos", zh, f"{kind} reports carry {low} to {max_photos} photos, got {len(raw)}")
    return tuple(_photo(item, i) for i, item in enumerate(raw))


def _optional_severity(data: Mapping[str, Any]) -> int | None:
    value = data.get("severity")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("severity", "紧急程度必须是整数(1一般 2较大 3重大)", "must be an integer")
    return value


def validate_report(
    data: Mapping[str, Any], now: datetime, *, max_future: timedelta = DEFAULT_MAX_FUTURE,
    max_photos: int = MAX_PHOTOS, max_description: int = MAX_DESCRIPTION,
) -> Report:
    """Check a submitted report payload (the ReportSubmitted data). Raises ReportInvalid.

    Fields: report_id, reporter ("worker:<id>" | "resident:<id>"), category_code,
    description, lat, lon, captured_at (ISO-8601 with offset), photos (list of PhotoRef
    dicts; 1-9 for grid workers, 0-9 for residents); optional severity, address.
    Unknown fields are ignored.
    """
    if not isinstance(data, Mapping):
        raise _bad("$", "上报内容必须是 JSON 对象", "the report must be a JSON object")
    report_id = _string(data, "report_id", "上报编号")
    if not REPORT_ID_RE.match(report_id):
        raise _bad("report_id", "上报编号须为8至64位字母、数字、下划线或连字符",
                   "must be 8-64 characters of [A-Za-z0-9_-]")
    reporter, kind, ident = _reporter(data)
    category = _string(data, "category_code", "问题类别").strip()
    if not category:
        raise _bad("category_code", "缺少必填项「问题类别」", "must not be empty")
    description = _string(data, "description", "问题描述").strip()
    if len(description) > max_description:
        raise _bad("description", f"问题描述不能超过{max_description}字",
                   f"at most {max_description} characters, got {len(description)}")
    address = data.get("address") or ""
    if not isinstance(address, str) or len(address) > MAX_ADDRESS:
        raise _bad("address", f"地址须为不超过{MAX_ADDRESS}字的文本",
                   f"must be a string of at most {MAX_ADDRESS} characters")
    return Report(
        report_id=report_id, reporter=reporter, reporter_kind=kind, reporter_id=ident,
        category_code=category, description=description,
        lat=_number(data, "lat", "纬度", -90.0, 90.0),
        lon=_number(data, "lon", "经度", -180.0, 180.0),
        captured_at=_captured_at(data, now, max_future),
        photos=_photos(data, kind, max_photos), severity=_optional_severity(data),
        address=address.strip(),
    )


# --- filing -----------------------------------------------------------------------

NOT_FILED_REASONS: dict[str, tuple[str, str]] = {
    "outside_county": ("上报位置不在本县任何网格内", "the location is outside every grid of the county"),
    "unknown_category": ("未知的问题类别", "unknown category"),
    "category_disabled": ("该问题类别已停用", "the category is disabled"),
    "unknown_worker": ("上报网格员不存在", "the reporting grid worker is unknown"),
    "worker_suspended": ("上报网格员账号已停用", "the reporting grid worker is suspended"),
    "severity_not_allowed": ("该类别不适用所选紧急程度", "the severity is not allowed for the category"),
}


@dataclass(frozen=True)
class Filing:
    """The intake decision: filed (located and routed) or not filed, with the reason."""

    filed: bool
    case_id: str
    report_id: str
    reporter: str
    category_code: str
    filed_at: datetime
    category_name: str = ""
    severity: int = 0
    grid_code: str = ""
    grid_name: str = ""
    village_code: str = ""
    township_code: str = ""
    cross_grid: bool = False  # a grid worker reported outside their own grid
    worker_grid_code: str = ""  # the reporting worker's own grid
    departments: tuple[str, ...] = ()
    route: RouteDecision | None = None
    reason_code: str = ""  # when not filed: a key of NOT_FILED_REASONS
    reason_zh: str = ""
    reason_en: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the FileReport / RefuseReport command data (without the report)."""
        out: dict[str, Any] = {
            "filed": self.filed, "case_id": self.case_id, "report_id": self.report_id,
            "reporter": self.reporter, "category_code": self.category_code,
            "filed_at": iso(self.filed_at),
        }
        if not self.filed:
            return {**out, "code": self.reason_code, "reason_code": self.reason_code,
                    "reason_zh": self.reason_zh, "reason_en": self.reason_en}
        out.update({
            "category_name": self.category_name, "severity": self.severity,
            "grid_code": self.grid_code, "grid_name": self.grid_name,
            "village_code": self.village_code, "township_code": self.township_code,
            "cross_grid": self.cross_grid, "worker_grid_code": self.worker_grid_code,
        })
        if self.route is not None:
            out.update(self.route.to_dict())
        return out


CASE_ID_RE = re.compile(r"^AJ\d{8}-[A-Z2-7]{8}$")
_PLACEMENT_TRIES = 64  # a case id misses its township's partition 64 times: 1 in 10^8 (of 4)


def case_id_for(report_id: str, filed_at: datetime, township: str = "",
                partitions: int = CASE_PARTITIONS) -> str:
    """Readable ticket number: AJ + local (UTC+8) date + '-' + 8 base32 chars of the report id hash.

    Deterministic: the same report id on the same day (and township) always gets the same case
    id. With a township, the 8 characters are the first of sha256(report_id), sha256(report_id
    + "#1"), ... whose case id Kafka's partitioner puts on the township's partition
    (partitioning.partition_of), so the case's commands and events share the partition of the
    township's reports and recent cases, and the worker files the report and decides the case
    in one step (issue 16). Where a case id lands is only ever a matter of speed: commands are
    routed by the case id whatever it is."""
    if filed_at.tzinfo is None:
        raise ValueError("filed_at must be timezone-aware")
    day = f"AJ{filed_at.astimezone(CHINA_TZ):%Y%m%d}-"
    first = day + _tag(report_id)
    if not township:
        return first
    want = partition_of(township, partitions)
    if partition_of(first, partitions) == want:
        return first
    for attempt in range(1, _PLACEMENT_TRIES):
        case_id = day + _tag(f"{report_id}#{attempt}")
        if partition_of(case_id, partitions) == want:
            return case_id
    return first


def _tag(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.b32encode(digest[:5]).decode("ascii")  # 40 bits -> exactly 8 chars


def ticket_for(ref: ReferenceData, report_id: str, lat: Any, lon: Any, at: datetime) -> str:
    """The ticket number (case id) the API answers for a report and publishes in its
    ReportSubmitted: placed on the partition of the township its position is in
    (`case_id_for`), or as before when it has none in the county. The worker files the report
    under exactly this id."""
    return case_id_for(report_id, at, township_at(ref, lat, lon))


def township_at(ref: ReferenceData, lat: Any, lon: Any) -> str:
    """The code of the township a position is in, or "" (none in the county, not a number)."""
    try:
        grid = locate(ref, float(lat), float(lon))
    except (TypeError, ValueError):
        grid = None
    return grid.township_code if grid is not None else ""


def report_key(ref: ReferenceData, report_id: str, lat: Any, lon: Any) -> str:
    """The key a ReportSubmitted is published under: the code of the township its position is
    in, or its report id when it has no position in the county.

    Keyed by township, a report lands on the partition that holds its township's recent cases,
    so the worker validates, locates, looks for a near-duplicate and files it in one step
    (processors.steps.intake_and_file_step) instead of handing it through
    `<p>.reports-located` first (issue 16). Pure and cheap: one point-in-polygon lookup."""
    return township_at(ref, lat, lon) or report_id


def _not_filed(report: Report, now: datetime, case_id: str, code: str, detail: str = "",
               ) -> Filing:
    zh, en = NOT_FILED_REASONS[code]
    return Filing(
        filed=False, case_id=case_id or case_id_for(report.report_id, now),
        report_id=report.report_id,
        reporter=report.reporter, category_code=report.category_code, filed_at=now,
        reason_code=code, reason_zh=zh, reason_en=f"{en}{detail}",
    )


def file_report(ref: ReferenceData, report: Report, now: datetime, case_id: str = "") -> Filing:
    """Decide a validated report: where it is (grid, village, township), who handles it.
    `case_id`: the ticket the API answered (`ticket_for`, carried by the ReportSubmitted);
    without one (a log written before), `case_id_for` the report id and day."""
    category = ref.categories.get(report.category_code)
    if category is None:
        return _not_filed(report, now, case_id, "unknown_category", f": {report.category_code}")
    if not category.enabled:
        return _not_filed(report, now, case_id, "category_disabled", f": {category.code} {category.note}")
    worker_grid = ""
    if report.reporter_kind == "worker":
        worker = ref.workers.get(report.reporter_id)
        if worker is None:
            return _not_filed(report, now, case_id, "unknown_worker", f": {report.reporter_id}")
        if not worker.active:
            return _not_filed(report, now, case_id, "worker_suspended", f": {report.reporter_id}")
        worker_grid = worker.grid_code
    severity = category.default_severity if report.severity is None else report.severity
    if severity not in category.severities:
        return _not_filed(report, now, case_id, "severity_not_allowed",
                          f": {severity} not in {list(category.severities)}")
    grid = locate(ref, report.lat, report.lon)
    if grid is None:
        return _not_filed(report, now, case_id, "outside_county", f": ({report.lat}, {report.lon})")
    decision = route(ref, category.code, grid)
    return Filing(
        filed=True, case_id=case_id or case_id_for(report.report_id, now),
        report_id=report.report_id,
        reporter=report.reporter, category_code=category.code, filed_at=now,
        category_name=category.name, severity=severity, grid_code=grid.code,
        grid_name=grid.name, village_code=grid.village_code, township_code=grid.township_code,
        cross_grid=bool(worker_grid) and worker_grid != grid.code, worker_grid_code=worker_grid,
        departments=decision.departments, route=decision,
    )
