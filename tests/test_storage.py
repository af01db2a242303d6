"""The storage layer: stores chosen by URI scheme, write/read/delete/probe, and the
S3 store's credentials and region coming from the settings (moto's server, with
authentication switched on, refuses anything else)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import pytest
from scrapy.settings import Settings

from nuke_crawl.storage import STORE_SCHEMES, StoreError, build_store, store_class
from nuke_crawl.storage.cloudflare import CloudflareImagesStore
from nuke_crawl.storage.local import LocalImageStore
from nuke_crawl.storage.s3 import S3ImageStore


def test_stores_are_chosen_by_scheme(tmp_path: Path) -> None:
    assert store_class(str(tmp_path)) is LocalImageStore
    assert store_class(f"file://{tmp_path}") is LocalImageStore
    assert store_class("s3://bucket/prefix") is S3ImageStore
    assert store_class("cloudflare-images://acc") is CloudflareImagesStore
    assert set(STORE_SCHEMES) == {"", "file", "s3", "cloudflare-images"}
    with pytest.raises(ValueError, match=r"IMAGES_STORE 'gs://b/p': expected a folder or"):
        build_store(Settings({"IMAGES_STORE": "gs://b/p"}))


def test_local_store_write_read_delete_probe(tmp_path: Path) -> None:
    base = tmp_path / "images"
    store = build_store(
        Settings(
            {"IMAGES_STORE": f"file://{base}", "NUKE_IMAGES_PUBLIC_URL": "https://cdn.example/i/"}
        )
    )
    assert isinstance(store, LocalImageStore)
    assert not base.exists()  # made by the first write, not by building (reads need none)
    store.persist("v1/a.jpg", b"jpeg", "image/jpeg")
    store.sync()
    assert store.read("v1/a.jpg") == b"jpeg"
    assert store.public_url("v1/a.jpg") == "https://cdn.example/i/v1/a.jpg"
    with pytest.raises(StoreError) as missing:
        store.read("v1/nope.jpg")
    assert missing.value.reason == "missing_file"
    with pytest.raises(StoreError) as outside:
        store.read("../../etc/passwd")
    assert outside.value.reason == "bad_path"
    store.delete("v1/a.jpg")
    store.delete("v1/a.jpg")  # absent: nothing happens
    assert not (base / "v1" / "a.jpg").exists()
    store.probe()
    assert not [p for p in base.rglob("*") if p.is_file()]  # the probe object is gone


def test_probe_fails_on_a_store_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    store = build_store(Settings({"IMAGES_STORE": str(blocker / "images")}))
    with pytest.raises(OSError):
        store.probe()


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10)


@pytest.fixture
def s3_with_auth(monkeypatch: pytest.MonkeyPatch):
    """moto's S3 with IAM authentication on; yields (endpoint, bucket, key id, secret).
    The environment holds wrong credentials and no region: only settings can work."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        admin = {
            "endpoint_url": endpoint,
            "region_name": "eu-west-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **admin)
        # moto's accounts are shared by every server of this process: fresh names
        user, bucket = f"crawler-{uuid.uuid4().hex[:8]}", f"photos-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        s3.put_object(Bucket=bucket, Key="vehicles/v1/a.jpg", Body=b"stored jpeg")
        _post(f"{endpoint}/moto-api/reset-auth", b"0")  # from now on, requests are checked
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, "wrong")
        for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        try:
            _post(f"{endpoint}/moto-api/reset-auth", b"inf")  # moto's state is global
        finally:
            server.stop()


def test_s3_store_uses_the_settings_credentials_and_region(s3_with_auth) -> None:
    endpoint, bucket, key_id, secret = s3_with_auth
    settings = {
        "IMAGES_STORE": f"s3://{bucket}/vehicles",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION_NAME": "eu-west-1",
    }
    store = build_store(Settings(settings))
    assert isinstance(store, S3ImageStore)
    assert store.client.meta.region_name == "eu-west-1"
    # what image_analysis reads: the object stored by image_backfill
    assert store.read("v1/a.jpg") == b"stored jpeg"
    store.probe()  # write, read back, delete
    store.persist("v2/b.jpg", b"b", "image/jpeg")
    assert store.read("v2/b.jpg") == b"b"
    # the environment's (wrong) credentials are refused: the settings are what worked
    wrong = build_store(
        Settings({**settings, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    )
    with pytest.raises(StoreError) as refused:
        wrong.read("v1/a.jpg")
    assert refused.value.reason == "missing_file" and f"s3://{bucket}/vehicles/v1/a.jpg" in str(
        refused.value.detail
    )
