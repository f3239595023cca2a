"""The two ends every workbench form shares: the GET route that shows the form, and the first
steps of its POST (who acts, on which case, the form and its form key)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import Response

from accounts.access import allow
from accounts.roles import Principal
from producers.commands import case_actor, case_of_task, task_actor
from producers.context import Context, ctx
from workbench.commands import form_key_of

Show = Callable[[Request, Principal, str], Awaitable[Response]]


def form_page(router: APIRouter, path: str, name: str, summary: str, action: str,
              show: Show) -> None:
    """GET `path` (one path parameter): `show(request, caller, its value)`, for callers allowed
    `action` (401 / 403 otherwise)."""

    async def page(request: Request, caller: Principal) -> Response:
        (value,) = request.path_params.values()
        return await show(request, caller, str(value))

    page.__annotations__["caller"] = Annotated[Principal, allow(action)]
    page.__name__ = name
    router.get(path, summary=summary)(page)


class Posted(NamedTuple):
    c: Context
    actor: str  # the caller acting for `action` on the case
    case_id: str
    form: Any
    key: str  # the form key: the same on a resubmission, so the command is the same


async def task_post(request: Request, caller: Principal, action: str, task_id: str,
                    max_files: int = 0, max_fields: int = 20) -> Posted:
    """A form posted on a task: 404 outside the caller's scope, 403 if `action` is not theirs."""
    c = ctx(request)
    actor = await task_actor(c, caller, action, task_id)
    case_id = case_of_task(task_id)
    form = await request.form(max_files=max_files, max_fields=max_fields)
    return Posted(c, actor, case_id, form, form_key_of(form))


async def case_post(request: Request, caller: Principal, action: str, case_id: str,
                    max_fields: int = 20) -> Posted:
    """A form posted on a case: 404 outside the caller's scope, 403 if `action` is not theirs."""
    c = ctx(request)
    actor = await case_actor(c, caller, action, case_id)
    form = await request.form(max_files=0, max_fields=max_fields)
    return Posted(c, actor, case_id, form, form_key_of(form))
