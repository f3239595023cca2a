"""Photo parts of an upload: stream, bound, hash, inspect, store under a deterministic key.

Guarantee: at most `max_bytes` of one photo is held in memory (the part is refused the
moment it grows past the limit); a photo is stored only after its bytes passed inspection;
the key is `<prefix>/<index>-<sha256[:16]>.<ext>`, so a retried upload rewrites the same
objects; `cleanup` removes every object this upload wrote (call it when the request fails).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from gridflow.core import photos
from gridflow.events import PhotoRef
from producers.errors import ApiError, unavailable
from producers.multipart import MultipartReader
from producers.store import ObjectStore, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoLimits:
    max_bytes: int
    max_pixels: int
    max_count: int = 9
    min_count: int = 1


@dataclass(frozen=True)
class Inspected:
    content_type: str  # from the bytes, never from the client's header
    ext: str


# (bytes, their sha256) -> Inspected, or raises photos.PhotoRejected. See `photo_inspector`.
Inspector = Callable[[bytes, str], Inspected]

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/heic": "heic"}
# HTTP status of each gridflow.core.photos refusal: not a picture at all → 415, a picture we
# will not take (cut off, corrupt, a pixel bomb) → 422, over the byte limit → 413.
REJECTION_STATUS = {"not_image": 415, "heic_unsupported": 415, "too_large": 413}


def rejected(exc: photos.PhotoRejected, field_name: str) -> ApiError:
    status = REJECTION_STATUS.get(exc.code, 422)
    return ApiError(status, f"photo_{exc.code}", exc.message_zh, exc.message_en, field=field_name)


def photo_inspector(limits: PhotoLimits) -> Inspector:
    """Inspection by the bytes with gridflow.core.photos: every check, one (reduced) decode;
    the sha256 the caller computed while the bytes arrived is not computed again."""

    def inspect(data: bytes, sha256: str) -> Inspected:
        info = photos.inspect_photo(data, limits.max_bytes, limits.max_pixels, sha256=sha256)
        return Inspected(info.content_type, EXTENSIONS[info.content_type])

    return inspect


def too_large(max_bytes: int, field_name: str) -> ApiError:
    mb = max_bytes / (1024 * 1024)
    return ApiError(
        413,
        "photo_too_large",
        f"照片超过{mb:g}MB上限, 请压缩后重新上传",
        f"photo exceeds the {mb:g} MB limit",
        field=field_name,
    )


def count_error(limits: PhotoLimits, got: int) -> ApiError:
    if got < limits.min_count:
        return ApiError(
            422,
            "photo_count",
            f"请至少上传{limits.min_count}张照片",
            f"at least {limits.min_count} photo(s) required, got {got}",
            field="photos",
        )
    return ApiError(
        422,
        "photo_count",
        f"最多上传{limits.max_count}张照片",
        f"at most {limits.max_count} photos, got {got}",
        field="photos",
    )


async def read_bounded(
    reader: MultipartReader, max_bytes: int, field_name: str, keep: bool = True
) -> tuple[bytes, str]:
    """The current part (b"" unless `keep`) and its sha256, hashed as the chunks arrive;
    refused (413) as soon as it grows past `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    digest = hashlib.sha256()
    async for chunk in reader.read():
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes, field_name)
        digest.update(chunk)
        if keep:
            chunks.append(chunk)
    return b"".join(chunks), digest.hexdigest()  # one copy of the photo, not two


@dataclass(frozen=True)
class Received:
    """A photo part read whole, not yet inspected or stored."""

    data: bytes
    sha256: str
    index: int  # 1-based position among the request's photos

    @property
    def field_name(self) -> str:
        return f"photos[{self.index - 1}]"


@dataclass
class PhotoUpload:
    """The photos of one request, as they are written; `refs` go into the event."""

    store: ObjectStore
    bucket: str
    prefix: str  # reports/<report_id> or tasks/<task_id>
    role: str  # before | after
    limits: PhotoLimits
    inspect: Inspector
    refs: list[PhotoRef] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def field_name(self) -> str:
        return f"photos[{len(self.hashes)}]"

    def check_room(self) -> None:
        if len(self.hashes) >= self.limits.max_count:
            raise count_error(self.limits, len(self.hashes) + 1)

    def check_count(self) -> None:
        if not self.limits.min_count <= len(self.hashes) <= self.limits.max_count:
            raise count_error(self.limits, len(self.hashes))

    async def read(self, reader: MultipartReader) -> Received:
        """The current part's bytes and sha256, nothing stored yet (see `put_photo`). Refused
        (413) as soon as it grows past the byte limit, (422) when empty."""
        self.check_room()
        name = self.field_name()
        data, sha = await read_bounded(reader, self.limits.max_bytes, name)
        if not data:
            raise ApiError(
                422, "photo_empty", "照片内容为空", "the photo part is empty", field=name
            )
        self.hashes.append(sha)
        return Received(data, sha, len(self.hashes))

    def put_photo(self, photo: Received) -> PhotoRef:
        """Inspect a photo `read` returned and store it; the ref of what was stored. Blocking:
        call it from a worker thread (see producers.submission.Submission)."""
        data, sha = photo.data, photo.sha256
        try:
            info = self.inspect(data, sha)
        except photos.PhotoRejected as exc:
            raise rejected(exc, photo.field_name) from exc
        key = f"{self.prefix}/{photo.index}-{sha[:16]}.{info.ext}"
        try:
            self.store.put(self.bucket, key, data, info.content_type, {"sha256": sha})
        except StoreError as exc:
            log.warning("photo store failed: %s", exc)
            raise unavailable(
                "照片存储暂不可用, 请稍后重试",
                "photo storage is unavailable, retry later",
                code="store_unavailable",
            ) from exc
        self.written.append(key)
        ref = PhotoRef(self.bucket, key, len(data), sha, info.content_type, self.role)
        self.refs.append(ref)
        return ref

    async def receive(self, reader: MultipartReader) -> PhotoRef:
        """Read the current part, inspect it, store it (one thread hop); the ref stored."""
        return await run_in_threadpool(self.put_photo, await self.read(reader))

    async def hash_only(self, reader: MultipartReader) -> str:
        """Read the current part for its sha256 only (a retry being compared, not stored)."""
        self.check_room()
        _, sha = await read_bounded(reader, self.limits.max_bytes, self.field_name(), keep=False)
        self.hashes.append(sha)
        return sha

    def photos_hash(self) -> str:
        return hashlib.sha256(",".join(self.hashes).encode()).hexdigest()

    def ref_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.refs]

    async def cleanup(self) -> None:
        """Remove what this request wrote; failures are logged, never raised."""
        if self.written:
            await run_in_threadpool(self.cleanup_sync)

    def cleanup_sync(self) -> None:
        """`cleanup`, blocking (from a worker thread)."""
        for key in self.written:
            try:
                self.store.remove(self.bucket, key)
            except StoreError:
                log.exception("could not remove %s/%s after a failed upload", self.bucket, key)
        self.written.clear()
