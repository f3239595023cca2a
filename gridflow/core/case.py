"""The case aggregate: one case's state, and `decide`, which turns a command into events.

Pure: no clock, no I/O. `decide(state, command, planner)` returns the events to
append and the new state; a command the state does not allow yields exactly one
CommandRefused event with a reason and leaves the case unchanged. A command id
seen before yields nothing (retries and duplicate deliveries are no-ops).
Task states and their allowed transitions are data (TRANSITIONS below). Policy
comes in through the planner: deadlines always, and — from a `PolicyPlanner` —
the extension limit and whether a send-back restarts the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from gridflow import events as ev
from gridflow.contract import payloads as ct
from gridflow.contract.payloads import UNSET, given
from gridflow.core.sla import ExtensionLimit
from gridflow.events import Message, SchemaError, derived_id, iso, parse_ts

# --- task states -------------------------------------------------------------
DISPATCHED = "dispatched"  # 已派遣
SIGNED = "signed"  # 已签收
IN_PROGRESS = "in_progress"  # 处置中
RESOLVED = "resolved"  # 已办结 (awaiting verification)
CLOSED = "closed"  # 已核查结案
SENT_BACK = "sent_back"  # 已退单
CANCELLED = "cancelled"  # 已撤销

TASK_STATE_NAMES_ZH = {
    DISPATCHED: "已派遣",
    SIGNED: "已签收",
    IN_PROGRESS: "处置中",
    RESOLVED: "已办结待核查",
    CLOSED: "已结案",
    SENT_BACK: "已退单",
    CANCELLED: "已撤销",
}
OPEN_TASK_STATES = frozenset({DISPATCHED, SIGNED, IN_PROGRESS, RESOLVED})
FINAL_TASK_STATES = frozenset({CLOSED, SENT_BACK, CANCELLED})

# Which task states each task command may act on, and who may issue it.
# roles: dept = the task's own department; reporter = the case's reporter or a grid
# worker of the case's grid; supervisor; system (processors).
TRANSITIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    ev.SIGN_TASK: (frozenset({DISPATCHED}), frozenset({"dept"})),
    ev.NOTE_PROGRESS: (frozenset({SIGNED, IN_PROGRESS}), frozenset({"dept"})),
    ev.RESOLVE_TASK: (frozenset({SIGNED, IN_PROGRESS}), frozenset({"dept"})),
    # 退单 only before signing: a signed task is the department's (extension, or cancellation).
    ev.SEND_BACK_TASK: (frozenset({DISPATCHED}), frozenset({"dept"})),
    ev.VERIFY_TASK: (frozenset({RESOLVED}), frozenset({"reporter", "supervisor"})),
    ev.REJECT_TASK: (frozenset({RESOLVED}), frozenset({"reporter", "supervisor"})),
    ev.CANCEL_TASK: (OPEN_TASK_STATES, frozenset({"supervisor"})),
    ev.REQUEST_EXTENSION: (frozenset({SIGNED, IN_PROGRESS}), frozenset({"dept"})),
    ev.DECIDE_EXTENSION: (frozenset({SIGNED, IN_PROGRESS}), frozenset({"supervisor"})),
    ev.WARN_DEADLINE: (OPEN_TASK_STATES, frozenset({"system"})),
    ev.BREACH_DEADLINE: (OPEN_TASK_STATES, frozenset({"system"})),
    ev.ESCALATE_TASK: (OPEN_TASK_STATES, frozenset({"system", "supervisor"})),
    # 二次派遣: the department gives its task to one of its staff (who may sign it, too).
    ev.ASSIGN_TASK: (frozenset({DISPATCHED, SIGNED, IN_PROGRESS}), frozenset({"dept"})),
}

# The clock each task state runs: its deadline field, for deadline commands.
STAGE_OF_STATE = {DISPATCHED: "sign", SIGNED: "resolve", IN_PROGRESS: "resolve", RESOLVED: "verify"}

RECENT_COMMANDS_KEPT = 200


class DeadlinePlanner(Protocol):
    """Computes a stage's due instant from policy and the working calendar."""

    def due(self, category_code: str, severity: int, stage: str, start: datetime) -> datetime: ...

    def add_working_days(self, start: datetime, days: float) -> datetime: ...


@runtime_checkable
class PolicyPlanner(DeadlinePlanner, Protocol):
    """A planner that also states the policy the aggregate applies (gridflow.core.sla).

    A plain `DeadlinePlanner` means: no extension limit beyond 0 < days <= 30, and a
    send-back restarts the clock.
    """

    @property
    def extension_limit(self) -> ExtensionLimit: ...

    @property
    def send_back_restarts_clock(self) -> bool: ...


def extension_limit_of(planner: DeadlinePlanner) -> ExtensionLimit | None:
    return planner.extension_limit if isinstance(planner, PolicyPlanner) else None


def send_back_restarts_clock(planner: DeadlinePlanner) -> bool:
    return planner.send_back_restarts_clock if isinstance(planner, PolicyPlanner) else True


@dataclass(frozen=True)
class TaskState:
    task_id: str
    department: str
    state: str
    dispatched_at: str
    sign_due: str
    resolve_due: str = ""
    verify_due: str = ""
    signed_at: str = ""
    resolved_at: str = ""
    closed_at: str = ""
    reopened: int = 0
    extensions: int = 0
    extension_days: float = 0.0  # working days granted in all
    pending_extension: dict[str, Any] | None = None
    escalation_level: int = 0
    whistled: bool = False
    assignee: str = ""  # the staff member the department gave the task to (account id)

    def due_for(self, stage: str) -> str:
        return {"sign": self.sign_due, "resolve": self.resolve_due, "verify": self.verify_due}[stage]


def _task_dict(task: TaskState) -> dict[str, Any]:
    d = dict(task.__dict__)
    if task.pending_extension is not None:
        d["pending_extension"] = dict(task.pending_extension)
    return d


@dataclass(frozen=True)
class CaseState:
    case_id: str
    status: str = "new"  # new | open | closed | not_filed
    category_code: str = ""
    severity: int = 1
    grid_code: str = ""
    village_code: str = ""
    township_code: str = ""
    reporter: str = ""
    report_ids: tuple[str, ...] = ()
    tasks: dict[str, TaskState] = field(default_factory=dict)
    rating: int | None = None
    seq: int = 0
    last_hash: str = ""
    last_at: str = ""
    recent_commands: tuple[str, ...] = ()
    # Commands that answer, or were given after seeing, an event this state does not have yet
    # (their `to_dict` form, oldest first): decided as soon as the state reaches it (`decide`).
    waiting: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready state (what `dataclasses.asdict` gives, built without its deep copy:
        every value is immutable or replaced, never changed in place)."""
        d = dict(self.__dict__)
        d["tasks"] = {k: _task_dict(t) for k, t in self.tasks.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseState:
        tasks = {k: TaskState(**v) for k, v in d.get("tasks", {}).items()}
        return cls(
            **{k: v for k, v in d.items()
               if k not in {"tasks", "report_ids", "recent_commands", "waiting"}},
            tasks=tasks,
            report_ids=tuple(d.get("report_ids", ())),
            recent_commands=tuple(d.get("recent_commands", ())),
            waiting=tuple(d.get("waiting", ())),
        )


_State = TypeVar("_State", "CaseState", "TaskState")


def _evolve(obj: _State, /, **changes: Any) -> _State:
    """`dataclasses.replace` for CaseState and TaskState: a copy of its fields with `changes`
    over them. Both are frozen, compute nothing in `__init__` and have no `__post_init__`, so
    the copy is the fields' dict; replace passes every field through `__init__` and
    `object.__setattr__` again (~6 times a report, ~10% of a decision). A name that is not a
    field is refused, as replace refuses it."""
    names = _FIELDS[type(obj)]
    if not changes.keys() <= names:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(changes.keys() - names)}")
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(f.name for f in fields(cls)) for cls in (CaseState, TaskState)}


@dataclass(frozen=True)
class Decision:
    state: CaseState
    events: list[Message]
    # Commands for other cases that this decision hands on (a report for a closed case).
    commands: list[Message] = field(default_factory=list)
    # Waiting commands this decision reached whose payload made `decide` raise (what a command
    # decided at once is dead-lettered for, processors.steps): (the command's bytes, the reason).
    malformed: list[tuple[bytes, str]] = field(default_factory=list)


class _Builder:
    """Appends events to a case: numbers them, chains their hashes, keeps time monotonic."""

    def __init__(self, state: CaseState, command: Message) -> None:
        self.state = state
        self.command = command
        self.events: list[Message] = []
        self.commands: list[Message] = []
        cmd_at = parse_ts(command.at, "command time")
        last = parse_ts(state.last_at, "last event time") if state.last_at else cmd_at
        self.now = max(cmd_at, last)

    def emit(self, body: ct.Event, actor: str | None = None) -> Message:
        seq = self.state.seq + 1
        msg = Message.of(
            body,
            id=derived_id(self.command.id, body.TYPE, str(len(self.events))),
            case_id=self.state.case_id,
            at=iso(self.now),
            actor=actor or self.command.actor,
            causation_id=self.command.id,
            seq=seq,
            prev_hash=self.state.last_hash,
        )
        self.state = _evolve(self.state, seq=seq, last_hash=msg.hash(), last_at=msg.at)
        self.events.append(msg)
        return msg

    def set_task(self, task: TaskState) -> None:
        tasks = dict(self.state.tasks)
        tasks[task.task_id] = task
        self.state = _evolve(self.state, tasks=tasks)

    def finish(self) -> Decision:
        recent = (*self.state.recent_commands, self.command.id)[-RECENT_COMMANDS_KEPT:]
        return Decision(_evolve(self.state, recent_commands=recent), self.events, self.commands)


class Refused(Exception):
    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en


def new_case(case_id: str) -> CaseState:
    return CaseState(case_id=case_id)


def decide(state: CaseState, command: Message, planner: DeadlinePlanner, *,
           in_order: bool = True) -> Decision:
    """Apply one command to a case. Never raises for a bad command: refusals are events.

    A command ahead of the state (`_ahead_of`: it answers, or its giver saw, an event the state
    does not have yet) waits in the state (`waiting`), and so does every command after it on
    case-commands; the decision that brings the state to that event decides them, each under
    its own id, in the order they came (`_wake`). `in_order=False`: the command was not read
    from case-commands but made in this step from another topic's record (the intake's filing
    of a report, processors.steps), so it has no place in their order and may be what they
    wait for: it is decided at once."""
    if command.id in state.recent_commands or (
            state.waiting and _is_waiting(state, command.id)):
        return Decision(state, [])
    if _ahead_of(state, command) or (state.waiting and in_order):
        return _wait(state, command, planner)
    decision = _decide_now(state, command, planner)
    return _wake(decision, planner) if decision.state.waiting else decision


def _decide_now(state: CaseState, command: Message, planner: DeadlinePlanner) -> Decision:
    b = _Builder(state, command)
    handler = _HANDLERS.get(command.type)
    try:
        if handler is None:
            raise Refused("unknown_command", "未知指令", f"unknown command {command.type!r}")
        try:
            body = command.body
        except SchemaError as exc:
            raise Refused("bad_payload", "指令内容格式错误", str(exc)) from exc
        handler(b, command, body, planner)
    except Refused as r:
        b = _Builder(state, command)
        b.emit(_refusal(command, r.code, r.zh, r.en))
    if not b.events and command.type in _CLOCK_COMMANDS and command.actor.startswith("system"):
        # A stale deadline command is dropped and not remembered. Its clock fires it again
        # under the same id if it comes back: after a crash, the command can be read before
        # the input that files its task again (the state it finds is behind, so it looks
        # stale), and remembering it would drop the real one. A repeat of one that applied
        # is still remembered and dropped.
        return Decision(state, [], b.commands)
    return b.finish()


def _refusal(command: Message, code: str, zh: str, en: str) -> ct.CommandRefused:
    task_id = command.data.get("task_id", "")  # the command may not have decoded
    return ct.CommandRefused(command_id=command.id, command_type=command.type,
                            task_id=task_id if isinstance(task_id, str) else "", code=code,
                            reason_zh=zh, reason_en=en)


def refuse(state: CaseState, command: Message, code: str, zh: str, en: str) -> Decision:
    """`command` refused outright (e.g. its case has left the worker's state: gridflow.core.
    eviction), as `decide` refuses one: one CommandRefused on the case's chain. A command id
    seen before yields nothing."""
    if command.id in state.recent_commands:
        return Decision(state, [])
    b = _Builder(state, command)
    b.emit(_refusal(command, code, zh, en))
    return b.finish()


# --- roles -------------------------------------------------------------------

def actor_roles(state: CaseState, task: TaskState | None, actor: str) -> set[str]:
    kind, _, ident = actor.partition(":")
    roles: set[str] = set()
    if kind == "system":
        roles.add("system")
    elif kind == "supervisor":
        roles.add("supervisor")
    elif kind == "dept" and task is not None and ident == task.department:
        roles.add("dept")
    elif kind in {"worker", "resident"}:
        if actor == state.reporter:
            roles.add("reporter")
        # A grid worker of the case's grid may verify on site (actor "worker:<id>@<grid>").
        if kind == "worker" and ident.endswith("@" + state.grid_code) and state.grid_code:
            roles.add("reporter")
    return roles


def _task_for(b: _Builder, command: Message, body: ct.TaskCommand) -> TaskState:
    task_id = given(body.task_id, None)
    if task_id not in b.state.tasks:
        raise Refused("unknown_task", "该案件下没有此任务", f"case has no task {task_id!r}")
    task = b.state.tasks[task_id]
    allowed_states, allowed_roles = TRANSITIONS[command.type]
    roles = actor_roles(b.state, task, command.actor)
    if not roles & allowed_roles:
        raise Refused(
            "not_allowed", "无权对该任务执行此操作",
            f"{command.actor} may not {command.type} task {task_id} "
            f"(needs one of: {', '.join(sorted(allowed_roles))})",
        )
    if task.state not in allowed_states:
        raise Refused(
            "bad_state", f"任务当前状态为「{TASK_STATE_NAMES_ZH[task.state]}」, 不能执行此操作",
            f"task {task_id} is {task.state}; {command.type} needs "
            f"{' or '.join(sorted(allowed_states))}",
        )
    return task


def _photo_list(photos: Any, role: str, required: bool) -> list[ct.PhotoData]:
    if not isinstance(photos, list):
        raise Refused("bad_photos", "照片格式错误", "photos must be a list")
    if required and not 1 <= len(photos) <= 9:
        raise Refused("photo_count", "须上传1至9张照片", "1 to 9 photos are required")
    if len(photos) > 9:
        raise Refused("photo_count", "最多上传9张照片", "at most 9 photos")
    try:
        refs = [ev.PhotoRef.from_dict(ref) for ref in photos]
    except ev.SchemaError as exc:
        raise Refused("bad_photos", "照片引用无效", str(exc)) from exc
    return [ct.PhotoData(**asdict(replace(ref, role=role))) for ref in refs]


def _photo_dicts(photos: list[ct.PhotoData]) -> list[dict[str, Any]]:
    return [ct.as_data(photo) for photo in photos]


# --- filing and dispatch -------------------------------------------------------

def _plan_task(b: _Builder, department: str, planner: DeadlinePlanner, whistled: bool = False,
               inherit: TaskState | None = None, ahead: int = 0) -> TaskState:
    """The next task for `department` (`ahead` more are planned before it), on a fresh clock or
    on the deadlines of `inherit`. Not yet part of the case: see `_dispatch`."""
    task_id = f"{b.state.case_id}-T{len(b.state.tasks) + 1 + ahead:02d}"
    if inherit is None:
        sign_due = iso(planner.due(b.state.category_code, b.state.severity, "sign", b.now))
        resolve_due = iso(planner.due(b.state.category_code, b.state.severity, "resolve", b.now))
    else:
        sign_due, resolve_due = inherit.sign_due, inherit.resolve_due
    return TaskState(
        task_id=task_id, department=department, state=DISPATCHED, dispatched_at=iso(b.now),
        sign_due=sign_due, resolve_due=resolve_due, whistled=whistled,
    )


def _dispatch(b: _Builder, department: str, planner: DeadlinePlanner, reason: str,
              whistled: bool = False, inherit: TaskState | None = None,
              planned: TaskState | None = None, replaces_task: str | ct.UnsetType = UNSET,
              clock: str | ct.UnsetType = UNSET) -> TaskState:
    """Add a task to the case and emit TaskDispatched (a `planned` one, or a new one)."""
    task = planned or _plan_task(b, department, planner, whistled, inherit)
    b.set_task(task)
    b.emit(ct.TaskDispatched(
        task_id=task.task_id, department=task.department, reason=reason,
        sign_due=task.sign_due, resolve_due=task.resolve_due, whistled=task.whistled,
        category_code=b.state.category_code, severity=b.state.severity,
        grid_code=b.state.grid_code, replaces_task=replaces_task, clock=clock,
    ), actor="system")
    return task


def _file_report(b: _Builder, c: Message, d: ct.FileReport, planner: DeadlinePlanner) -> None:
    report = dict(d.report)
    report_id = str(report.get("report_id", ""))
    if report_id in b.state.report_ids:
        return  # the same report filed twice (a retried upload): nothing new
    photos = _photo_list(report.get("photos", []), "before", required=False)
    own = given(d.own_case_id)
    if b.state.status in ("closed", "not_filed") and own and own != b.state.case_id:
        # A near-duplicate of a case that is already closed is a new problem: file it as its
        # own case instead of merging it into finished work.
        data = {k: v for k, v in c.data.items() if k not in ("distance_m", "own_case_id")}
        b.commands.append(Message(
            id=derived_id(c.id, "refile"), type=ev.FILE_REPORT, case_id=own, at=c.at,
            actor=c.actor, data=data, causation_id=c.id,
        ))
        return
    reporter = str(report.get("reporter", c.actor))
    report = {**report, "photos": _photo_dicts(photos)}
    if b.state.status == "new":
        if given(d.grid_code, None) is None:
            raise KeyError("grid_code")  # a FileReport without its grid: malformed
        b.state = _evolve(
            b.state, status="open", category_code=d.category_code,
            severity=given(d.severity, 1), grid_code=given(d.grid_code),
            village_code=given(d.village_code), township_code=given(d.township_code),
            reporter=reporter, report_ids=(report_id,),
        )
        departments = list(given(d.departments, []))
        b.emit(ct.CaseFiled(
            report=report, category_code=b.state.category_code,
            category_name=given(d.category_name), severity=b.state.severity,
            grid_code=b.state.grid_code, village_code=b.state.village_code,
            township_code=b.state.township_code, cross_grid=given(d.cross_grid, False),
            departments=departments, routing_reason=given(d.routing_reason),
            # filing facts carried through when the intake supplies them
            grid_name=d.grid_name, worker_grid_code=d.worker_grid_code,
            lead_department=d.lead_department, multi_department=d.multi_department,
            routing_source=d.routing_source, routing_rule=d.routing_rule,
            routing_reason_zh=d.routing_reason_zh,
        ), actor=b.state.reporter)
        multi = len(departments) > 1
        for dept in departments:
            _dispatch(b, dept, planner, "routing", whistled=multi)
    else:
        b.state = _evolve(b.state, report_ids=(*b.state.report_ids, report_id))
        b.emit(ct.ReportMerged(report=report, distance_m=given(d.distance_m, None),
                               case_status=b.state.status), actor=reporter)


def _refuse_report(b: _Builder, c: Message, d: ct.RefuseReport, planner: DeadlinePlanner,
                   ) -> None:
    if b.state.status != "new":
        return
    report = dict(given(d.report, {}))
    b.state = _evolve(b.state, status="not_filed", reporter=str(report.get("reporter", c.actor)),
                      report_ids=(str(report.get("report_id", "")),))
    b.emit(ct.CaseNotFiled(report=report, code=given(d.code), reason_zh=given(d.reason_zh),
                           reason_en=given(d.reason_en)), actor=b.state.reporter)


# Waiting commands (`CaseState.waiting`). After a crash the worker decides the lost inputs
# again within its first reads, so a case holds a waiting command for moments. The bound only
# ends a wait that cannot end: a case holding WAITING_KEPT commands decides its oldest against
# the state as it is when another comes (a pure rule: the same inputs, the same outcome).
WAITING_KEPT = 32
# Commands written while a waiting command went round case-commands (`waited`, before
# commands waited in the state) and that many rounds on are decided against the state as it is.
WAIT_LIMIT = 100


def _ahead_of(state: CaseState, c: Message) -> bool:
    """Whether `c` needs an event this state does not have yet: the worker was killed after the
    case's events reached the log and before its state did (processors.delivery), and the input
    that decides them again is still to come. Deciding now would put the command's events
    where that decision's are about to go again, or refuse what its giver saw.

    - A RecordPhotoArchived answers the event of seq `event_seq` (the photo archive's answer
      to a CaseFiled or ReportMerged it read on the log).
    - A person's command carries `seen_seq`, the case's last seq in the read models when the
      API accepted it: a department signing a task whose dispatch it saw."""
    data = c.data
    need = data.get("event_seq") if c.type == ev.RECORD_PHOTO_ARCHIVED else data.get("seen_seq")
    if type(need) is not int or state.seq >= need:
        return False
    waited = data.get("waited", 0)
    return type(waited) is int and waited < WAIT_LIMIT


def _is_waiting(state: CaseState, command_id: str) -> bool:
    return any(w.get("id") == command_id for w in state.waiting)


def _wait(state: CaseState, command: Message, planner: DeadlinePlanner) -> Decision:
    """`command` waits in the state (not remembered as decided: it is decided later under its
    own id, so its outcome is the one its giver waits for, and its events' ids are the ones it
    would have had). Past WAITING_KEPT, the oldest is decided against the state as it is."""
    waiting = (*state.waiting, command.to_dict())
    if len(waiting) <= WAITING_KEPT:
        return Decision(_evolve(state, waiting=waiting), [])
    return _wake(Decision(_evolve(state, waiting=waiting), []), planner, force=1)


def _wake(decision: Decision, planner: DeadlinePlanner, force: int = 0) -> Decision:
    """Decide, after `decision`, the waiting commands in the order they came, up to the first
    one the state has still not reached (one decided may bring the state to the next); the
    first `force` of them whether reached or not. The order is the order the first worker
    decided them in: they came on one partition of case-commands, read in its order
    (processors.delivery.GridflowConsumer.in_order). One whose payload makes the decision
    raise is set aside as `malformed`, as a command decided at once would be dead-lettered."""
    state, events, commands = decision.state, list(decision.events), list(decision.commands)
    malformed = list(decision.malformed)
    while state.waiting:
        command = Message(**state.waiting[0])  # its envelope was checked when it came
        if force <= 0 and _ahead_of(state, command):
            break
        force -= 1
        state = _evolve(state, waiting=state.waiting[1:])
        if command.id in state.recent_commands:
            continue
        try:
            d = _decide_now(state, command, planner)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed payload of a known command
            malformed.append((command.encode(), f"malformed {command.type}: {exc!r}"))
            continue
        state = d.state
        events += d.events
        commands += d.commands
    return Decision(state, events, commands, malformed)


def _photo_archived(b: _Builder, c: Message, d: ct.RecordPhotoArchived,
                    planner: DeadlinePlanner) -> None:
    if b.state.status == "new":
        raise Refused("unknown_case", "案件不存在", "no such case")
    # the facts the archive agent found, as it wrote them (a field it left out stays out)
    facts = {name: getattr(d, name) for name in ct.PhotoArchiveFacts.__struct_fields__
             if name in c.data}
    b.emit(ct.PhotoArchived(**facts), actor="system")


# --- task lifecycle ------------------------------------------------------------

def _sign(b: _Builder, c: Message, d: ct.SignTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    b.set_task(_evolve(task, state=SIGNED, signed_at=iso(b.now)))
    b.emit(ct.TaskSigned(task_id=task.task_id, department=task.department,
                         on_time=b.now <= parse_ts(task.sign_due),
                         dispatched_at=task.dispatched_at, resolve_due=task.resolve_due,
                         category_code=b.state.category_code, severity=b.state.severity))


def _progress(b: _Builder, c: Message, d: ct.NoteProgress, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    note = given(d.note).strip()
    if not note:
        raise Refused("note_required", "请填写处置进展", "a progress note is required")
    photos = _photo_list(given(d.photos, []), "progress", required=False)
    b.set_task(_evolve(task, state=IN_PROGRESS))
    b.emit(ct.TaskProgressNoted(task_id=task.task_id, note=note[:2000], photos=photos))


def _resolve(b: _Builder, c: Message, d: ct.ResolveTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    note = given(d.note).strip()
    if not note:
        raise Refused("note_required", "请填写办结说明", "a resolution note is required")
    photos = _photo_list(given(d.photos, []), "after", required=True)
    verify_due = planner.due(b.state.category_code, b.state.severity, "verify", b.now)
    on_time = b.now <= parse_ts(task.resolve_due)
    b.set_task(_evolve(task, state=RESOLVED, resolved_at=iso(b.now), verify_due=iso(verify_due)))
    b.emit(ct.TaskResolved(task_id=task.task_id, department=task.department, note=note[:2000],
                           photos=photos, on_time=on_time, verify_due=iso(verify_due),
                           category_code=b.state.category_code, severity=b.state.severity))


def _send_back(b: _Builder, c: Message, d: ct.SendBackTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    reason = given(d.reason).strip()
    target = given(d.reroute_to).strip()
    if not reason:
        raise Refused("reason_required", "退单须说明理由", "a send-back needs a reason")
    if not target or target == task.department:
        raise Refused("reroute_required", "退单须指定正确的责任部门",
                      "a send-back needs another responsible department to re-route to")
    restart = send_back_restarts_clock(planner)
    b.set_task(_evolve(task, state=SENT_BACK, closed_at=iso(b.now)))
    b.emit(ct.TaskSentBack(task_id=task.task_id, department=task.department, reason=reason,
                           reroute_to=target))
    # 退单改派: a fresh clock for the new department, or (policy) the original deadlines.
    _dispatch(b, target, planner, "sent_back", inherit=None if restart else task,
              replaces_task=task.task_id, clock="restarted" if restart else "inherited")


def _verify(b: _Builder, c: Message, d: ct.VerifyTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    photos = _photo_list(given(d.photos, []), "verification", required=False)
    b.set_task(_evolve(task, state=CLOSED, closed_at=iso(b.now)))
    b.emit(ct.TaskVerified(task_id=task.task_id, department=task.department,
                           note=given(d.note)[:2000], photos=photos))
    _maybe_close_case(b)


def _reject(b: _Builder, c: Message, d: ct.RejectTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    reason = given(d.reason).strip()
    if not reason:
        raise Refused("reason_required", "核查不通过须说明理由", "a failed verification needs a reason")
    _reopen(b, task, reason, planner, _photo_list(given(d.photos, []), "verification",
                                                  required=False))


def _reopen(b: _Builder, task: TaskState, reason: str, planner: DeadlinePlanner,
            photos: list[ct.PhotoData] | None = None) -> None:
    # Rework (返工): the resolve clock restarts from now under the same policy.
    resolve_due = planner.due(b.state.category_code, b.state.severity, "resolve", b.now)
    b.set_task(_evolve(task, state=IN_PROGRESS, reopened=task.reopened + 1, closed_at="",
                       resolve_due=iso(resolve_due), verify_due=""))
    if b.state.status == "closed":
        b.state = _evolve(b.state, status="open")
    b.emit(ct.TaskReopened(task_id=task.task_id, department=task.department, reason=reason,
                           reopened=task.reopened + 1, resolve_due=iso(resolve_due),
                           category_code=b.state.category_code, severity=b.state.severity,
                           # what the grid worker photographed when the fix failed on site
                           photos=photos if photos else UNSET))


def _maybe_close_case(b: _Builder) -> None:
    if all(t.state in FINAL_TASK_STATES for t in b.state.tasks.values()) and b.state.status == "open":
        b.state = _evolve(b.state, status="closed")
        b.emit(ct.CaseClosed(tasks=sorted(b.state.tasks)), actor="system")


def _rate(b: _Builder, c: Message, d: ct.RateCase, planner: DeadlinePlanner) -> None:
    roles = actor_roles(b.state, None, c.actor)
    if "reporter" not in roles and "supervisor" not in roles:
        raise Refused("not_allowed", "仅报告人可评价", f"{c.actor} is not this case's reporter")
    if b.state.status != "closed":
        raise Refused("not_closed", "案件办结核查后方可评价", "a case can be rated once it is closed")
    score = given(d.score, None)
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise Refused("bad_score", "满意度须为1至5的整数", "score must be an integer 1-5")
    b.state = _evolve(b.state, rating=score)
    b.emit(ct.CaseRated(score=score, comment=given(d.comment)[:1000]))
    if score <= 2:  # unsatisfied: the work goes back to the departments (不满意重办)
        for task in list(b.state.tasks.values()):
            if task.state == CLOSED:
                _reopen(b, task, "回访不满意 / unsatisfied rating", planner)


def _cancel(b: _Builder, c: Message, d: ct.CancelTask, planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    reason = given(d.reason).strip()
    if not reason:
        raise Refused("reason_required", "撤销须说明理由", "a cancellation needs a reason")
    b.set_task(_evolve(task, state=CANCELLED, closed_at=iso(b.now)))
    b.emit(ct.TaskCancelled(task_id=task.task_id, department=task.department, reason=reason))
    _maybe_close_case(b)


def _request_extension(b: _Builder, c: Message, d: ct.RequestExtension,
                       planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    if task.pending_extension:
        raise Refused("extension_pending", "已有延期申请待审批", "an extension request is pending")
    reason = given(d.reason).strip()
    days = given(d.days, None)
    if not reason or not isinstance(days, (int, float)) or isinstance(days, bool) or not 0 < days <= 30:
        raise Refused("bad_extension", "延期须说明理由并给出1至30个工作日",
                      "an extension needs a reason and 0 < days <= 30 working days")
    _check_extension_limit(task, float(days), planner)
    request = {"request_id": c.id, "days": days, "reason": reason}
    b.set_task(_evolve(task, pending_extension=request))
    b.emit(ct.ExtensionRequested(task_id=task.task_id, department=task.department,
                                 request_id=c.id, days=days, reason=reason))


def _decide_extension(b: _Builder, c: Message, d: ct.DecideExtension,
                      planner: DeadlinePlanner) -> None:
    task = _task_for(b, c, d)
    req = task.pending_extension
    if not req:
        raise Refused("no_extension", "没有待审批的延期申请", "no pending extension request")
    if given(d.approve, None) is True:
        days = float(req["days"])
        _check_extension_limit(task, days, planner)  # the policy may have changed meanwhile
        new_due = planner.add_working_days(parse_ts(task.resolve_due), days)
        b.set_task(_evolve(task, pending_extension=None, extensions=task.extensions + 1,
                           extension_days=task.extension_days + days, resolve_due=iso(new_due)))
        b.emit(ct.ExtensionGranted(task_id=task.task_id, department=task.department,
                                   request_id=req["request_id"], days=req["days"],
                                   previous_due=task.resolve_due, resolve_due=iso(new_due),
                                   category_code=b.state.category_code,
                                   severity=b.state.severity))
    else:
        b.set_task(_evolve(task, pending_extension=None))
        b.emit(ct.ExtensionRefused(task_id=task.task_id, department=task.department,
                                   request_id=req["request_id"],
                                   reason=given(d.reason)[:1000]))


def _check_extension_limit(task: TaskState, days: float, planner: DeadlinePlanner) -> None:
    """Refuse an extension beyond the policy's limit (count, days each, days in all)."""
    limit = extension_limit_of(planner)
    if limit is None:
        return
    exceeded = limit.check(task.extensions, task.extension_days, days)
    if exceeded is not None:
        raise Refused(exceeded.code, f"延期申请超出规定: {exceeded.zh}",
                      f"extension beyond the policy limit: {exceeded.en}")


def _whistle(b: _Builder, c: Message, d: ct.WhistleCase, planner: DeadlinePlanner) -> None:
    if "supervisor" not in actor_roles(b.state, None, c.actor):
        raise Refused("not_allowed", "仅督办人员可吹哨", "only a supervisor may whistle a case up")
    if b.state.status != "open":
        raise Refused("not_open", "案件未在办理中", "the case is not open")
    departments = given(d.departments, None)
    if not isinstance(departments, list) or not departments:
        raise Refused("departments_required", "吹哨须指定报到部门", "name the departments to whistle up")
    active = {t.department for t in b.state.tasks.values() if t.state in OPEN_TASK_STATES}
    new = [str(x) for x in dict.fromkeys(departments) if str(x) not in active]
    if not new:
        raise Refused("already_assigned", "所列部门均已在办理", "every department named already has an open task")
    planned = [_plan_task(b, dept, planner, whistled=True, ahead=i) for i, dept in enumerate(new)]
    b.emit(ct.CaseWhistled(
        departments=new, reason=given(d.reason)[:1000], grid_code=b.state.grid_code,
        tasks=[ct.WhistledTask(task_id=t.task_id, department=t.department, sign_due=t.sign_due,
                               resolve_due=t.resolve_due) for t in planned],
    ))
    for task in planned:
        _dispatch(b, task.department, planner, "whistle", planned=task)


def _assign(b: _Builder, c: Message, d: ct.AssignTask, planner: DeadlinePlanner) -> None:
    """二次派遣: who in the department works the task. Who may assign is the API's business
    (the department's head); the case records the fact, in the case's own order."""
    task = _task_for(b, c, d)
    assignee = given(d.assignee).strip()
    if not assignee or len(assignee) > 64:
        raise Refused("assignee_required", "请选择承办人", "name the staff member (assignee)")
    if assignee == task.assignee:
        raise Refused("already_assigned", "该任务已由此人承办", f"task is already {assignee}'s")
    b.set_task(_evolve(task, assignee=assignee))
    b.emit(ct.TaskAssigned(
        task_id=task.task_id, department=task.department, assignee=assignee,
        assignee_name=given(d.assignee_name)[:64], previous=task.assignee,
        by=given(d.by)[:64], by_name=given(d.by_name)[:64],
    ))


_CLOCK_COMMANDS = frozenset({ev.WARN_DEADLINE, ev.BREACH_DEADLINE, ev.ESCALATE_TASK})


def _deadline_applies(b: _Builder, d: ct.DeadlineCommand) -> TaskState | None:
    """Deadline commands are stale when the task moved on: then they are dropped silently."""
    task = b.state.tasks.get(given(d.task_id))
    if task is None or task.state not in OPEN_TASK_STATES:
        return None
    stage = given(d.stage)
    if STAGE_OF_STATE.get(task.state) != stage:
        return None
    if given(d.due_at) != task.due_for(stage):
        return None  # the deadline moved (extension, rework) since this was scheduled
    return task


def _warn(b: _Builder, c: Message, d: ct.WarnDeadline, planner: DeadlinePlanner) -> None:
    task = _deadline_applies(b, d)
    if task is None:
        return
    b.emit(ct.DeadlineWarned(task_id=task.task_id, department=task.department,
                             stage=given(d.stage), due_at=given(d.due_at),
                             fraction=given(d.fraction, None)))


def _breach(b: _Builder, c: Message, d: ct.BreachDeadline, planner: DeadlinePlanner) -> None:
    task = _deadline_applies(b, d)
    if task is None:
        return
    b.emit(ct.DeadlineBreached(task_id=task.task_id, department=task.department,
                               stage=given(d.stage), due_at=given(d.due_at)))


def _escalate(b: _Builder, c: Message, d: ct.EscalateTask, planner: DeadlinePlanner) -> None:
    if c.actor.startswith("system"):
        found = _deadline_applies(b, d)
        if found is None:
            return
        task = found
    else:
        task = _task_for(b, c, d)
    level = given(d.level, task.escalation_level + 1)
    if level <= task.escalation_level:
        return
    b.set_task(_evolve(task, escalation_level=level))
    b.emit(ct.TaskEscalated(
        task_id=task.task_id, department=task.department, level=level,
        level_code=given(d.level_code), level_name=given(d.level_name),
        notify=list(given(d.notify, [])), stage=given(d.stage),
        reason=given(d.reason, "deadline breached without progress"),
        grid_code=b.state.grid_code,
    ))


_HANDLERS: dict[str, Callable[[_Builder, Message, Any, DeadlinePlanner], None]] = {
    ev.FILE_REPORT: _file_report,
    ev.REFUSE_REPORT: _refuse_report,
    ev.RECORD_PHOTO_ARCHIVED: _photo_archived,
    ev.SIGN_TASK: _sign,
    ev.NOTE_PROGRESS: _progress,
    ev.RESOLVE_TASK: _resolve,
    ev.SEND_BACK_TASK: _send_back,
    ev.VERIFY_TASK: _verify,
    ev.REJECT_TASK: _reject,
    ev.RATE_CASE: _rate,
    ev.CANCEL_TASK: _cancel,
    ev.REQUEST_EXTENSION: _request_extension,
    ev.DECIDE_EXTENSION: _decide_extension,
    ev.WHISTLE_CASE: _whistle,
    ev.WARN_DEADLINE: _warn,
    ev.BREACH_DEADLINE: _breach,
    ev.ESCALATE_TASK: _escalate,
    ev.ASSIGN_TASK: _assign,
}
