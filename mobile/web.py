"""What the phone pages share: the Jinja2 templates, the static assets with their content
versions, and the HTML responses.

Guarantee: every asset is served from this package with a version made of its bytes, so a
page or the service worker names exactly the bytes it was built with; a versioned URL is
cached for a year, anything else is revalidated.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_PREFIX = "/m/static/"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json",
         ".webmanifest": "application/manifest+json"}
# Pages are HTML made per request (or the app shell, revalidated): never stored by proxies.
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin"}


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    version: str  # first 12 hex digits of the sha256 of its bytes

    @property
    def url(self) -> str:
        return f"{STATIC_PREFIX}{self.name}?v={self.version}"

    @property
    def media_type(self) -> str:
        suffix = Path(self.name).suffix
        return TYPES.get(suffix) or mimetypes.guess_type(self.name)[0] or "application/octet-stream"


@cache
def assets() -> dict[str, Asset]:
    """Every file under static/ (read once per process)."""
    out: dict[str, Asset] = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            body = path.read_bytes()
            name = path.relative_to(STATIC).as_posix()
            out[name] = Asset(name, body, hashlib.sha256(body).hexdigest()[:12])
    return out


def asset_url(name: str) -> str:
    return assets()[name].url


def bundle_version(names: list[str] | tuple[str, ...]) -> str:
    """One version for a set of assets (the service worker's cache name)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + assets()[name].version.encode())
    return digest.hexdigest()[:12]


def static_response(name: str, version: str | None) -> Response | None:
    asset = assets().get(name)
    if asset is None:
        return None
    cache = ("public, max-age=31536000, immutable" if version == asset.version
             else "no-cache")
    return Response(asset.body, media_type=asset.media_type,
                    headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff",
                             "ETag": f'"{asset.version}"'})


@cache
def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.globals["asset"] = asset_url
    return env


def render(name: str, status: int = 200, headers: dict[str, str] | None = None,
           **values: Any) -> HTMLResponse:
    html = templates().get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def wants_json(request: Request) -> bool:
    """A script asking (fetch with Accept: application/json) rather than a plain form post."""
    return "application/json" in request.headers.get("accept", "")
