"""Send methods (FixMyStreet style): small plug-ins that deliver one notice to one contact.

A method either returns (delivered) or raises `SendFailed` with a reason worth showing to an
operator; it never retries by itself (the notifier keeps the send state and the backoff).
`webhook` POSTs the notice's JSON (at-least-once: the notice id rides along as
`Idempotency-Key` so the receiver can drop a repeat); `log` writes it to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from gridflow.core.notify import Contact, Notice

log = logging.getLogger("gridflow.notify")

MAX_REASON = 500


class SendFailed(Exception):
    """Delivery failed; `reason` says why (HTTP status and body start, timeout, refused, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:MAX_REASON]


class SendMethod(Protocol):
    def send(self, notice: Notice, contact: Contact) -> None: ...


class WebhookMethod:
    """POST the notice as JSON to the contact's URL; any 2xx is delivered."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(follow_redirects=False)

    def send(self, notice: Notice, contact: Contact) -> None:
        headers = {
            "Idempotency-Key": notice.id,
            "X-Gridflow-Notice-Id": notice.id,
            "X-Gridflow-Notice-Kind": notice.kind,
        }
        try:
            r = self.client.post(
                contact.url, json=notice.payload(), headers=headers, timeout=contact.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise SendFailed(
                f"timed out after {contact.timeout_s:g} s ({type(exc).__name__}) / 超时"
            ) from exc
        except httpx.HTTPError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc} / 连接失败") from exc
        if not 200 <= r.status_code < 300:
            body = " ".join(r.text.split())[:200]
            raise SendFailed(f"HTTP {r.status_code}: {body}" if body else f"HTTP {r.status_code}")

    def close(self) -> None:
        self.client.close()


class LogMethod:
    """Write the notice to the log (departments without an endpoint; development)."""

    def send(self, notice: Notice, contact: Contact) -> None:
        log.info("notice %s → %s [%s] %s", notice.id, notice.recipient, notice.kind,
                 notice.text_zh)


def default_methods() -> dict[str, SendMethod]:
    return {"webhook": WebhookMethod(), "log": LogMethod()}


def close_methods(methods: Mapping[str, Any]) -> None:
    for method in methods.values():
        close = getattr(method, "close", None)
        if callable(close):
            close()
