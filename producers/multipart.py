"""Streaming multipart/form-data reader: parts and their bytes as they arrive off the socket.

Guarantee: nothing is spooled to disk or buffered beyond the chunk being handed over; the
caller decides how much of a part it keeps, so a size limit is enforced while reading, not
after. A malformed or truncated body raises MultipartError (the API answers 400).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 32
MAX_HEADER_BYTES = 4096


class MultipartError(ValueError):
    """A body that is not well-formed multipart/form-data."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def boundary_of(content_type: str | None) -> bytes:
    if not content_type:
        raise MultipartError("no Content-Type: expected multipart/form-data")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise MultipartError(
            f"Content-Type is {ctype.decode('latin-1')}, expected multipart/form-data"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart/form-data without a boundary")
    return boundary


class MultipartReader:
    """Pulls a request body through python-multipart and hands out parts one at a time.

    Use: `while (part := await reader.next_part()) is not None: async for chunk in
    reader.read(): ...`. Data of a part left unread is skipped by the next `next_part`.
    """

    def __init__(self, content_type: str | None, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._events: deque[tuple[str, object]] = deque()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        self._disposition = b""  # the part's Content-Disposition as sent (bytes)
        self._in_part = False  # between headers_finished and part_end
        self._finished = False  # the body stream is exhausted
        self._ended = False  # the closing boundary was seen
        self._parts = 0
        self._parser = MultipartParser(
            boundary_of(content_type),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # --- parser callbacks: turn into queued events ---------------------------------
    def _on_part_begin(self) -> None:
        self._headers = {}
        self._disposition = b""
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_HEADER_BYTES:
            raise MultipartError("part header too long")

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace").strip()
        if name == "content-disposition":
            self._disposition = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        # Parsed from the bytes as sent: the parser round-trips them through latin-1, so a
        # decoded value with a character beyond latin-1 (a UTF-8 name read as text) would
        # make it raise UnicodeEncodeError, a 500 instead of this 400 (found by fuzzing).
        disposition, options = parse_options_header(self._disposition)
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartError("a part without Content-Disposition: form-data; name=...")
        filename = options.get(b"filename")
        part = Part(
            name=options[b"name"].decode("utf-8", "replace"),
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=self._headers.get("content-type", ""),
            headers=dict(self._headers),
        )
        self._events.append(("part", part))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(("end", None))

    def _on_end(self) -> None:
        self._ended = True
        self._events.append(("finish", None))

    # --- pulling ------------------------------------------------------------------------
    async def _next_event(self) -> tuple[str, object]:
        while not self._events:
            if self._finished:
                return ("finish", None)
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._finished = True
                if not self._ended:
                    raise MultipartError("body ended before the closing boundary") from None
                continue
            if not chunk:
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise MultipartError(f"malformed multipart body: {exc}") from exc
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part's headers, skipping what is left of the current part; None at the end."""
        while True:
            kind, value = await self._next_event()
            if kind == "part":
                self._in_part = True
                assert isinstance(value, Part)
                return value
            if kind == "finish":
                return None
            if kind == "end":
                self._in_part = False

    async def read(self) -> AsyncIterator[bytes]:
        """The current part's bytes, chunk by chunk, as they arrive."""
        while self._in_part:
            kind, value = await self._next_event()
            if kind == "data":
                assert isinstance(value, bytes)
                yield value
            elif kind == "end":
                self._in_part = False
            else:
                raise MultipartError(f"unexpected {kind} inside a part")

    async def drain(self, budget: int) -> bool:
        """Discard the rest of the body unparsed (so the client gets to read our early answer),
        up to `budget` bytes; False if more was left (the connection will be closed)."""
        if self._finished:
            return True
        seen = 0
        async for chunk in self._body:
            seen += len(chunk)
            if seen > budget:
                return False
        self._finished = True
        return True

    async def read_all(self, limit: int) -> bytes | None:
        """The whole current part if it has at most `limit` bytes, else None (rest skipped)."""
        buf = bytearray()
        async for chunk in self.read():
            if len(buf) + len(chunk) > limit:
                return None
            buf += chunk
        return bytes(buf)
