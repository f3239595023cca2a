"""The claim/publish protocol every report channel shares (the workers' upload, Open311, the
residents' form): claim the report id's receipt, store the photos, publish the event, complete
the receipt; or undo.

Guarantee: an answer of acceptance only after the event is acknowledged by the log (acks=all)
and every photo it references is stored; a failure leaves no photo and no event behind (or,
when the event may be on the log all the same, keeps both for the retry that takes the claim
over); a retry of the same report id is answered with the first answer and publishes nothing
new; the same id with other content is a 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gridflow import events as ev
from gridflow import topics
from gridflow.core import intake
from gridflow.events import Message, canonical_json, derived_id, iso
from producers import receipts
from producers.context import Context
from producers.errors import ApiError
from producers.publisher import PublishError
from producers.uploads import PhotoUpload, Received

log = logging.getLogger(__name__)


def invalid(exc: intake.ReportInvalid) -> ApiError:
    """A report the intake rules refuse → 422 naming the field."""
    return ApiError(422, "invalid_report", exc.reason_zh, exc.reason_en, field=exc.field)


def finalize(data: dict[str, Any], photos: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The event data: validated, normalised (UTC times, stripped text), with the photo refs."""
    try:
        report = intake.validate_report({**data, "photos": photos}, now)
    except intake.ReportInvalid as exc:
        raise invalid(exc) from exc
    extra = {k: v for k, v in data.items()
             if k in ("source", "channel", "worker_grid_code", "device")}
    # The reporter as the case processor compares actors: worker:<id>@<grid>, unshortened.
    return {**report.to_dict(), **extra, "reporter": data["reporter"]}


def request_hash(reporter: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"reporter": reporter, "payload": payload})).hexdigest()


def report_submitted(data: dict[str, Any], at: datetime, case_id: str = "") -> Message:
    """The event on `<p>.reports`; `case_id`: the ticket number answered (intake.ticket_for),
    under which the worker files it."""
    return Message(
        id=derived_id("report", data["report_id"]),
        type=ev.REPORT_SUBMITTED,
        case_id=case_id,
        at=iso(at),
        actor=data["reporter"],
        data=data,
    )


def conflict() -> ApiError:
    return ApiError(
        409,
        "report_id_conflict",
        "该上报编号已用于另一份内容不同的上报",
        "this report_id was already used for a different report",
        field="report_id",
    )


def in_progress() -> ApiError:
    return ApiError(
        409,
        "in_progress",
        "该上报正在处理中, 请稍后重试",
        "this report is being processed; retry shortly",
        headers={"Retry-After": "2"},
    )


class NotPublished(ApiError):
    """503: the log did not acknowledge. `maybe_written`: the record may be on it all the same,
    so what it references must stay."""

    def __init__(self, zh: str, en: str, maybe_written: bool) -> None:
        super().__init__(503, "log_unavailable", zh, en, headers={"Retry-After": "5"})
        self.maybe_written = maybe_written


def publish_failed(maybe_written: bool) -> NotPublished:
    return NotPublished(
        "系统繁忙, 上报未成功, 请稍后重试(内容不会丢失, 可直接重发)",
        "the event log is unavailable; the report was not accepted, retry later",
        maybe_written,
    )


async def claim(
    c: Context, report_id: str, ticket: str, req_hash: str, response: Any, now: datetime
) -> receipts.Claim:
    try:
        return await run_in_threadpool(
            receipts.claim, c.engine, report_id, ticket, req_hash, response, now
        )
    except receipts.ClaimLost as exc:
        raise in_progress() from exc


async def settled(c: Context, report_id: str) -> receipts.Receipt | None:
    """The receipt once done, waiting up to `receipt_wait_s` for a concurrent request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + c.receipt_wait_s
    while True:
        receipt = await run_in_threadpool(receipts.get, c.engine, report_id)
        if receipt is None or receipt.state == receipts.DONE or loop.time() >= deadline:
            return receipt
        await asyncio.sleep(0.1)


async def replay(c: Context, report_id: str, photos_hash: str) -> JSONResponse:
    """Answer a retry with the first answer, once the first request finished."""
    receipt = await settled(c, report_id)
    if receipt is None or receipt.state != receipts.DONE:
        raise in_progress()
    if not receipt.same_photos(photos_hash):
        raise conflict()
    return JSONResponse(receipt.response, status_code=200)


def abandon_sync(
    c: Context, report_id: str, upload: PhotoUpload | None, taken_over: bool, photos_hash: str = ""
) -> None:
    """Undo a request that will not be accepted. A fresh claim is freed and its photos removed;
    a claim taken over from a request whose event may be on the log keeps every object (they
    may be referenced) and stays open for the next retry. Blocking (a worker thread)."""
    if taken_over:
        receipts.expire(c.engine, report_id, photos_hash)
        return
    if upload:
        upload.cleanup_sync()
    receipts.release(c.engine, report_id)


async def abandon(
    c: Context, report_id: str, upload: PhotoUpload | None, taken_over: bool, photos_hash: str = ""
) -> None:
    await run_in_threadpool(abandon_sync, c, report_id, upload, taken_over, photos_hash)


def publish_report_sync(
    c: Context,
    data: dict[str, Any],
    at: datetime,
    upload: PhotoUpload | None,
    taken_over: bool = False,
) -> None:
    """Publish and record the receipt; on failure undo (see `abandon_sync`) and raise the 503.
    Blocking (a worker thread)."""
    report_id = data["report_id"]
    photos_hash = upload.photos_hash() if upload else ""
    try:
        # Keyed by township, with the ticket answered (the same function of the same report and
        # time as the route's): the worker files it in one step (issue 16).
        # (report_key and ticket_for, from one point-in-polygon lookup)
        township = intake.township_at(c.ref, data.get("lat"), data.get("lon"))
        key = township or report_id
        ticket = intake.case_id_for(report_id, at, township)
        c.publisher.publish(c.topic(topics.REPORTS), key, report_submitted(data, at, ticket))
    except PublishError as exc:
        log.warning("report %s not published: %s", report_id, exc)
        # An ack that timed out may still be on the log: then its photos stay and the retry
        # takes the claim over and republishes the very same event (same id, same time).
        abandon_sync(c, report_id, upload, taken_over or exc.maybe_written, photos_hash)
        raise publish_failed(exc.maybe_written) from exc
    try:
        receipts.complete(c.engine, report_id, photos_hash)
    except Exception:  # noqa: BLE001 - the report is on the log: accepted all the same
        log.exception(
            "receipt of %s not completed; a retry will republish the same event", report_id
        )


async def publish_report(
    c: Context,
    data: dict[str, Any],
    at: datetime,
    upload: PhotoUpload | None,
    taken_over: bool = False,
) -> None:
    """`publish_report_sync` in one thread hop (publish, then complete the receipt)."""
    await run_in_threadpool(publish_report_sync, c, data, at, upload, taken_over)


class Submission:
    """The blocking steps of one upload with photos (a grid worker's, a resident's QR form):
    claim the receipt, inspect and store each photo, publish the event, complete the receipt.
    The route runs them in as few thread hops as the body allows (`run`): for a one-photo
    report, all of them in one hop once the body is read; with more photos, one hop per photo
    (so at most one photo is held in memory) and the publish with the last. Whatever fails
    undoes what this request did. `extra`: fields the event carries besides the validated
    report (the residents' contact and place)."""

    def __init__(
        self,
        c: Context,
        report_id: str,
        ticket: str,
        req_hash: str,
        first: dict[str, Any],
        now: datetime,
        data: dict[str, Any],
        upload: PhotoUpload,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.c, self.report_id, self.ticket, self.req_hash = c, report_id, ticket, req_hash
        self.first, self.now, self.data, self.upload = first, now, data, upload
        self.extra = extra or {}
        self.claim: receipts.Claim | None = None
        self.open = False  # holds the claim: must complete, expire or release it

    @property
    def claimed(self) -> bool:
        return self.claim is not None

    @property
    def won(self) -> bool:
        return self.claim is not None and self.claim.won

    @property
    def taken_over(self) -> bool:
        return self.claim is not None and self.claim.receipt is not None

    def take_claim(self) -> None:
        try:
            self.claim = receipts.claim(
                self.c.engine, self.report_id, self.ticket, self.req_hash, self.first, self.now,
                reporter=str(self.data.get("reporter", "")),
            )
        except receipts.ClaimLost as exc:
            raise in_progress() from exc
        if self.claim.won:
            self.open = True
        elif self.claim.receipt is not None and self.claim.receipt.request_hash != self.req_hash:
            raise conflict()

    def store(self, photo: Received) -> None:
        """Inspect and store a photo, if this request holds the claim (a retry being compared
        with the first request only needs the photos' hashes)."""
        if self.won:
            self.upload.put_photo(photo)

    def publish(self) -> dict[str, Any] | None:
        """Publish and complete; the 202 body, or None when another request holds or held the
        claim (the caller replays its answer)."""
        if not self.won:
            return None
        assert self.claim is not None
        taken = self.claim.receipt
        at, body = (taken.created_at, taken.response) if taken else (self.now, self.first)
        if taken and not taken.same_photos(self.upload.photos_hash()):
            raise conflict()
        event_data = {**finalize(self.data, self.upload.ref_dicts(), at), **self.extra}
        self.open = False  # from here on publish_report_sync undoes what a failure needs
        publish_report_sync(self.c, event_data, at, self.upload, taken_over=self.taken_over)
        return dict(body)

    def abandon(self) -> None:
        if self.open:
            self.open = False
            abandon_sync(self.c, self.report_id, self.upload, taken_over=self.taken_over)

    def run(self, steps: list[Callable[[], Any]]) -> Any:
        """Run `steps` in order (one thread hop); the last one's result. Undoes on failure."""
        try:
            result = None
            for step in steps:
                result = step()
            return result
        except BaseException:
            self.abandon()
            raise
