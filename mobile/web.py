"""What the phone pages share: the Jinja2 templates, the static assets with their content
versions, and the HTML responses.

Guarantee: every asset is served from this package with a version made of its bytes, so a
page or the service worker names exactly the bytes it was built with; a versioned URL is
cached for a year, anything else is revalidated.
"""

from __future__ import annotations

import gzip
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


COMPRESSIBLE = (".js", ".css", ".svg", ".json", ".webmanifest")


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    version: str  # first 12 hex digits of the sha256 of its bytes
    gz: bytes | None = None  # gzip of the body for text assets (weak rural networks)

    @property
    def url(self) -> str:
        return f"{STATIC_PREFIX}{self.name}?v={self.version}"

    @property
    def media_type(self) -> str:
        suffix = Path(self.name).suffix
        return TYPES.get(suffix) or mimetypes.guess_type(self.name)[0] or "application/octet-stream"


# The worker app's scripts as one file (one request, one cache lookup on a slow phone); the
# service worker imports idb.js and queue.js on their own.
BUNDLES = {"app.bundle.js": ("idb.js", "photo.js", "queue.js", "app.js")}


def _asset(name: str, body: bytes) -> Asset:
    gz = gzip.compress(body, 9, mtime=0) if Path(name).suffix in COMPRESSIBLE else None
    return Asset(name, body, hashlib.sha256(body).hexdigest()[:12], gz)


@cache
def assets() -> dict[str, Asset]:
    """Every file under static/ and the bundles made of them (read once per process)."""
    out: dict[str, Asset] = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            name = path.relative_to(STATIC).as_posix()
            out[name] = _asset(name, path.read_bytes())
    for name, parts in BUNDLES.items():
        out[name] = _asset(name, b";\n".join(out[p].body for p in parts))
    return out


def asset_url(name: str) -> str:
    return assets()[name].url


def bundle_version(names: list[str] | tuple[str, ...]) -> str:
    """One version for a set of assets (the service worker's cache name)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + assets()[name].version.encode())
    return digest.hexdigest()[:12]


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def maybe_gzip(request: Request, body: bytes, gz: bytes | None, media_type: str,
               headers: dict[str, str]) -> Response:
    """The body gzipped when the client takes it (and it pays), else as it is."""
    headers = {**headers, "Vary": "Accept-Encoding"}
    if gz is not None and len(gz) < len(body) and accepts_gzip(request):
        return Response(gz, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=media_type, headers=headers)


def static_response(request: Request, name: str, version: str | None) -> Response | None:
    asset = assets().get(name)
    if asset is None:
        return None
    cache = ("public, max-age=31536000, immutable" if version == asset.version
             else "no-cache")
    return maybe_gzip(request, asset.body, asset.gz, asset.media_type,
                      {"Cache-Control": cache, "X-Content-Type-Options": "nosniff",
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
