"""Forms that work before any script loads carry the CSRF token as their first field; this ASGI
middleware hands it to accounts.access as the `X-CSRF-Token` header that module checks.

Guarantee: only POSTs under the pages' prefixes that carry the session cookie and no CSRF header
are looked at; at most the first part of a multipart body (FIRST_PART_MAX bytes) or a whole
urlencoded body (URLENCODED_MAX bytes) is held before the request goes on, and the route reads
the body unchanged. This module checks nothing itself: accounts.access compares the token with
the session's, so a missing or wrong field is refused there exactly as a missing header is.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from accounts.access import CSRF_HEADER, SESSION_COOKIE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

FIELD = "csrf_token"
FIRST_PART_MAX = 16 * 1024
URLENCODED_MAX = 256 * 1024
_BOUNDARY = re.compile(r'boundary="?([^";,]+)"?', re.IGNORECASE)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def has_session_cookie(cookie_header: str | None) -> bool:
    if not cookie_header:
        return False
    return any(part.strip().startswith(f"{SESSION_COOKIE}=") for part in cookie_header.split(";"))


def token_in_multipart(data: bytes, boundary: str) -> tuple[str | None, bool]:
    """(the token, whether the first part is complete) from the start of a multipart body.

    The token counts only as the body's first part, named csrf_token."""
    opening = b"--" + boundary.encode("latin-1")
    start = data.find(opening)
    if start < 0:
        return None, len(data) > len(opening) + 4
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        return None, False
    head = data[start + len(opening):head_end].decode("latin-1")
    if not re.search(rf'name="?{FIELD}"?(;|\s|$)', head, re.IGNORECASE):
        return None, True
    value_end = data.find(b"\r\n" + opening, head_end + 4)
    if value_end < 0:
        return None, False
    value = data[head_end + 4:value_end].decode("latin-1").strip()
    return (value if _TOKEN.match(value) else None), True


def token_in_urlencoded(data: bytes) -> str | None:
    for key, value in parse_qsl(data.decode("latin-1"), keep_blank_values=True):
        if key == FIELD:
            return value if _TOKEN.match(value) else None
    return None


class FormCsrf:
    """`app.add_middleware(FormCsrf, prefixes=("/w/", "/s/"))`."""

    def __init__(self, app: App, prefixes: tuple[str, ...] = ("/w/",)) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not str(scope.get("path", "")).startswith(self.prefixes)
                or _header(scope, CSRF_HEADER.lower().encode()) is not None
                or not has_session_cookie(_header(scope, b"cookie"))):
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type") or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            limit, boundary = URLENCODED_MAX, None
        elif content_type.startswith("multipart/form-data"):
            m = _BOUNDARY.search(content_type)
            if m is None:
                await self.app(scope, receive, send)
                return
            limit, boundary = FIRST_PART_MAX, m.group(1)
        else:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        data = b""
        token: str | None = None
        more = True
        while more and len(data) <= limit:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            data += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if boundary is not None:
                token, done = token_in_multipart(data, boundary)
                if done:
                    break
            elif not more:
                token = token_in_urlencoded(data)
        if token is not None:
            scope = dict(scope)
            scope["headers"] = [*scope["headers"], (CSRF_HEADER.lower().encode(), token.encode())]

        async def replay() -> Message:
            if held:
                return held.pop(0)
            return await receive()

        await self.app(scope, replay, send)
