"""What the chaos scenarios (and tests) read from outside: the processes' Prometheus metrics,
and a department's webhook endpoint that counts every notice it is sent.

`scrape(url)` reads a /metrics page into samples; `total(samples, name, **labels)` adds up
the samples of a metric whose labels match. `WebhookReceiver` answers 200 to every POST and
keeps each notice with its `Idempotency-Key`, so a scenario can count deliveries, distinct
notices and repeats (the notifier delivers at least once; the key makes a repeat harmless).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> Samples:
    """Every sample of a Prometheus text page: (name, labels, value)."""
    r = httpx.get(url, headers=headers or {}, timeout=timeout_s)
    r.raise_for_status()
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(r.text) for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def present(samples: Samples, name: str, **labels: str) -> bool:
    return any(n == name and all(lab.get(k) == w for k, w in labels.items())
               for n, lab, _ in samples)


def metrics_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/metrics"


@dataclass
class WebhookReceiver:
    """A department's webhook endpoint on a loopback port: 200 to every POST, each kept."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (key, body)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Idempotency-Key", "")
                with receiver.lock:
                    receiver.received.append((key, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="webhooks", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def per_key(self) -> Counter[str]:
        with self.lock:
            return Counter(key for key, _ in self.received)

    @property
    def deliveries(self) -> int:
        with self.lock:
            return len(self.received)

    @property
    def distinct(self) -> int:
        return len(self.per_key())

    @property
    def repeats(self) -> int:
        """Deliveries of a notice already delivered (same Idempotency-Key)."""
        return sum(n - 1 for n in self.per_key().values())

    def task_ids(self, kind: str | None = None) -> set[str]:
        with self.lock:
            return {str(b.get("task_id")) for _, b in self.received
                    if kind is None or b.get("kind") == kind}
