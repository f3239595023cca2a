"""The one place that builds a MinIO/S3 client from settings."""

from __future__ import annotations

from minio import Minio

from gridflow.settings import Settings


def make_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
