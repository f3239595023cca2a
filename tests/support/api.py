"""Test helpers for the ingest API's tests: one test's API on the real stack (`ApiEnv`), and
whether an answer speaks Chinese (`chinese`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from demo.live import read_topic


def report_id_of(record: Any) -> str:
    """The report id of a record on `<p>.reports` ("" when it has none): the topic is keyed by
    township (intake.report_key), so the id is read from the ReportSubmitted itself."""
    from gridflow import topics

    return topics.report_id_of(record.value)


def chinese(text: str | None) -> bool:
    """Whether a message says something in Chinese (the user-facing half of every error)."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


class ApiEnv:
    """One test's API on the real stack: a LiveApi over real deps, plus ways to look behind it
    (objects in the incoming bucket, records on a topic)."""

    def __init__(self, settings: Any, s3: Any, deps: Any, url: str) -> None:
        self.settings, self.s3, self.deps, self.url = settings, s3, deps, url

    def topic(self, spec: Any) -> str:
        return str(spec.name(self.settings.topic_prefix))

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        bucket = self.settings.bucket_incoming
        out = {}
        for o in self.s3.list_objects(bucket, prefix=prefix, recursive=True):
            resp = self.s3.get_object(bucket, o.object_name)
            try:
                out[o.object_name] = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return out

    def records(
        self, spec: Any, key: str, until: Callable[[Any], bool] | None = None, timeout_s: float = 60
    ) -> list[Any]:
        """Records of a catalogue topic, read until one keyed `key` (and matching `until`)."""
        want = key.encode()
        return self.read(
            spec,
            lambda rs: any(r.key == want and (until is None or until(r)) for r in rs),
            timeout_s,
        )

    def report_records(self, report_id: str, timeout_s: float = 60) -> list[Any]:
        """Records of the reports topic, read until report `report_id` is among them (the topic
        is keyed by township since issue 16, so the key does not name the report)."""
        from gridflow import topics

        return self.read(topics.REPORTS,
                         lambda rs: any(report_id_of(r) == report_id for r in rs), timeout_s)

    def read(
        self, spec: Any, until: Callable[[list[Any]], bool], timeout_s: float = 60
    ) -> list[Any]:
        """Records of a catalogue topic, read until `until(records)` holds (or time is up)."""
        return read_topic(self.settings.kafka_bootstrap, self.topic(spec), until, timeout_s)
