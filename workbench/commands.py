"""How a page's form becomes a command on the log, and how the page learns its outcome.

A form carries `form_key`, a key made when the form was drawn: it is the command's
Idempotency-Key, so submitting the same form twice (a double click, a retry after a timeout)
is one command. The command goes through producers.commands.publish_command (on the log, acks
from Kafka, before the answer); the case processor decides it, and the outcome (accepted, or
refused with the reason) is read back from the read models.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gridflow import events as ev
from gridflow.events import derived_id
from producers.commands import command_id_for, publish_command
from producers.context import Context
from producers.errors import ApiError
from producers.submission import NotPublished
from producers.uploads import PhotoUpload, Received
from workbench.casefile import outcomes
from workbench.web import new_form_key

log = logging.getLogger(__name__)

OUTCOME_WAIT_S = 2.5  # how long a page waits for the processor before showing "pending"


@dataclass(frozen=True)
class FormError:
    field: str
    message: str


class FormInvalid(Exception):
    def __init__(self, errors: list[FormError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


def form_key_of(form: Any) -> str:
    key = str(form.get("form_key") or "").strip()[:64]
    return key or new_form_key()


async def submit(c: Context, actor: str, type_: str, case_id: str, data: dict[str, Any],
                 form_key: str, command_id: str | None = None) -> str:
    """Publish the command; its id. A log that is down becomes a form error (503 kept)."""
    target = data.get("task_id") or case_id
    command_id = command_id or command_id_for(actor, type_, target, form_key)
    try:
        await publish_command(c, actor, type_, case_id, data, form_key, command_id)
    except NotPublished as exc:
        raise FormInvalid([FormError("form", exc.message_zh)]) from exc
    return command_id


def sub_key(form_key: str, *parts: str) -> str:
    """The key of one of several commands a form gives (cancelling every task of a case)."""
    return derived_id(form_key, *parts)[:32]


async def store_photos(c: Context, files: list[Any], task_id: str, command_id: str, role: str,
                       required: bool, field: str = "photos") -> PhotoUpload:
    """Check and store the form's photos in the incoming bucket (as the API's uploads are);
    FormInvalid names what is wrong in Chinese. The caller cleans up if publishing fails."""
    limits = c.photo_limits
    upload = PhotoUpload(c.store, c.settings.bucket_incoming, f"tasks/{task_id}/{command_id[:12]}",
                         role, limits, c.inspect)
    chosen = [f for f in files if isinstance(f, UploadFile) and (f.filename or f.size)]
    if required and not chosen:
        raise FormInvalid([FormError(field, f"请上传1至{limits.max_count}张整改后照片")])
    if len(chosen) > limits.max_count:
        raise FormInvalid([FormError(field, f"最多上传{limits.max_count}张照片, 您选择了{len(chosen)}张")])
    try:
        for i, f in enumerate(chosen, start=1):
            name = f.filename or f"第{i}张"
            data = await f.read(limits.max_bytes + 1)
            if len(data) > limits.max_bytes:
                mb = limits.max_bytes / (1024 * 1024)
                raise FormInvalid([FormError(field, f"照片「{name}」超过{mb:g}MB, 请压缩后重新上传")])
            if not data:
                raise FormInvalid([FormError(field, f"照片「{name}」是空文件")])
            sha = hashlib.sha256(data).hexdigest()
            upload.hashes.append(sha)
            try:
                await run_in_threadpool(upload.put_photo, Received(data, sha, len(upload.hashes)))
            except ApiError as exc:
                raise FormInvalid([FormError(field, f"照片「{name}」: {exc.message_zh}")]) from exc
    except BaseException:
        await upload.cleanup()
        raise
    return upload


async def wait_outcomes(c: Context, command_ids: list[str],
                        timeout_s: float = OUTCOME_WAIT_S) -> dict[str, dict[str, Any]]:
    """The outcomes known within `timeout_s` (the processor usually answers in well under it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = await run_in_threadpool(_outcomes, c, command_ids)
        if len(found) == len(command_ids) or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.15)


def _outcomes(c: Context, command_ids: list[str]) -> dict[str, dict[str, Any]]:
    with Session(c.engine) as session:
        return outcomes(session, command_ids)


ACCEPTED_NOTE = {
    "SignTask": "任务已签收, 开始计算办结期限。",
    "NoteProgress": "进展已记入办理过程。",
    "ResolveTask": "任务已办结, 等待现场核查。",
    "SendBackTask": "任务已退回并改派。",
    "RequestExtension": "延期申请已提交, 等待督办人员审批。",
    "ExtensionGranted": "延期已批准, 办结期限已顺延。",
    "ExtensionRefused": "延期申请已驳回, 驳回理由已告知部门。",
    "CancelTask": "任务已撤销。",
    "WhistleCase": "各报到部门已收到任务。",
    "AssignTask": "承办人已确定。",
}


def outcome_views(ids: list[str], found: dict[str, dict[str, Any]], types: dict[str, str],
                  refresh: str) -> list[dict[str, Any]]:
    """What the page says about each submitted command."""
    views = []
    for cid in ids:
        o = found.get(cid)
        type_ = (o or {}).get("command_type") or types.get(cid, "")
        what = ev.COMMAND_LABELS_ZH.get(type_, "操作") if type_ else "操作"
        if o is None:
            views.append({"command_id": cid, "status": "pending", "what": what, "refresh": refresh})
        elif o.get("accepted"):
            note = ACCEPTED_NOTE.get(str(o.get("event_type")), ACCEPTED_NOTE.get(type_, ""))
            views.append({"command_id": cid, "status": "accepted", "what": what, "note": note})
        else:
            views.append({"command_id": cid, "status": "refused", "what": what,
                          "reason_zh": o.get("reason_zh") or "处理未通过"})
    return views
