"""Event and command schemas: the one home of what travels on the topics.

Every message is a JSON object with an envelope (id, type, case, time, actor)
and a `data` payload. Encoding is canonical (sorted keys, no spaces, UTF-8) so
that hashes over events are stable. `decode_*` raises `SchemaError` with a
human-readable reason; callers turn that into a dead letter, never a crash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A message that cannot be decoded or does not match its schema."""


# --- event types on the case-events topic (facts, past tense) ---------------
CASE_FILED = "CaseFiled"  # 立案
CASE_NOT_FILED = "CaseNotFiled"  # 不予立案 (outside every grid, unknown category, ...)
REPORT_MERGED = "ReportMerged"  # near-duplicate merged into an open case
TASK_DISPATCHED = "TaskDispatched"  # 派遣
PHOTO_ARCHIVED = "PhotoArchived"
TASK_SIGNED = "TaskSigned"  # 签收
TASK_PROGRESS_NOTED = "TaskProgressNoted"
TASK_RESOLVED = "TaskResolved"  # 办结
TASK_SENT_BACK = "TaskSentBack"  # 退单
TASK_VERIFIED = "TaskVerified"  # 核查通过
TASK_REOPENED = "TaskReopened"  # 核查不通过, 返工
TASK_CANCELLED = "TaskCancelled"
TASK_CLOSED = "TaskClosed"
CASE_RATED = "CaseRated"  # 回访满意度
CASE_CLOSED = "CaseClosed"  # 结案
EXTENSION_REQUESTED = "ExtensionRequested"  # 延期申请
EXTENSION_GRANTED = "ExtensionGranted"
EXTENSION_REFUSED = "ExtensionRefused"
CASE_WHISTLED = "CaseWhistled"  # 吹哨报到
DEADLINE_WARNED = "DeadlineWarned"  # 超时预警
DEADLINE_BREACHED = "DeadlineBreached"  # 超时
TASK_ESCALATED = "TaskEscalated"  # 升级督办
TASK_ASSIGNED = "TaskAssigned"  # 二次派遣: a department's task given to one of its staff
COMMAND_REFUSED = "CommandRefused"

EVENT_TYPES = frozenset(
    {
        CASE_FILED, CASE_NOT_FILED, REPORT_MERGED, TASK_DISPATCHED, PHOTO_ARCHIVED,
        TASK_SIGNED, TASK_PROGRESS_NOTED, TASK_RESOLVED, TASK_SENT_BACK, TASK_VERIFIED,
        TASK_REOPENED, TASK_CANCELLED, TASK_CLOSED, CASE_RATED, CASE_CLOSED,
        EXTENSION_REQUESTED, EXTENSION_GRANTED, EXTENSION_REFUSED, CASE_WHISTLED,
        DEADLINE_WARNED, DEADLINE_BREACHED, TASK_ESCALATED, COMMAND_REFUSED, TASK_ASSIGNED,
    }
)

# --- messages on the intake topics ------------------------------------------
REPORT_SUBMITTED = "ReportSubmitted"
REPORT_LOCATED = "ReportLocated"

# --- command types on the case-commands topic (imperative) ------------------
FILE_REPORT = "FileReport"
REFUSE_REPORT = "RefuseReport"
RECORD_PHOTO_ARCHIVED = "RecordPhotoArchived"
SIGN_TASK = "SignTask"
NOTE_PROGRESS = "NoteProgress"
RESOLVE_TASK = "ResolveTask"
SEND_BACK_TASK = "SendBackTask"
VERIFY_TASK = "VerifyTask"
REJECT_TASK = "RejectTask"  # verification failed
RATE_CASE = "RateCase"
CANCEL_TASK = "CancelTask"
REQUEST_EXTENSION = "RequestExtension"
DECIDE_EXTENSION = "DecideExtension"
WHISTLE_CASE = "WhistleCase"
WARN_DEADLINE = "WarnDeadline"
BREACH_DEADLINE = "BreachDeadline"
ESCALATE_TASK = "EscalateTask"
ASSIGN_TASK = "AssignTask"

COMMAND_TYPES = frozenset(
    {
        FILE_REPORT, REFUSE_REPORT, RECORD_PHOTO_ARCHIVED, SIGN_TASK, NOTE_PROGRESS,
        RESOLVE_TASK, SEND_BACK_TASK, VERIFY_TASK, REJECT_TASK, RATE_CASE, CANCEL_TASK,
        REQUEST_EXTENSION, DECIDE_EXTENSION, WHISTLE_CASE, WARN_DEADLINE, BREACH_DEADLINE,
        ESCALATE_TASK, ASSIGN_TASK,
    }
)


def utcnow() -> datetime:
    """Wall clock, for adapters only: the core takes `now` as an argument."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(value: Any, field_name: str = "timestamp") -> datetime:
    if not isinstance(value, str):
        raise SchemaError(f"{field_name} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchemaError(f"{field_name} is not ISO 8601: {value!r}") from exc
    if ts.tzinfo is None:
        raise SchemaError(f"{field_name} must carry a UTC offset: {value!r}")
    return ts.astimezone(UTC)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


# --- decoding: json.loads's results, through orjson where that gives the very same ----------

_json_loads = json.loads
_orjson_loads = orjson.loads
_OrjsonError = orjson.JSONDecodeError
# One pass over the bytes finds what orjson reads otherwise than json.loads although it reads
# it: each byte -> b"1" for an ASCII digit, b"2" for "[" or "{", b"0" for anything else.
# - orjson reads an integer outside [-2**63, 2**64 - 1] as a float, json.loads as an int. Every
#   integer of 18 digits or fewer is inside, so bytes without a run of 19 digits anywhere (in
#   strings too) have none; a hex id rarely has such a run, and then json.loads reads it.
# - json.loads raises RecursionError where a document's nesting and the caller's stack together
#   pass the recursion limit (1000 by default); orjson nests 1024 deep at any stack. A document
#   nests no deeper than half its length, nor than its count of "[" and "{": above _MAX_DEPTH
#   json.loads reads it (the two can then differ only for a caller already that many frames
#   from the limit, where json.loads fails on documents of any depth near it).
_CLASSES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x32 if b in b"[{" else 0x30 for b in range(256))
_LONG_DIGITS = b"1" * 19
_MAX_DEPTH = 256


def loads(raw: bytes | str) -> Any:
    """`json.loads(raw)`, faster: the same value (types, dict key order, the last of duplicate
    keys, floats to the bit) or the same exception. orjson reads what it reads exactly as json
    does; what it refuses (NaN / Infinity, floats beyond the double range, lone surrogates,
    invalid UTF-8, a BOM, UTF-16/32, and all invalid JSON) is read, or refused with json's own
    error, by json.loads. Integers beyond 64 bits (orjson: floats) and deep nesting (see
    _CLASSES) go to json.loads before orjson sees them. Input other than bytes or str
    (bytearray, memoryview, ...) goes to json.loads as it is. Tests: tests/unit/test_json_loads.py.
    """
    if type(raw) is bytes:
        b = raw
    elif type(raw) is str:
        try:
            b = raw.encode()
        except UnicodeEncodeError:  # lone surrogates: orjson refuses them, json reads them
            return _json_loads(raw)
    else:
        return _json_loads(raw)
    classes = b.translate(_CLASSES)
    if _LONG_DIGITS in classes or (len(b) > 2 * _MAX_DEPTH and classes.count(b"2") > _MAX_DEPTH):
        return _json_loads(raw)
    try:
        return _orjson_loads(b)
    except _OrjsonError:
        return _json_loads(raw)


def derived_id(*parts: str) -> str:
    """A deterministic id from its causes: retried work yields the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PhotoRef:
    """Claim-check: where an uploaded photo lies, and what it must hash to."""

    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str
    role: str = "before"  # before (report) | after (resolution)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhotoRef:
        try:
            ref = cls(
                bucket=str(d["bucket"]), key=str(d["key"]), size=int(d["size"]),
                sha256=str(d["sha256"]), content_type=str(d["content_type"]),
                role=str(d.get("role", "before")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"bad photo reference: {exc!r}") from exc
        if len(ref.sha256) != 64:
            raise SchemaError("photo sha256 must be 64 hex characters")
        return ref


@dataclass(frozen=True)
class Message:
    """Envelope shared by intake messages, commands and case events.

    seq and prev_hash are set on case events only: seq numbers a case's events
    1, 2, 3, ... and prev_hash is the hash of the case's previous event, which
    makes each case's history a tamper-evident chain.
    """

    id: str
    type: str
    case_id: str
    at: str  # event time, ISO 8601 UTC
    actor: str
    data: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
    causation_id: str = ""
    seq: int = 0
    prev_hash: str = ""

    @property
    def at_dt(self) -> datetime:
        return parse_ts(self.at, "at")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        # The same bytes as canonical_json(self.to_dict()) without asdict's deep copy of data.
        # Memoised: an event is encoded for its hash when it is made and again when it is sent
        # (a message is never changed after it is made; `replace` makes a new one).
        encoded = self.__dict__.get("_encoded")
        if encoded is None:
            encoded = canonical_json({name: getattr(self, name) for name in self.__dataclass_fields__})
            object.__setattr__(self, "_encoded", encoded)
        return encoded

    def hash(self) -> str:
        """Hash of this message's canonical content, which includes prev_hash."""
        return hashlib.sha256(self.encode()).hexdigest()


def decode_message(raw: bytes | str | dict[str, Any], allowed_types: frozenset[str] | None = None) -> Message:
    """Decode and check an envelope. Raises SchemaError with the reason."""
    if isinstance(raw, dict):
        obj: Any = raw
    elif raw is None:  # a record with no value (a tombstone): nothing to decode
        raise SchemaError("the record has no value")
    else:
        try:
            obj = loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError(f"message must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise SchemaError(f"unsupported schema version {schema!r} (this build reads {SCHEMA_VERSION})")
    for name in ("id", "type", "at", "actor"):
        if not isinstance(obj.get(name), str) or not obj.get(name):
            raise SchemaError(f"envelope field {name!r} is missing or not a non-empty string")
    if not isinstance(obj.get("case_id", ""), str):
        raise SchemaError("envelope field 'case_id' must be a string")
    if not isinstance(obj.get("data", {}), dict):
        raise SchemaError("envelope field 'data' must be an object")
    if allowed_types is not None and obj["type"] not in allowed_types:
        raise SchemaError(f"unknown message type {obj['type']!r}")
    parse_ts(obj["at"], "at")
    try:
        seq = int(obj.get("seq", 0))
    except (TypeError, ValueError) as exc:
        raise SchemaError("envelope field 'seq' must be an integer") from exc
    return Message(
        id=obj["id"], type=obj["type"], case_id=obj.get("case_id", ""), at=obj["at"],
        actor=obj["actor"], data=obj.get("data", {}), schema=schema,
        causation_id=str(obj.get("causation_id", "")), seq=seq,
        prev_hash=str(obj.get("prev_hash", "")),
    )


def dead_letter(source_topic: str, partition: int | None, offset: int | None, raw: bytes | None,
                reason: str, at: datetime) -> dict[str, Any]:
    """A dead-letter record: the original bytes (as text if UTF-8, else hex) and why."""
    raw = raw or b""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.hex(), "hex"
    return {
        "id": derived_id("dlq", source_topic, str(partition), str(offset), hashlib.sha256(raw).hexdigest()),
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "original": text,
        "original_encoding": encoding,
        "at": iso(at),
    }
