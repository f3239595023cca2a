"""The one place that builds a MinIO/S3 client from settings, and the small reads every user needs."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error

from gridflow.settings import Settings


def make_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def read_object(client: Minio, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if there is no such object (other errors propagate)."""
    try:
        resp = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in _MISSING:
            return None
        raise
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    try:
        client.stat_object(bucket, key)
        return True
    except S3Error as exc:
        if exc.code in _MISSING:
            return False
        raise
