"""The phone doors' routes in one router, included by the API (producers.app): the static
assets, the residents' QR page (/r/) and the grid worker's app (/m/)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from accounts.access import public
from accounts.roles import Principal
from mobile import resident, worker
from mobile.web import static_response
from producers.errors import ApiError

router = APIRouter()


@router.get("/m/static/{name:path}", summary="手机页面的静态文件 / the phone pages' assets",
            include_in_schema=False)
def static_asset(
    name: str, request: Request,
    _: Annotated[Principal | None, public("手机页面的脚本、样式和图标: 公开")],
    v: str | None = Query(None),
) -> Response:
    found = static_response(request, name, v)
    if found is None:
        raise ApiError(404, "not_found", "未找到该文件", f"no asset {name!r}")
    return found


router.include_router(resident.router)
router.include_router(worker.router)
