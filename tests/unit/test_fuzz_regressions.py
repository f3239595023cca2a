"""What fuzzing the API from its OpenAPI document found (chaos/fuzz.py, schemathesis), one
regression test each, at the smallest level that shows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from producers.multipart import MultipartError, MultipartReader

BOUNDARY = "51fb20d1c9991c58c6f7aa6d0dc4a344"


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _first_part_name(body: bytes) -> str:
    async def main() -> str:
        reader = MultipartReader(f"multipart/form-data; boundary={BOUNDARY}", _one(body))
        part = await reader.next_part()
        assert part is not None
        return part.name

    return asyncio.run(main())


def _part(disposition: bytes, data: bytes = b"{}") -> bytes:
    return (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition
            + b"\r\n\r\n" + data + b"\r\n--" + BOUNDARY.encode() + b"--\r\n")


def test_a_part_name_beyond_latin_1_is_read_not_a_500() -> None:
    """POST /api/v1/reports answered 500: a part named with a character beyond latin-1 (UTF-8
    bytes, here U+47CB8) made python-multipart's option parser raise UnicodeEncodeError."""
    name = "\x06,\U00047cb8"
    body = _part(b'form-data; name="' + name.encode() + b'"')
    assert _first_part_name(body) == name
    assert _first_part_name(_part('form-data; name="照片"'.encode())) == "照片"


def test_a_part_without_a_form_data_disposition_is_still_a_400() -> None:
    with pytest.raises(MultipartError):
        _first_part_name(_part(b"attachment; filename=x"))


def test_the_routers_refusals_have_the_apis_error_body() -> None:
    """FastAPI's own refusals answered {"detail": ...}: a body it cannot parse (400), an
    unknown path (404), a method not allowed (405)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.exceptions import HTTPException

    from producers.errors import install_handlers

    app = FastAPI()
    install_handlers(app)

    @app.post("/unparsable")
    def unparsable() -> None:  # what FastAPI raises for a body it cannot parse
        raise HTTPException(400, "There was an error parsing the body")

    c = TestClient(app)
    for answer, status, code in ((c.post("/unparsable"), 400, "bad_request"),
                                 (c.get("/nothing"), 404, "not_found"),
                                 (c.get("/unparsable"), 405, "method_not_allowed")):
        assert answer.status_code == status
        body = answer.json()
        assert body["code"] == code and body["message_zh"] and body["message_en"]
        assert "detail" not in body


def test_text_limits_hold_for_the_text_as_sent() -> None:
    """POST /api/v1/tasks/{id}/sign and /verify accepted a note of 2,000+ characters (the
    document's maxLength) because it was stripped before its length was checked."""
    from pydantic import ValidationError

    from producers.commands import ProgressBody, ReasonBody, SignBody, VerifyBody

    padded = "办" + "\f" * 2000
    for model, field in ((SignBody, "note"), (VerifyBody, "note"), (ProgressBody, "note"),
                         (ReasonBody, "reason")):
        with pytest.raises(ValidationError):
            model.model_validate({field: padded})
    assert SignBody.model_validate({"note": "  已到场 \n"}).note == "已到场"
    assert ProgressBody.model_validate({"note": "x" * 2000}).note == "x" * 2000
    for blank in ("   ", "\f\n"):
        with pytest.raises(ValidationError):
            ProgressBody.model_validate({"note": blank})
        with pytest.raises(ValidationError):
            ReasonBody.model_validate({"reason": blank})
    assert SignBody.model_validate({"note": "   "}).note == ""
    schema = SignBody.model_json_schema()["properties"]["note"]
    assert schema["maxLength"] == 2000
