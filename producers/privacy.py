"""Residents' personal data over HTTP: a case's contact details for the call-back (回访), masked
unless the caller's role calls residents back, every unmasked read recorded first; and the
auditors' list of those records per case or per person.

Guarantee: unmasked data is answered only after its access record is on the log (acks=all);
when the log is unavailable the answer is masked and says so.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from accounts import facts
from accounts.access import allow, in_scope, not_found
from accounts.access_log import AccessLog
from accounts.pii import contact_view, has_personal_data
from accounts.roles import Principal, sees_unmasked
from accounts.web import client_address
from producers.context import Context, ctx

router = APIRouter(tags=["privacy 个人信息"])

MASKED_NOTE = ("访问记录暂不可用, 个人信息已隐藏, 请稍后重试",
               "the access log is unavailable: personal data stays masked, retry later")


def access_log(c: Context) -> AccessLog:
    return AccessLog(c.publisher, c.settings.kafka_bootstrap, c.settings.topic_prefix)


def contacts_for(engine: Any, log: AccessLog, caller: Principal, case_id: str, route: str,
                 client: str) -> dict[str, Any] | None:
    """The case's residents' contacts as the caller may see them (None: no such case in their
    scope). Blocking: reads the database and, for an unmasked view, writes the access record."""
    case = facts.case_facts(engine, case_id)
    if not in_scope(caller, case):
        return None
    assert case is not None
    contacts = facts.case_contacts(engine, case_id)
    unmasked = sees_unmasked(caller, case)
    note = None
    fields = has_personal_data([c["contact"] for c in contacts])
    if unmasked and fields and not log.record(caller, case_id, fields, route, client):
        unmasked, note = False, MASKED_NOTE
    return {
        "case_id": case_id,
        "masked": not unmasked,
        "note_zh": note[0] if note else None,
        "note_en": note[1] if note else None,
        "contacts": [{"report_id": c["report_id"], **contact_view(c["contact"], unmasked)}
                     for c in contacts],
    }


@router.get("/api/v1/cases/{case_id}/contacts",
            summary="回访联系方式 / the residents' contacts of a case (masked unless 回访)")
async def case_contacts(
    case_id: str, request: Request, caller: Annotated[Principal, allow("case.read")]
) -> JSONResponse:
    c = ctx(request)
    client = client_address(request)
    found = await run_in_threadpool(contacts_for, c.engine, access_log(c), caller, case_id,
                                    "GET /api/v1/cases/{case_id}/contacts", client)
    if found is None:
        raise not_found("case_not_found", "未找到该案件", f"no case {case_id!r}", field="case_id")
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


@router.get("/api/v1/audit/access-log",
            summary="个人信息访问记录 / who read personal data, per case or per person")
async def access_log_entries(
    request: Request,
    caller: Annotated[Principal, allow("access_log.read")],
    case_id: str | None = Query(None, max_length=64, description="案件编号 / case id"),
    account_id: str | None = Query(None, max_length=32, description="账号编号 / account id"),
    limit: int = Query(1000, ge=1, le=10000),
) -> JSONResponse:
    log = access_log(ctx(request))
    entries = await run_in_threadpool(log.entries, case_id, account_id, limit)
    return JSONResponse({"case_id": case_id, "account_id": account_id, "count": len(entries),
                         "entries": entries})
