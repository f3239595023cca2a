"""Every message type as a frozen, typed class: its payload fields, its Chinese label and, for an
event, the command whose decision it records. The one home of these facts.

Guarantee: a payload decodes (`decode_payload`) from the `data` its type has been written with
by every earlier build, and `to_data()` gives back exactly that `data` for the fields it knows:
a field written only sometimes (added later, or set only in some cases) is `UNSET` when a
record lacks it and is then left out again, so a record that lacks it encodes as before.
Fields the aggregate checks itself, refusing a command with a reason in Chinese and English
(a score, extension days, photos, departments), are typed `Any` so that a bad value reaches
the aggregate instead of the dead letters. Unknown fields are ignored by the typed form and
kept in the message's data, so they are hashed, stored and passed on as written.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType


class SchemaError(ValueError):
    """A message that cannot be decoded or does not match its schema."""


class Payload(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A message's payload. TYPE is the envelope's `type`; LABEL_ZH what a person reads."""

    TYPE: ClassVar[str] = ""
    LABEL_ZH: ClassVar[str] = ""
    KIND: ClassVar[str] = ""  # "event" | "command" | "intake"

    def to_data(self) -> dict[str, Any]:
        """The JSON form (UNSET fields left out): the message's `data`."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


class Event(Payload, frozen=True, kw_only=True):
    """A fact on the case-events topic (past tense)."""

    KIND: ClassVar[str] = "event"
    # The command a command's first event of this type reveals (accepted outcomes carry no
    # command type); "" for events no command decides (TaskClosed) or many (CommandRefused).
    COMMAND: ClassVar[str] = ""


class Command(Payload, frozen=True, kw_only=True):
    """A request on the case-commands topic (imperative), decided by gridflow.core.case."""

    KIND: ClassVar[str] = "command"


class Intake(Payload, frozen=True, kw_only=True):
    """A message on the intake topics (reports, reports-located)."""

    KIND: ClassVar[str] = "intake"


def as_data(part: Any) -> Any:
    """The JSON form of a payload or a part of one (UNSET fields left out)."""
    return msgspec.to_builtins(part)


def given(value: Any, default: Any = "") -> Any:
    """`value`, or `default` when it is UNSET (a field the record does not carry)."""
    return default if value is UNSET else value


# --- parts ------------------------------------------------------------------------------------


class PhotoData(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A photo reference inside a payload (claim check), as the aggregate writes it."""

    bucket: str | None = None
    key: str | None = None
    size: int | None = None
    sha256: str = ""
    content_type: str | None = None
    role: str | UnsetType = UNSET


class ReportData(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the read side takes from a report (`report` of CaseFiled, ReportMerged,
    CaseNotFiled, FileReport, RefuseReport, ReportLocated): the report itself stays the dict
    the intake received (it carries the phone's and the resident's own fields), this is its
    typed view (`report_of`)."""

    report_id: str | None = None
    reporter: str | None = None
    source: str | None = None
    category_code: str | None = None
    description: str | None = None
    address: str | None = None
    lat: float | None = None
    lon: float | None = None
    captured_at: str | None = None
    submitted_at: str | None = None
    photos: list[PhotoData] = msgspec.field(default_factory=list)


def report_of(report: dict[str, Any]) -> ReportData:
    """The typed view of a report dict (SchemaError when a field has the wrong type)."""
    try:
        return msgspec.convert(report, ReportData)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"bad report: {exc}") from exc


class Exif(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A photo's EXIF facts ({} when none were read: a missing or corrupt original)."""

    taken_at: str | None | UnsetType = UNSET
    lat: float | None | UnsetType = UNSET
    lon: float | None | UnsetType = UNSET


class WhistledTask(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    task_id: str
    department: str
    sign_due: str
    resolve_due: str


# --- intake -----------------------------------------------------------------------------------


class ReportSubmitted(Intake, frozen=True, kw_only=True):
    """A grid worker's or a resident's report, as the API took it in. Checked in full by
    gridflow.core.intake.validate_report, which names the field and the reason (hence `Any`);
    channel-specific fields (device, contact, media_url, ...) ride along in the data."""

    TYPE: ClassVar[str] = "ReportSubmitted"
    LABEL_ZH: ClassVar[str] = "上报"

    report_id: Any = UNSET
    reporter: Any = UNSET
    category_code: Any = UNSET
    description: Any = UNSET
    lat: Any = UNSET
    lon: Any = UNSET
    captured_at: Any = UNSET
    photos: Any = UNSET
    severity: Any = UNSET
    address: Any = UNSET
    source: str | UnsetType = UNSET
    channel: str | UnsetType = UNSET
    worker_grid_code: str | UnsetType = UNSET


class FilingFacts(Payload, frozen=True, kw_only=True):
    """A located report: the report and the intake's decision (gridflow.core.intake.Filing
    .to_dict, with the route's gridflow.core.routing.RouteDecision.to_dict)."""

    report: dict[str, Any]
    category_code: str
    filed: bool | UnsetType = UNSET
    case_id: str | UnsetType = UNSET
    report_id: str | UnsetType = UNSET
    reporter: str | UnsetType = UNSET
    filed_at: str | UnsetType = UNSET
    category_name: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET
    grid_code: str | UnsetType = UNSET
    grid_name: str | UnsetType = UNSET
    village_code: str | UnsetType = UNSET
    township_code: str | UnsetType = UNSET
    cross_grid: bool | UnsetType = UNSET
    worker_grid_code: str | UnsetType = UNSET
    departments: list[str] | UnsetType = UNSET
    lead_department: str | UnsetType = UNSET
    multi_department: bool | UnsetType = UNSET
    routing_source: str | UnsetType = UNSET
    routing_rule: int | None | UnsetType = UNSET
    routing_reason: str | UnsetType = UNSET
    routing_reason_zh: str | UnsetType = UNSET


class ReportLocated(FilingFacts, Intake, frozen=True, kw_only=True):
    """A checked report with its place and route, keyed by township for the filing agent."""

    TYPE: ClassVar[str] = "ReportLocated"
    LABEL_ZH: ClassVar[str] = "定位派遣"


# --- events -----------------------------------------------------------------------------------


class CaseFiled(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CaseFiled"
    LABEL_ZH: ClassVar[str] = "立案"
    COMMAND: ClassVar[str] = "FileReport"

    report: dict[str, Any]
    category_code: str = ""
    category_name: str = ""
    severity: int = 1
    grid_code: str = ""
    village_code: str = ""
    township_code: str = ""
    cross_grid: bool = False
    departments: list[str] = msgspec.field(default_factory=list)
    routing_reason: str = ""
    # filing facts, carried through when the intake supplies them
    grid_name: str | UnsetType = UNSET
    worker_grid_code: str | UnsetType = UNSET
    lead_department: str | UnsetType = UNSET
    multi_department: bool | UnsetType = UNSET
    routing_source: str | UnsetType = UNSET
    routing_rule: int | None | UnsetType = UNSET
    routing_reason_zh: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        report_of(self.report)  # the report's fields have their types (SchemaError)


class CaseNotFiled(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CaseNotFiled"
    LABEL_ZH: ClassVar[str] = "不予立案"
    COMMAND: ClassVar[str] = "RefuseReport"

    report: dict[str, Any]
    code: str = ""
    reason_zh: str = ""
    reason_en: str = ""

    def __post_init__(self) -> None:
        report_of(self.report)  # the report's fields have their types (SchemaError)


class ReportMerged(Event, frozen=True, kw_only=True):
    """A near-duplicate report joined to an open case."""

    TYPE: ClassVar[str] = "ReportMerged"
    LABEL_ZH: ClassVar[str] = "合并上报"
    COMMAND: ClassVar[str] = "FileReport"

    report: dict[str, Any]
    distance_m: float | None = None
    case_status: str = ""

    def __post_init__(self) -> None:
        report_of(self.report)  # the report's fields have their types (SchemaError)


class TaskDispatched(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskDispatched"
    LABEL_ZH: ClassVar[str] = "派遣"

    task_id: str
    department: str = ""
    reason: str = ""  # routing | sent_back | whistle
    sign_due: str = ""
    resolve_due: str = ""
    whistled: bool = False
    category_code: str = ""
    severity: int = 0
    grid_code: str = ""
    replaces_task: str | UnsetType = UNSET  # a send-back's re-routed task
    clock: str | UnsetType = UNSET  # restarted | inherited (a send-back's)


class PhotoArchiveFacts(Payload, frozen=True, kw_only=True):
    """What the archive agent found and wrote for one photo (processors/archive.py): the
    fields of RecordPhotoArchived, which the case records as PhotoArchived."""

    source_bucket: str | None = None
    source_key: str | None = None
    sha256: str = ""
    size: int | None = None
    role: str = ""
    status: str = ""  # archived | missing | corrupt
    problem: str | UnsetType = UNSET
    archive_bucket: str = ""
    archive_key: str = ""
    thumbnail_key: str = ""
    archive_version_id: str | UnsetType = UNSET
    thumbnail_version_id: str | UnsetType = UNSET
    lock_mode: str | UnsetType = UNSET
    retain_until: str | UnsetType = UNSET
    width: int | None | UnsetType = UNSET
    height: int | None | UnsetType = UNSET
    exif: Exif = msgspec.field(default_factory=Exif)
    report_id: str = ""
    task_id: str = ""


class PhotoArchived(PhotoArchiveFacts, Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "PhotoArchived"
    LABEL_ZH: ClassVar[str] = "照片归档"
    COMMAND: ClassVar[str] = "RecordPhotoArchived"


class TaskSigned(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskSigned"
    LABEL_ZH: ClassVar[str] = "签收"
    COMMAND: ClassVar[str] = "SignTask"

    task_id: str
    department: str = ""
    on_time: bool | None = None
    dispatched_at: str | UnsetType = UNSET
    resolve_due: str | UnsetType = UNSET
    category_code: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET


class TaskProgressNoted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskProgressNoted"
    LABEL_ZH: ClassVar[str] = "处置进展"
    COMMAND: ClassVar[str] = "NoteProgress"

    task_id: str
    note: str = ""
    photos: list[PhotoData] = msgspec.field(default_factory=list)


class TaskResolved(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskResolved"
    LABEL_ZH: ClassVar[str] = "办结"
    COMMAND: ClassVar[str] = "ResolveTask"

    task_id: str
    department: str = ""
    note: str = ""
    photos: list[PhotoData] = msgspec.field(default_factory=list)
    on_time: bool | None = None
    verify_due: str = ""
    category_code: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET


class TaskSentBack(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskSentBack"
    LABEL_ZH: ClassVar[str] = "退单"
    COMMAND: ClassVar[str] = "SendBackTask"

    task_id: str
    department: str = ""
    reason: str = ""
    reroute_to: str = ""


class TaskVerified(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskVerified"
    LABEL_ZH: ClassVar[str] = "核查通过"
    COMMAND: ClassVar[str] = "VerifyTask"

    task_id: str
    department: str = ""
    note: str | UnsetType = UNSET
    photos: list[PhotoData] | UnsetType = UNSET


class TaskReopened(Event, frozen=True, kw_only=True):
    """Rework (返工): a failed verification, or an unsatisfied rating."""

    TYPE: ClassVar[str] = "TaskReopened"
    LABEL_ZH: ClassVar[str] = "返工"
    COMMAND: ClassVar[str] = "RejectTask"

    task_id: str
    department: str = ""
    reason: str = ""
    reopened: int = 0
    resolve_due: str = ""
    category_code: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET
    photos: list[PhotoData] | UnsetType = UNSET  # what the grid worker photographed on site


class TaskCancelled(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskCancelled"
    LABEL_ZH: ClassVar[str] = "撤销"
    COMMAND: ClassVar[str] = "CancelTask"

    task_id: str
    department: str = ""
    reason: str = ""


class TaskClosed(Event, frozen=True, kw_only=True):
    """A task closed without verification (no build writes it today; the read side folds it)."""

    TYPE: ClassVar[str] = "TaskClosed"
    LABEL_ZH: ClassVar[str] = "任务关闭"

    task_id: str


class CaseRated(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CaseRated"
    LABEL_ZH: ClassVar[str] = "回访评价"
    COMMAND: ClassVar[str] = "RateCase"

    score: int | None = None
    comment: str = ""


class CaseClosed(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CaseClosed"
    LABEL_ZH: ClassVar[str] = "结案"

    tasks: list[str] = msgspec.field(default_factory=list)


class ExtensionRequested(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "ExtensionRequested"
    LABEL_ZH: ClassVar[str] = "延期申请"
    COMMAND: ClassVar[str] = "RequestExtension"

    task_id: str
    department: str = ""
    request_id: str = ""
    days: int | float | None = None
    reason: str = ""


class ExtensionGranted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "ExtensionGranted"
    LABEL_ZH: ClassVar[str] = "批准延期"
    COMMAND: ClassVar[str] = "DecideExtension"

    task_id: str
    department: str = ""
    request_id: str = ""
    days: int | float | None = None
    previous_due: str = ""
    resolve_due: str = ""
    category_code: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET


class ExtensionRefused(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "ExtensionRefused"
    LABEL_ZH: ClassVar[str] = "驳回延期"
    COMMAND: ClassVar[str] = "DecideExtension"

    task_id: str
    department: str = ""
    request_id: str = ""
    reason: str = ""


class CaseWhistled(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CaseWhistled"
    LABEL_ZH: ClassVar[str] = "吹哨报到"
    COMMAND: ClassVar[str] = "WhistleCase"

    departments: list[str] = msgspec.field(default_factory=list)
    reason: str = ""
    grid_code: str | UnsetType = UNSET
    tasks: list[WhistledTask] | UnsetType = UNSET


class DeadlineWarned(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "DeadlineWarned"
    LABEL_ZH: ClassVar[str] = "超时预警"
    COMMAND: ClassVar[str] = "WarnDeadline"

    task_id: str
    department: str = ""
    stage: str = ""
    due_at: str = ""
    fraction: float | None = None


class DeadlineBreached(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "DeadlineBreached"
    LABEL_ZH: ClassVar[str] = "超时"
    COMMAND: ClassVar[str] = "BreachDeadline"

    task_id: str
    department: str = ""
    stage: str = ""
    due_at: str = ""


class TaskEscalated(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "TaskEscalated"
    LABEL_ZH: ClassVar[str] = "升级督办"
    COMMAND: ClassVar[str] = "EscalateTask"

    task_id: str
    department: str = ""
    level: int | None = None
    level_code: str = ""
    level_name: str = ""
    notify: list[str] = msgspec.field(default_factory=list)
    stage: str = ""
    reason: str = ""
    grid_code: str | UnsetType = UNSET


class TaskAssigned(Event, frozen=True, kw_only=True):
    """二次派遣: a department's task given to one of its staff."""

    TYPE: ClassVar[str] = "TaskAssigned"
    LABEL_ZH: ClassVar[str] = "二次派遣"
    COMMAND: ClassVar[str] = "AssignTask"

    task_id: str
    department: str = ""
    assignee: str = ""
    assignee_name: str = ""
    previous: str = ""
    by: str = ""
    by_name: str = ""


class CommandRefused(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CommandRefused"
    LABEL_ZH: ClassVar[str] = "操作未执行"

    command_id: str = ""
    command_type: str = ""
    task_id: str = ""
    code: str = ""
    reason_zh: str = ""
    reason_en: str = ""


# --- commands ---------------------------------------------------------------------------------


class FileReport(FilingFacts, Command, frozen=True, kw_only=True):
    """File a located report as a case, or join it to the open case it duplicates."""

    TYPE: ClassVar[str] = "FileReport"
    LABEL_ZH: ClassVar[str] = "立案"

    distance_m: float | None | UnsetType = UNSET  # a near-duplicate's distance from its case
    own_case_id: str | UnsetType = UNSET  # where a near-duplicate goes if its case closed


class RefuseReport(Command, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "RefuseReport"
    LABEL_ZH: ClassVar[str] = "不予立案"

    report: dict[str, Any] | UnsetType = UNSET
    code: str | UnsetType = UNSET
    reason_zh: str | UnsetType = UNSET
    reason_en: str | UnsetType = UNSET


class RecordPhotoArchived(PhotoArchiveFacts, Command, frozen=True, kw_only=True):
    """What the archive agent found and wrote (its fields become PhotoArchived's).

    `event_seq`: the seq of the case event whose photo this is. A case whose state is behind
    it (its state lost in a crash after its events reached the log, and not decided again yet)
    holds the command in its state until it has that event, instead of deciding it against the
    older state (gridflow.core.case.decide). `waited`: the rounds such a command went through
    case-commands before commands waited in the state; written no more, read (at WAIT_LIMIT
    it is decided as the state is). Both absent in commands written before they existed."""

    TYPE: ClassVar[str] = "RecordPhotoArchived"
    LABEL_ZH: ClassVar[str] = "照片归档"

    event_seq: int | UnsetType = UNSET
    waited: int | UnsetType = UNSET


class PersonCommand(Command, frozen=True, kw_only=True):
    """A command a person gives through the API (or one like it).

    `seen_seq`: the seq of the case's last event in the read models when the API accepted it.
    A case whose state is behind it lost that state in a crash after its events reached the
    log, and the input that decided them is being read again: the case holds the command in
    its state until it has that event, and then decides it under its own id, instead of
    deciding it against the older state (gridflow.core.case.decide). `waited`: as in
    RecordPhotoArchived, read only. Both absent in commands written before they existed."""

    seen_seq: int | UnsetType = UNSET
    waited: int | UnsetType = UNSET


class TaskCommand(PersonCommand, frozen=True, kw_only=True):
    """A command about one task of the case (an unknown task id is refused with a reason)."""

    task_id: str | UnsetType = UNSET


class SignTask(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "SignTask"
    LABEL_ZH: ClassVar[str] = "签收"

    note: str | UnsetType = UNSET


class NoteProgress(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "NoteProgress"
    LABEL_ZH: ClassVar[str] = "填报进展"

    note: str | UnsetType = UNSET
    photos: Any = UNSET


class ResolveTask(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "ResolveTask"
    LABEL_ZH: ClassVar[str] = "办结"

    note: str | UnsetType = UNSET
    photos: Any = UNSET


class SendBackTask(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "SendBackTask"
    LABEL_ZH: ClassVar[str] = "退单"

    reason: str | UnsetType = UNSET
    reroute_to: str | UnsetType = UNSET


class VerifyTask(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "VerifyTask"
    LABEL_ZH: ClassVar[str] = "核查"

    note: str | UnsetType = UNSET
    photos: Any = UNSET


class RejectTask(TaskCommand, frozen=True, kw_only=True):
    """Verification failed on site: the task goes back for rework."""

    TYPE: ClassVar[str] = "RejectTask"
    LABEL_ZH: ClassVar[str] = "核查不通过"

    reason: str | UnsetType = UNSET
    photos: Any = UNSET


class RateCase(PersonCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "RateCase"
    LABEL_ZH: ClassVar[str] = "回访评价"

    score: Any = UNSET
    comment: str | UnsetType = UNSET


class CancelTask(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "CancelTask"
    LABEL_ZH: ClassVar[str] = "撤销"

    reason: str | UnsetType = UNSET


class RequestExtension(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "RequestExtension"
    LABEL_ZH: ClassVar[str] = "延期申请"

    days: Any = UNSET
    reason: str | UnsetType = UNSET


class DecideExtension(TaskCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "DecideExtension"
    LABEL_ZH: ClassVar[str] = "延期审批"

    approve: Any = UNSET  # only True grants
    reason: str | UnsetType = UNSET


class WhistleCase(PersonCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "WhistleCase"
    LABEL_ZH: ClassVar[str] = "吹哨报到"

    departments: Any = UNSET
    reason: str | UnsetType = UNSET


class DeadlineCommand(TaskCommand, frozen=True, kw_only=True):
    """A deadline instant of a task stage (gridflow.core.deadlines.DueItem.command_data)."""

    stage: str | UnsetType = UNSET
    due_at: str | UnsetType = UNSET
    item_id: str | UnsetType = UNSET


class WarnDeadline(DeadlineCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "WarnDeadline"
    LABEL_ZH: ClassVar[str] = "超时预警"

    fraction: float | None | UnsetType = UNSET


class BreachDeadline(DeadlineCommand, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "BreachDeadline"
    LABEL_ZH: ClassVar[str] = "超时"


class EscalateTask(DeadlineCommand, frozen=True, kw_only=True):
    """One ladder level up: from the deadline agent (stale ones are dropped) or a supervisor."""

    TYPE: ClassVar[str] = "EscalateTask"
    LABEL_ZH: ClassVar[str] = "升级督办"

    level: int | UnsetType = UNSET
    level_code: str | UnsetType = UNSET
    level_name: str | UnsetType = UNSET
    notify: list[str] | UnsetType = UNSET
    reason: str | UnsetType = UNSET


class AssignTask(TaskCommand, frozen=True, kw_only=True):
    """二次派遣: the department gives its task to one of its staff."""

    TYPE: ClassVar[str] = "AssignTask"
    LABEL_ZH: ClassVar[str] = "分派"

    assignee: str | UnsetType = UNSET
    assignee_name: str | UnsetType = UNSET
    by: str | UnsetType = UNSET
    by_name: str | UnsetType = UNSET


# --- the catalogue --------------------------------------------------------------------------

INTAKES: tuple[type[Intake], ...] = (ReportSubmitted, ReportLocated)
EVENTS: tuple[type[Event], ...] = (
    CaseFiled, CaseNotFiled, ReportMerged, TaskDispatched, PhotoArchived, TaskSigned,
    TaskProgressNoted, TaskResolved, TaskSentBack, TaskVerified, TaskReopened, TaskCancelled,
    TaskClosed, CaseRated, CaseClosed, ExtensionRequested, ExtensionGranted, ExtensionRefused,
    CaseWhistled, DeadlineWarned, DeadlineBreached, TaskEscalated, TaskAssigned, CommandRefused,
)
COMMANDS: tuple[type[Command], ...] = (
    FileReport, RefuseReport, RecordPhotoArchived, SignTask, NoteProgress, ResolveTask,
    SendBackTask, VerifyTask, RejectTask, RateCase, CancelTask, RequestExtension,
    DecideExtension, WhistleCase, WarnDeadline, BreachDeadline, EscalateTask, AssignTask,
)
PAYLOADS: dict[str, type[Payload]] = {c.TYPE: c for c in (*INTAKES, *EVENTS, *COMMANDS)}

EVENT_TYPES = frozenset(c.TYPE for c in EVENTS)
COMMAND_TYPES = frozenset(c.TYPE for c in COMMANDS)
EVENT_LABELS_ZH: dict[str, str] = {c.TYPE: c.LABEL_ZH for c in EVENTS}
COMMAND_LABELS_ZH: dict[str, str] = {c.TYPE: c.LABEL_ZH for c in COMMANDS}
# The command a command's first event reveals (accepted outcomes carry no command type).
COMMAND_OF_EVENT: dict[str, str] = {c.TYPE: c.COMMAND for c in EVENTS if c.COMMAND}


def label_zh(type_: str) -> str:
    """The Chinese label of a message type; the type itself when this build does not know it."""
    cls = PAYLOADS.get(type_)
    return cls.LABEL_ZH if cls is not None else type_


def decode_payload(type_: str, data: Any) -> Payload:
    """The typed payload of a `type_` message with this `data`; SchemaError with the reason
    (the field's path and what was expected) when it does not match."""
    cls = PAYLOADS.get(type_)
    if cls is None:
        raise SchemaError(f"unknown message type {type_!r}")
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"bad {type_} payload: {exc}") from exc

# The type names, for code that compares a message's `type` (each is its class's TYPE).
REPORT_SUBMITTED, REPORT_LOCATED = ReportSubmitted.TYPE, ReportLocated.TYPE
CASE_FILED = CaseFiled.TYPE  # 立案
CASE_NOT_FILED = CaseNotFiled.TYPE  # 不予立案 (outside every grid, unknown category, ...)
REPORT_MERGED = ReportMerged.TYPE  # near-duplicate merged into an open case
TASK_DISPATCHED = TaskDispatched.TYPE  # 派遣
PHOTO_ARCHIVED = PhotoArchived.TYPE
TASK_SIGNED = TaskSigned.TYPE  # 签收
TASK_PROGRESS_NOTED = TaskProgressNoted.TYPE
TASK_RESOLVED = TaskResolved.TYPE  # 办结
TASK_SENT_BACK = TaskSentBack.TYPE  # 退单
TASK_VERIFIED = TaskVerified.TYPE  # 核查通过
TASK_REOPENED = TaskReopened.TYPE  # 核查不通过, 返工
TASK_CANCELLED = TaskCancelled.TYPE
TASK_CLOSED = TaskClosed.TYPE
CASE_RATED = CaseRated.TYPE  # 回访满意度
CASE_CLOSED = CaseClosed.TYPE  # 结案
EXTENSION_REQUESTED = ExtensionRequested.TYPE  # 延期申请
EXTENSION_GRANTED = ExtensionGranted.TYPE
EXTENSION_REFUSED = ExtensionRefused.TYPE
CASE_WHISTLED = CaseWhistled.TYPE  # 吹哨报到
DEADLINE_WARNED = DeadlineWarned.TYPE  # 超时预警
DEADLINE_BREACHED = DeadlineBreached.TYPE  # 超时
TASK_ESCALATED = TaskEscalated.TYPE  # 升级督办
TASK_ASSIGNED = TaskAssigned.TYPE  # 二次派遣
COMMAND_REFUSED = CommandRefused.TYPE
FILE_REPORT = FileReport.TYPE
REFUSE_REPORT = RefuseReport.TYPE
RECORD_PHOTO_ARCHIVED = RecordPhotoArchived.TYPE
SIGN_TASK = SignTask.TYPE
NOTE_PROGRESS = NoteProgress.TYPE
RESOLVE_TASK = ResolveTask.TYPE
SEND_BACK_TASK = SendBackTask.TYPE
VERIFY_TASK = VerifyTask.TYPE
REJECT_TASK = RejectTask.TYPE  # verification failed
RATE_CASE = RateCase.TYPE
CANCEL_TASK = CancelTask.TYPE
REQUEST_EXTENSION = RequestExtension.TYPE
DECIDE_EXTENSION = DecideExtension.TYPE
WHISTLE_CASE = WhistleCase.TYPE
WARN_DEADLINE = WarnDeadline.TYPE
BREACH_DEADLINE = BreachDeadline.TYPE
ESCALATE_TASK = EscalateTask.TYPE
ASSIGN_TASK = AssignTask.TYPE
