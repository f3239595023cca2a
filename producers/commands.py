"""Task and case commands from department staff, supervisors and grid workers.

The API only authenticates, checks the shape and publishes the command to case-commands
(keyed by case id) once Kafka acknowledged it; the case processor decides it (accepted or
refused with a reason), and `GET /api/v1/commands/{id}` reads the outcome. A client-sent
`Idempotency-Key` header makes the command id deterministic, so a retried POST is the same
command and the processor applies it once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)
from starlette.concurrency import run_in_threadpool

from accounts import facts
from accounts.access import acting, allow, not_found
from accounts.roles import CaseFacts, Principal, actor_of
from gridflow import events as ev
from gridflow import topics
from gridflow.core.refdata import ReferenceData
from gridflow.events import Message, derived_id, iso
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.publisher import PublishError
from producers.reports import (
    multipart_doc,
    read_json_part,
    receive_photos,
    with_multipart,
)
from producers.status import case_township
from producers.submission import NotPublished
from producers.uploads import PhotoUpload

router = APIRouter(tags=["commands 任务指令"])

TASK_ID_RE = re.compile(r"^(?P<case>[A-Za-z0-9_.-]{1,60})-T(?P<n>\d{2,4})$")
CASE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")



def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be blank")
    return value


# The length limits hold for the text as sent (what the OpenAPI document says), then it is
# stripped: stripping first let a note of 2,000 characters and any amount of whitespace
# through (found by fuzzing: a schema-violating body accepted).
Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(str.strip)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000),
                   AfterValidator(str.strip), AfterValidator(_not_blank)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000),
                 AfterValidator(str.strip), AfterValidator(_not_blank)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignBody(_Body):
    note: Text = ""


class ProgressBody(_Body):
    note: Note = Field(description="处置进展 / progress note")


class ResolutionPart(_Body):
    note: Note = Field(description="办结说明 / what was done")


class SendBackBody(_Body):
    reason: Reason = Field(description="退单理由 / why this is not ours")
    reroute_to: str | None = Field(
        None,
        description="改派部门编码; 缺省为案件所在乡镇(街道)综治中心 / department code to "
        "re-route to; default: the case's township 综治中心",
    )


class ExtensionBody(_Body):
    days: float = Field(gt=0, le=30, description="延期工作日数 / working days (0 < days <= 30)")
    reason: Reason


class ExtensionDecisionBody(_Body):
    approve: StrictBool
    reason: Text = ""


class VerifyBody(_Body):
    note: Text = ""


class ReasonBody(_Body):
    reason: Reason


class RatingBody(_Body):
    score: StrictInt = Field(ge=1, le=5, description="满意度 1–5 / satisfaction 1–5")
    comment: Text = ""


class WhistleBody(_Body):
    departments: list[str] = Field(
        min_length=1, max_length=20, description="报到部门编码 / departments to whistle up"
    )
    reason: Text = ""


class Accepted(BaseModel):
    command_id: str
    case_id: str
    task_id: str | None = None
    status: str = "submitted"
    status_url: str


# --- pure parts ------------------------------------------------------------------------


def case_of_task(task_id: str) -> str:
    """`<case_id>-T01` → case id; 422 for anything else."""
    m = TASK_ID_RE.match(task_id)
    if not m:
        raise ApiError(
            422,
            "bad_task_id",
            "任务编号格式错误(应为 <案件编号>-T01)",
            "task id must look like <case_id>-T01",
            field="task_id",
        )
    return m.group("case")


def check_case_id(case_id: str) -> str:
    if not CASE_ID_RE.match(case_id):
        raise ApiError(422, "bad_case_id", "案件编号格式错误", "malformed case id", field="case_id")
    return case_id


def check_department(ref: ReferenceData, code: str, field: str) -> str:
    if code not in ref.departments:
        raise ApiError(
            422,
            "unknown_department",
            f"部门编码「{code}」不存在",
            f"unknown department code {code!r}",
            field=field,
        )
    return code


def township_centre(ref: ReferenceData, township_code: str) -> str | None:
    """The township's 综治中心 (comprehensive governance centre), where send-backs go by default."""
    for dept in ref.departments.values():
        if (
            dept.level == "township"
            and dept.area_code == township_code
            and dept.short_name == "综治中心"
        ):
            return dept.code
    return None


def command_id_for(actor: str, type_: str, target: str, idempotency_key: str | None) -> str:
    if idempotency_key:
        return derived_id("command", actor, type_, target, idempotency_key.strip())
    return uuid.uuid4().hex


def command_message(
    command_id: str, type_: str, case_id: str, actor: str, at: str, data: dict[str, Any]
) -> Message:
    return Message(id=command_id, type=type_, case_id=case_id, at=at, actor=actor, data=data)


# --- publishing ----------------------------------------------------------------------------


async def publish_command(
    c: Context,
    actor: str,
    type_: str,
    case_id: str,
    data: dict[str, Any],
    idempotency_key: str | None,
    command_id: str | None = None,
) -> JSONResponse:
    target = data.get("task_id") or case_id
    command_id = command_id or command_id_for(actor, type_, target, idempotency_key)
    at = iso(c.clock())

    def stamp_and_publish() -> None:
        # The seq of the case's last event the read models hold: a worker whose state of the
        # case is behind it (a crash lost the state, the input is read again) waits for it
        # before deciding this command (gridflow.core.case.decide).
        seen = facts.case_seq(c.engine, case_id)
        stamped = {**data, "seen_seq": seen} if seen else data
        msg = command_message(command_id, type_, case_id, actor, at, stamped)
        c.publisher.publish(c.topic(topics.CASE_COMMANDS), case_id, msg)

    try:
        await run_in_threadpool(stamp_and_publish)
    except PublishError as exc:
        raise NotPublished(
            "系统繁忙, 指令未提交, 请稍后重试",
            "the event log is unavailable; the command was not submitted, retry later",
            exc.maybe_written,
        ) from exc
    body = Accepted(
        command_id=command_id,
        case_id=case_id,
        task_id=data.get("task_id"),
        status_url=f"/api/v1/commands/{command_id}",
    )
    return JSONResponse(body.model_dump(), status_code=202)


async def publish_with_photos(
    c: Context,
    reader: Any,
    upload: PhotoUpload,
    actor: str,
    type_: str,
    case_id: str,
    data: Callable[[list[dict[str, Any]]], dict[str, Any]],
    idempotency_key: str | None,
    command_id: str,
) -> JSONResponse:
    """Stores the photo parts that follow on `reader`, then publishes the command whose data
    `data(photo refs)` makes. The stored photos are removed when anything fails, unless the
    command may be on the log anyway (then they must stay: the command names them)."""
    try:
        await receive_photos(reader, upload, store=True)
        return await publish_command(
            c, actor, type_, case_id, data(upload.ref_dicts()), idempotency_key, command_id
        )
    except NotPublished as exc:
        if not exc.maybe_written:
            await upload.cleanup()
        raise
    except BaseException:
        await upload.cleanup()
        raise


TaskId = Annotated[str, Path(description="任务编号 / task id, e.g. AJ20261123-ABCDEFGH-T01")]
IdemKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="重试时保持不变 / same value on retries"),
]
RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "submitted: the command is on the log; poll status_url"},
    401: {"description": "not signed in"},
    403: {"description": "the caller's role may not give this command"},
    404: {"description": "no such task or case inside the caller's scope"},
    422: {"description": "invalid body"},
    503: {"description": "log unavailable: retry"},
}


def task_missing(task_id: str) -> ApiError:
    """The answer for a task that does not exist and for one outside the caller's scope."""
    return not_found("task_not_found", "未找到该任务", f"no task {task_id!r}", field="task_id")


def case_missing(case_id: str) -> ApiError:
    return not_found("case_not_found", "未找到该案件", f"no case {case_id!r}", field="case_id")


async def task_actor(c: Context, caller: Principal, action: str, task_id: str) -> str:
    """The actor the caller gives this task command as (404 / 403 outside their scope)."""
    case_of_task(task_id)
    found: CaseFacts | None = await run_in_threadpool(facts.task_facts, c.engine, task_id)
    return actor_of(caller, acting(caller, action, found, task_missing(task_id)))


async def case_actor(c: Context, caller: Principal, action: str, case_id: str) -> str:
    check_case_id(case_id)
    found: CaseFacts | None = await run_in_threadpool(facts.case_facts, c.engine, case_id)
    return actor_of(caller, acting(caller, action, found, case_missing(case_id)))


def command_route(path: str, summary: str, **extra: Any) -> Callable[[Any], Any]:
    """POST `path`: a command route, answered 202 Accepted once the command is on the log."""
    return router.post(
        path, status_code=202, response_model=Accepted, summary=summary, responses=RESPONSES,
        **extra,
    )


def _task_command(path: str, type_: str, action: str, model: type[BaseModel], summary: str) -> None:
    async def handler(
        task_id: TaskId,
        body: model,  # type: ignore[valid-type]  # FastAPI reads the model class at runtime
        request: Request,
        caller: Principal,
        idempotency_key: IdemKey = None,
    ) -> JSONResponse:
        c = ctx(request)
        actor = await task_actor(c, caller, action, task_id)
        data = {"task_id": task_id, **body.model_dump()}  # type: ignore[attr-defined]
        return await publish_command(
            c, actor, type_, case_of_task(task_id), data, idempotency_key
        )

    handler.__annotations__["body"] = model  # a class, not the string "model", for FastAPI
    handler.__annotations__["caller"] = Annotated[Principal, allow(action)]
    handler.__name__ = f"{type_[0].lower()}{type_[1:]}"
    command_route(f"/api/v1/tasks/{{task_id}}/{path}", summary)(handler)


_task_command("sign", ev.SIGN_TASK, "task.sign", SignBody, "签收 / sign for a task")
_task_command("progress", ev.NOTE_PROGRESS, "task.progress", ProgressBody, "处置进展 / note progress")
_task_command(
    "extension", ev.REQUEST_EXTENSION, "task.extension", ExtensionBody,
    "延期申请 / request an extension",
)
_task_command(
    "extension/decision",
    ev.DECIDE_EXTENSION,
    "task.decide_extension",
    ExtensionDecisionBody,
    "延期审批 / approve or refuse an extension",
)
_task_command(
    "verify", ev.VERIFY_TASK, "task.verify", VerifyBody, "核查通过 / verify the fix on site"
)
_task_command(
    "reject",
    ev.REJECT_TASK,
    "task.verify",
    ReasonBody,
    "核查不通过 / the fix failed verification",
)
_task_command("cancel", ev.CANCEL_TASK, "task.cancel", ReasonBody, "撤销 / cancel a task")


@command_route(
    "/api/v1/tasks/{task_id}/send-back",
    "退单 / send a task back as not this department's",
)
async def send_back(
    task_id: TaskId,
    body: SendBackBody,
    request: Request,
    caller: Annotated[Principal, allow("task.send_back")],
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    c = ctx(request)
    actor = await task_actor(c, caller, "task.send_back", task_id)
    case_id = case_of_task(task_id)
    if body.reroute_to:
        target = check_department(c.ref, body.reroute_to.strip(), "reroute_to")
    else:
        target = await default_reroute(c, case_id)
    data = {"task_id": task_id, "reason": body.reason, "reroute_to": target}
    return await publish_command(c, actor, ev.SEND_BACK_TASK, case_id, data, idempotency_key)


async def default_reroute(c: Context, case_id: str) -> str:
    township = await run_in_threadpool(case_township, c, case_id)
    centre = township_centre(c.ref, township) if township else None
    if centre is None:
        raise ApiError(
            422,
            "reroute_required",
            "无法确定案件所在乡镇, 请指定改派部门 reroute_to",
            "the case's township is not known (yet): name reroute_to",
            field="reroute_to",
        )
    return centre


RESOLVE_DOC = multipart_doc(
    "resolution", 'JSON {"note": "..."}; the first part 须为第一个部分', "1–9 after photos 整改后照片"
)


@command_route(
    "/api/v1/tasks/{task_id}/resolve",
    "办结 / resolve a task with after photos",
    openapi_extra=RESOLVE_DOC,
)
async def resolve(
    task_id: TaskId,
    request: Request,
    caller: Annotated[Principal, allow("task.resolve")],
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    c = ctx(request)
    actor = await task_actor(c, caller, "task.resolve", task_id)
    case_id = case_of_task(task_id)
    command_id = command_id_for(actor, ev.RESOLVE_TASK, task_id, idempotency_key)

    async def handle(reader: Any) -> JSONResponse:
        raw = await read_json_part(reader, "resolution")
        try:
            part = ResolutionPart.model_validate(raw)
        except ValueError as exc:
            raise ApiError(
                422,
                "invalid_resolution",
                "办结说明不能为空, 且仅含 note 字段",
                f"the resolution part needs a non-empty note: {exc}",
                field="resolution.note",
            ) from exc
        upload = PhotoUpload(
            c.store,
            c.settings.bucket_incoming,
            f"tasks/{task_id}/{command_id[:12]}",
            "after",
            c.photo_limits,
            c.inspect,
        )
        return await publish_with_photos(
            c,
            reader,
            upload,
            actor,
            ev.RESOLVE_TASK,
            case_id,
            lambda photos: {"task_id": task_id, "note": part.note, "photos": photos},
            idempotency_key,
            command_id,
        )

    return await with_multipart(request, handle)


@command_route(
    "/api/v1/cases/{case_id}/rating",
    "回访评价 / rate a closed case",
)
async def rate(
    case_id: str,
    body: RatingBody,
    request: Request,
    caller: Annotated[Principal, allow("case.rate")],
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    c = ctx(request)
    actor = await case_actor(c, caller, "case.rate", case_id)
    data = body.model_dump()
    return await publish_command(c, actor, ev.RATE_CASE, case_id, data, idempotency_key)


@command_route(
    "/api/v1/cases/{case_id}/whistle",
    "吹哨报到 / whistle departments up to a case",
)
async def whistle(
    case_id: str,
    body: WhistleBody,
    request: Request,
    caller: Annotated[Principal, allow("case.whistle")],
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    c = ctx(request)
    actor = await case_actor(c, caller, "case.whistle", case_id)
    departments = [
        check_department(c.ref, d.strip(), f"departments[{i}]")
        for i, d in enumerate(body.departments)
    ]
    data = {"departments": list(dict.fromkeys(departments)), "reason": body.reason}
    return await publish_command(c, actor, ev.WHISTLE_CASE, case_id, data, idempotency_key)
