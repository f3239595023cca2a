"""Department notifications (通知): which notices a case event calls for, to whom, how each
department is reached, and when a failed send is tried again.

Pure: configuration, reference data and an event in, notices out; no clock, no I/O. The same
event always yields the same notices with the same ids (one per recipient), so a redelivered
event is recognisably the same notice: a sender keeps one send state per notice id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict

from gridflow import events as ev
from gridflow.contract import payloads as ct
from gridflow.contract.payloads import given
from gridflow.core.configfile import ConfigError, JsonDoc, JsonPath, doc_of, read_json
from gridflow.core.refdata import ReferenceData
from gridflow.core.retry import RetryPolicy
from gridflow.events import Message, derived_id, parse_ts

NOTIFY_FILE = "notify.json"

NEW_TASK = "new_task"  # 新任务: a task dispatched to a department (routing, 退单改派)
DEADLINE_WARNING = "deadline_warning"  # 超时预警
ESCALATION = "escalation"  # 升级督办: to the ladder level the task went up to
WHISTLE = "whistle"  # 吹哨报到: each department called to the case
KINDS: tuple[str, ...] = (NEW_TASK, DEADLINE_WARNING, ESCALATION, WHISTLE)
KIND_NAMES_ZH = {NEW_TASK: "新任务", DEADLINE_WARNING: "超时预警", ESCALATION: "升级督办",
                 WHISTLE: "吹哨报到"}
KIND_NAMES_EN = {NEW_TASK: "new task", DEADLINE_WARNING: "deadline warning",
                 ESCALATION: "escalation", WHISTLE: "whistle-up"}
STAGE_ZH = {"sign": "签收", "resolve": "办结", "verify": "核查"}
METHODS: frozenset[str] = frozenset({"webhook", "log"})  # the send methods sinks/ provides

# Who hears of an escalation to each ladder level (escalation.json codes): a department
# template as in routing ({village} / {township} of the case's grid).
DEFAULT_ESCALATION_RECIPIENTS: Mapping[str, str] = {
    "grid": "{village}.cwh",
    "village": "{village}.cwh",
    "township": "{township}.zongzhi",
    "county_department": "county.wangge",
    "county_leadership": "county.duchashi",
}


class NotifyConfigError(ConfigError):
    """A notify.json that cannot be used: the file, the line, the JSON path and why."""


@dataclass(frozen=True)
class Contact:
    """How one department is reached (FixMyStreet's contact row): a send method and its target."""

    method: str  # webhook | log
    url: str = ""  # webhook: where the JSON is POSTed
    timeout_s: float = 5.0  # webhook: a call taking longer has failed (and is retried)

    @property
    def target(self) -> str:
        return self.url if self.method == "webhook" else self.method


# A failed send is tried again by this policy (notify.json "retry" overrides its numbers).
SEND_RETRY = RetryPolicy("notify-send", first_s=30.0, max_s=3600.0)


@dataclass(frozen=True)
class NotifyConfig:
    """Who is reached how (per department), who hears of escalations, how failures retry."""

    contacts: Mapping[str, Contact] = field(default_factory=dict)
    default: Contact | None = Contact("log")  # departments without a contact; None: skip them
    escalation_recipients: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_ESCALATION_RECIPIENTS)
    )
    retry: RetryPolicy = SEND_RETRY
    timezone: str = "Asia/Shanghai"  # for the times in the notice text
    source: str = ""

    def contact_for(self, recipient: str) -> Contact | None:
        return self.contacts.get(recipient, self.default)


@dataclass(frozen=True)
class Notice:
    """One message to one recipient about one event; `id` is derived from both."""

    id: str
    kind: str
    recipient: str  # a department code, or "level:<code>" when no department serves the level
    event_id: str
    event_type: str
    case_id: str
    task_id: str
    at: str  # the event's time (ISO 8601 UTC)
    title_zh: str
    title_en: str
    text_zh: str
    text_en: str
    facts: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON a webhook receives; `notice_id` is stable across retries (dedupe on it)."""
        return {
            "notice_id": self.id,
            "kind": self.kind,
            "kind_zh": KIND_NAMES_ZH[self.kind],
            "recipient": self.recipient,
            "case_id": self.case_id,
            "task_id": self.task_id or None,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "at": self.at,
            "title_zh": self.title_zh,
            "title_en": self.title_en,
            "text_zh": self.text_zh,
            "text_en": self.text_en,
            **self.facts,
        }


    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Notice:
        """The notice back from its payload (the send state keeps only the payload)."""
        own = {"notice_id", "kind", "kind_zh", "recipient", "case_id", "task_id", "event_id",
               "event_type", "at", "title_zh", "title_en", "text_zh", "text_en"}
        return cls(
            id=str(payload["notice_id"]), kind=str(payload["kind"]),
            recipient=str(payload["recipient"]), event_id=str(payload["event_id"]),
            event_type=str(payload["event_type"]), case_id=str(payload["case_id"]),
            task_id=str(payload.get("task_id") or ""), at=str(payload["at"]),
            title_zh=str(payload["title_zh"]), title_en=str(payload["title_en"]),
            text_zh=str(payload["text_zh"]), text_en=str(payload["text_en"]),
            facts={k: v for k, v in payload.items() if k not in own},
        )


def notice_id(event_id: str, recipient: str) -> str:
    return derived_id("notice", event_id, recipient)


# --- what an event calls for -------------------------------------------------------------------


def notices_for(event: Message, config: NotifyConfig, ref: ReferenceData) -> list[Notice]:
    """The notices a case event calls for (none for most events), one per recipient.

    TaskDispatched → 新任务 to its department (a send-back's re-routed task included; a
    whistle's tasks are announced by CaseWhistled instead); DeadlineWarned → 超时预警 to the
    task's department; TaskEscalated → 升级督办 to whoever serves the new level there;
    CaseWhistled → 吹哨报到 to each department called, with its task. Recipients without a
    contact and no default contact are left out.
    """
    make = _NOTICES.get(event.type)
    if make is None:
        return []
    out: list[Notice] = []
    seen: set[str] = set()
    for notice in make(event, event.body, config, ref):
        if notice.recipient in seen or config.contact_for(notice.recipient) is None:
            continue
        seen.add(notice.recipient)
        out.append(notice)
    return out


def _notice(event: Message, kind: str, recipient: str, task_id: str, title_zh: str,
            title_en: str, text_zh: str, text_en: str, facts: dict[str, Any]) -> Notice:
    return Notice(
        id=notice_id(event.id, recipient), kind=kind, recipient=recipient, event_id=event.id,
        event_type=event.type, case_id=event.case_id, task_id=task_id, at=event.at,
        title_zh=title_zh, title_en=title_en, text_zh=text_zh, text_en=text_en, facts=facts,
    )


def _dept_name(ref: ReferenceData, code: str) -> str:
    dept = ref.departments.get(code)
    return dept.name if dept else code


def _category(ref: ReferenceData, code: str) -> str:
    cat = ref.categories.get(code)
    return f"{cat.name}({code})" if cat else code


def _local(config: NotifyConfig, value: str) -> str:
    """An event's ISO time as local wall time for the text, e.g. 11月16日 10:30."""
    try:
        t = parse_ts(value)
    except ev.SchemaError:
        return str(value or "")
    try:
        tz = ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return t.strftime("%Y-%m-%d %H:%M UTC")
    local = t.astimezone(tz)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def _task_dispatched(event: Message, e: ct.TaskDispatched, config: NotifyConfig,
                     ref: ReferenceData) -> list[Notice]:
    if e.reason == "whistle":
        return []  # announced by the CaseWhistled that caused it (吹哨报到, with this task)
    dept, task_id = e.department, e.task_id
    sign_due, resolve_due = _local(config, e.sign_due), _local(config, e.resolve_due)
    what = _category(ref, e.category_code)
    sent_back = e.reason == "sent_back"
    prefix_zh, prefix_en = ("退单改派 ", "re-routed ") if sent_back else ("", "")
    text_zh = (f"{prefix_zh}{_dept_name(ref, dept)}: 案件 {event.case_id} 任务 {task_id}"
               f"({what})已派遣至本部门, 请于 {sign_due} 前签收, {resolve_due} 前办结。")
    text_en = (f"{prefix_en}task {task_id} of case {event.case_id} ({what}) is yours: sign for it "
               f"by {e.sign_due} and resolve it by {e.resolve_due}.")
    facts = {"department": dept, "sign_due": e.sign_due, "resolve_due": e.resolve_due,
             "category_code": e.category_code, "severity": e.severity, "grid_code": e.grid_code,
             "reason": e.reason, "replaces_task": given(e.replaces_task, None)}
    return [_notice(event, NEW_TASK, dept, task_id, f"{prefix_zh}新任务 {task_id}",
                    f"{prefix_en}new task {task_id}", text_zh, text_en, facts)]


def _deadline_warned(event: Message, e: ct.DeadlineWarned, config: NotifyConfig,
                     ref: ReferenceData) -> list[Notice]:
    dept, task_id, stage, fraction = e.department, e.task_id, e.stage, e.fraction
    used = f"已用时限{round(fraction * 100)}%, " if fraction is not None else ""
    text_zh = (f"{_dept_name(ref, dept)}: 任务 {task_id} 的{STAGE_ZH.get(stage, stage)}时限"
               f"将于 {_local(config, e.due_at)} 到期({used}请抓紧办理)。")
    text_en = f"task {task_id}: the {stage} deadline {e.due_at} is near."
    facts = {"department": dept, "stage": stage, "due_at": e.due_at, "fraction": fraction}
    return [_notice(event, DEADLINE_WARNING, dept, task_id, f"超时预警 {task_id}",
                    f"deadline warning {task_id}", text_zh, text_en, facts)]


def escalation_recipient(config: NotifyConfig, ref: ReferenceData, level_code: str,
                         grid_code: str) -> str:
    """The department serving `level_code` for the case's grid, else "level:<code>"."""
    template = config.escalation_recipients.get(level_code)
    if template is None:
        return f"level:{level_code}"
    if "{" in template:
        grid = ref.grids.get(grid_code)
        if grid is None:
            return f"level:{level_code}"
        template = ref.resolve(template, grid)
    return template if template in ref.departments else f"level:{level_code}"


def _task_escalated(event: Message, e: ct.TaskEscalated, config: NotifyConfig,
                    ref: ReferenceData) -> list[Notice]:
    dept, task_id, stage = e.department, e.task_id, e.stage
    level_code = e.level_code
    level_name = e.level_name or level_code
    recipient = escalation_recipient(config, ref, level_code, given(e.grid_code))
    roles = "、".join(r for r in e.notify if r)
    text_zh = (f"升级督办: {_dept_name(ref, dept)} 的任务 {task_id}(案件 {event.case_id})"
               f"{STAGE_ZH.get(stage, stage)}超时未处置, 已升级至{level_name}督办"
               f"{f', 请{roles}督促办理' if roles else ''}。")
    text_en = (f"escalation: task {task_id} of {dept} (case {event.case_id}) is overdue "
               f"({stage}) and went up to level {level_code or e.level}.")
    facts = {"department": dept, "level": e.level, "level_code": level_code,
             "level_name": level_name, "notify": list(e.notify), "stage": stage}
    return [_notice(event, ESCALATION, recipient, task_id, f"升级督办 {task_id}",
                    f"escalation {task_id}", text_zh, text_en, facts)]


def _case_whistled(event: Message, e: ct.CaseWhistled, config: NotifyConfig,
                   ref: ReferenceData) -> list[Notice]:
    tasks = {t.department: t for t in given(e.tasks, [])}
    reason = e.reason
    out = []
    for dept in e.departments:
        task = tasks.get(dept)
        task_id = task.task_id if task else ""
        due = f", 请于 {_local(config, task.sign_due)} 前签收" if task and task.sign_due else ""
        text_zh = (f"吹哨报到: 请{_dept_name(ref, dept)}到案件 {event.case_id} 报到"
                   f"{f'(任务 {task_id})' if task_id else ''}{due}。"
                   f"{f'事由: {reason}' if reason else ''}")
        text_en = (f"whistle-up: {dept} is called to case {event.case_id}"
                   f"{f' (task {task_id})' if task_id else ''}.")
        facts = {"department": dept, "reason": reason,
                 "sign_due": task.sign_due if task else None,
                 "resolve_due": task.resolve_due if task else None,
                 "grid_code": given(e.grid_code, None)}
        out.append(_notice(event, WHISTLE, dept, task_id, f"吹哨报到 {event.case_id}",
                           f"whistle-up {event.case_id}", text_zh, text_en, facts))
    return out


_NOTICES: dict[str, Callable[[Message, Any, NotifyConfig, ReferenceData], list[Notice]]] = {
    ev.TASK_DISPATCHED: _task_dispatched,
    ev.DEADLINE_WARNED: _deadline_warned,
    ev.TASK_ESCALATED: _task_escalated,
    ev.CASE_WHISTLED: _case_whistled,
}


# --- configuration -----------------------------------------------------------------------------


def notify_file(ref: ReferenceData) -> Path:
    return Path(ref.source) / NOTIFY_FILE


def load_notify_config(path: str | Path | None, ref: ReferenceData,
                       methods: frozenset[str] = METHODS) -> NotifyConfig:
    """notify.json (default: the reference data's); no file at the default place: log only."""
    file = Path(path) if path is not None else notify_file(ref)
    if path is None and not file.exists():
        return NotifyConfig(source="(no notify.json: every department by log)")
    return _build(read_json(file, NotifyConfigError), ref, methods)


def parse_notify_config(raw: Any, ref: ReferenceData, origin: str = "<notify config>",
                        methods: frozenset[str] = METHODS) -> NotifyConfig:
    """Check and build a config given as data; errors name `origin`, the JSON path and why."""
    return _build(doc_of(raw, origin, NotifyConfigError), ref, methods)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return value


Positive = Annotated[float, AfterValidator(_positive)]


class _ContactEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    url: str = ""
    timeout_s: Positive = 5.0
    note: str = ""


class _RetryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_s: Positive = SEND_RETRY.first_s
    max_s: Positive = SEND_RETRY.max_s
    factor: Positive = SEND_RETRY.factor


class _NotifyFile(BaseModel):
    """notify.json's shape."""

    model_config = ConfigDict(extra="forbid")

    note: str = ""
    default: _ContactEntry | None = _ContactEntry(method="log")
    departments: dict[str, _ContactEntry] = {}
    escalation_recipients: dict[str, str] = {}
    retry: _RetryEntry = _RetryEntry()
    timezone: str = "Asia/Shanghai"


def _build(doc: JsonDoc, ref: ReferenceData, methods: frozenset[str]) -> NotifyConfig:
    raw = doc.validate(_NotifyFile)
    contacts: dict[str, Contact] = {}
    for code, entry in raw.departments.items():
        if code not in ref.departments:
            doc.fail(("departments", code), "unknown department code")
        contacts[code] = _contact(doc, entry, ("departments", code), methods)
    default = None if raw.default is None else _contact(doc, raw.default, ("default",), methods)
    recipients = {**DEFAULT_ESCALATION_RECIPIENTS, **raw.escalation_recipients}
    r = raw.retry
    if r.factor < 1 or r.max_s < r.first_s:
        doc.fail(("retry",), "factor must be >= 1 and max_s >= first_s")
    retry = RetryPolicy(SEND_RETRY.name, r.first_s, r.max_s, r.factor)
    try:
        ZoneInfo(raw.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        doc.fail(("timezone",), f"unknown time zone {raw.timezone!r}")
    return NotifyConfig(contacts, default, recipients, retry, raw.timezone, doc.name)


def _contact(doc: JsonDoc, entry: _ContactEntry, at: JsonPath,
             methods: frozenset[str]) -> Contact:
    if entry.method not in methods:
        doc.fail(at + ("method",), f"must be one of {sorted(methods)}, got {entry.method!r}")
    if entry.method == "webhook" and not entry.url.startswith(("http://", "https://")):
        doc.fail(at + ("url",), f"a webhook needs an http(s) URL, got {entry.url!r}")
    return Contact(entry.method, entry.url, entry.timeout_s)
