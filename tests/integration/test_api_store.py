"""The API's MinIO client signs a photo put with the sha256 hashed while the photo arrived
(no second hash in the SDK); the server checks it, so a wrong one stores nothing."""

from __future__ import annotations

import hashlib
from typing import Any
from unittest import mock

import minio.api
import pytest

from gridflow.settings import Settings
from producers.store import MinioStore, StoreError


def test_a_put_is_signed_with_the_given_sha256_and_the_server_checks_it(
    stack: Any, stack_settings: Settings
) -> None:
    store = MinioStore.from_settings(stack_settings, connections=4)
    bucket = stack_settings.bucket_incoming
    data = bytes(range(256)) * 1200
    sha = hashlib.sha256(data).hexdigest()
    with mock.patch.object(minio.api, "sha256_hash", wraps=minio.api.sha256_hash) as hashed:
        store.put(bucket, "t/ok.jpg", data, "image/jpeg", {"sha256": sha})
    assert all(not (c.args and c.args[0]) for c in hashed.call_args_list), "body hashed again"
    real = stack.s3()
    got = real.get_object(bucket, "t/ok.jpg")
    try:
        assert got.read() == data
    finally:
        got.close()
        got.release_conn()

    with pytest.raises(StoreError, match="XAmzContentSHA256Mismatch"):
        store.put(bucket, "t/bad.jpg", data, "image/jpeg", {"sha256": "0" * 64})
    names = [o.object_name for o in real.list_objects(bucket, prefix="t/", recursive=True)]
    assert names == ["t/ok.jpg"]

    store.put(bucket, "t/plain.bin", b"no sha given", "application/octet-stream")  # SDK signs
    assert store.client.stat_object(bucket, "t/plain.bin").size == len(b"no sha given")
