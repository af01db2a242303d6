"""``s3://bucket/prefix`` through boto3 (AWS S3, or R2, MinIO, Supabase through
``AWS_ENDPOINT_URL``)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from nuke_crawl.storage import ImageStore, StoreError


class S3ImageStore(ImageStore):
    """Objects under ``s3://bucket/prefix``; durable once ``put_object`` returned.

    Settings (defaults): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_REGION_NAME``, ``AWS_ENDPOINT_URL`` (or the
    environment's) (None: boto3's own lookup), ``FILES_STORE_S3_ACL`` (None),
    ``NUKE_IMAGES_PUBLIC_URL`` (None: the endpoint or bucket URL).
    """

    def __init__(self, uri: str, settings: Any, public_base: str | None = None):
        import boto3
        from botocore.config import Config

        parts = urlsplit(uri)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint = settings.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.session.Session().client(
            "s3",
            aws_access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=settings.get("AWS_SESSION_TOKEN") or None,
            endpoint_url=self.endpoint or None,
            region_name=settings.get("AWS_REGION_NAME") or None,
            config=Config(max_pool_connections=32, retries={"max_attempts": 3}),
        )
        self.acl = settings.get("FILES_STORE_S3_ACL") or None
        self.public_base = public_base.rstrip("/") if public_base else None

    @classmethod
    def from_settings(cls, uri: str, settings: Any) -> S3ImageStore:
        return cls(uri, settings, settings.get("NUKE_IMAGES_PUBLIC_URL") or None)

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        extra: dict[str, Any] = {
            "ContentType": content_type,
            "CacheControl": "public, max-age=31536000, immutable",
        }
        if self.acl:
            extra["ACL"] = self.acl
        self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data, **extra)

    def read(self, path: str) -> bytes:
        import botocore.exceptions

        key = self.key(path)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StoreError(
                "missing_file", f"s3://{self.bucket}/{key}: {type(exc).__name__}: {exc}"
            ) from None

    def delete(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def public_url(self, path: str) -> str:
        if self.public_base:
            return f"{self.public_base}/{path}"
        if self.endpoint:
            return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.key(path)}"
        return f"https://{self.bucket}.s3.amazonaws.com/{self.key(path)}"
