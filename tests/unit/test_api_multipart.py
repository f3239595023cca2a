"""The streaming multipart reader: parts arrive whole however the body is chunked, and a
malformed or cut-off body is an error, not a short read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from producers.multipart import MAX_PARTS, MultipartError, MultipartReader


def encoded(files: list[tuple[str, tuple[str | None, bytes, str]]]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", files=files)
    return request.headers["content-type"], request.read()


async def chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def read_parts(ctype: str, body: bytes, size: int) -> list[tuple[str, str | None, bytes]]:
    async def main() -> list[tuple[str, str | None, bytes]]:
        reader = MultipartReader(ctype, chunks(body, size))
        out = []
        while (part := await reader.next_part()) is not None:
            data = await reader.read_all(1 << 24)
            assert data is not None
            out.append((part.name, part.filename, data))
        return out

    return asyncio.run(main())


BODY = [
    ("report", (None, '{"说明": "垃圾"}'.encode(), "application/json")),
    ("photos", ("a.jpg", bytes(range(256)) * 400, "image/jpeg")),
    ("photos", ("b.jpg", b"\r\n--not-a-boundary\r\n" * 50, "image/jpeg")),
]


@pytest.mark.parametrize("size", [1, 7, 1000, 1 << 20])
def test_parts_arrive_whole_however_the_body_is_chunked(size: int) -> None:
    ctype, body = encoded(BODY)
    parts = read_parts(ctype, body, size)
    assert [(n, f) for n, f, _ in parts] == [
        ("report", None),
        ("photos", "a.jpg"),
        ("photos", "b.jpg"),
    ]
    assert [d for _, _, d in parts] == [content for _, (_, content, _) in BODY]


def test_a_cut_off_body_is_an_error() -> None:
    ctype, body = encoded(BODY)
    with pytest.raises(MultipartError, match="closing boundary"):
        read_parts(ctype, body[:-20], 1000)


@pytest.mark.parametrize("ctype", [None, "application/json", "multipart/form-data"])
def test_not_multipart_is_an_error(ctype: str | None) -> None:
    with pytest.raises(MultipartError):
        MultipartReader(ctype, chunks(b"", 1))


def test_garbage_is_an_error() -> None:
    ctype, _ = encoded(BODY)
    with pytest.raises(MultipartError):
        read_parts(ctype, b"this is not a multipart body at all", 100)


def test_too_many_parts_is_an_error() -> None:
    ctype, body = encoded(
        [("photos", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(MAX_PARTS + 1)]
    )
    with pytest.raises(MultipartError, match="parts"):
        read_parts(ctype, body, 4096)


def test_an_oversized_part_is_refused_and_the_rest_can_be_drained() -> None:
    ctype, body = encoded(BODY)

    async def main() -> tuple[bytes | None, bool]:
        reader = MultipartReader(ctype, chunks(body, 512))
        await reader.next_part()
        await reader.next_part()
        too_big = await reader.read_all(1000)
        return too_big, await reader.drain(len(body))

    assert asyncio.run(main()) == (None, True)
