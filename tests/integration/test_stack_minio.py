"""MinIO through the minio SDK on the real local server: put/get, and object lock refusing a delete."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from minio.retention import Retention

from infra.minio import has_object_lock

pytestmark = pytest.mark.integration


def test_up_provisioned_the_gridflow_buckets(stack) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    assert s3.bucket_exists(stack.settings.bucket_incoming)
    assert s3.bucket_exists(stack.settings.bucket_archive)
    assert has_object_lock(s3, stack.settings.bucket_archive)


def test_put_and_get(stack, buckets) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    body = "网格员上报: 河道垃圾".encode() * 1000
    s3.put_object(buckets.incoming, "reports/r1/photo-1.jpg", io.BytesIO(body), len(body),
                  content_type="image/jpeg", metadata={"sha256": "x"})
    stat = s3.stat_object(buckets.incoming, "reports/r1/photo-1.jpg")
    assert stat.size == len(body)
    assert stat.content_type == "image/jpeg"
    response = s3.get_object(buckets.incoming, "reports/r1/photo-1.jpg")
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()
    names = [o.object_name for o in s3.list_objects(buckets.incoming, prefix="reports/", recursive=True)]
    assert names == ["reports/r1/photo-1.jpg"]


def test_retention_refuses_delete_of_locked_version(stack, buckets) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    assert has_object_lock(s3, buckets.archive)
    assert not has_object_lock(s3, buckets.incoming)
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    body = b"archived photo bytes"
    written = s3.put_object(buckets.archive, "sha256/ab/abcdef.jpg", io.BytesIO(body), len(body),
                            retention=Retention(GOVERNANCE, until))
    assert written.version_id, "object lock buckets are versioned"

    retention = s3.get_object_retention(buckets.archive, "sha256/ab/abcdef.jpg")
    assert retention.mode == GOVERNANCE
    assert retention.retain_until_date == until

    with pytest.raises(S3Error) as refused:
        s3.remove_object(buckets.archive, "sha256/ab/abcdef.jpg", version_id=written.version_id)
    # MinIO answers InvalidRequest "Object is WORM protected ..."; AWS S3 answers AccessDenied.
    assert refused.value.code in {"InvalidRequest", "AccessDenied"}, refused.value
    assert refused.value.code == "AccessDenied" or "WORM" in refused.value.message

    # The locked version is still there and readable.
    response = s3.get_object(buckets.archive, "sha256/ab/abcdef.jpg", version_id=written.version_id)
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()
