"""Storage against a real S3 server (SeaweedFS on 127.0.0.1)."""

import pytest

from cai_ray.io import storage
from tests.conftest import DEMO
from tests.s3server import SECRET_KEY


def test_round_trip_listing_and_inputs(s3_bucket):
    normals = sorted((DEMO / "normal").glob("*.jpg"))
    for path in normals[:4]:
        storage.write_bytes_atomic(f"{s3_bucket}/normals/sub/{path.name}", path.read_bytes())
    storage.write_bytes_atomic(f"{s3_bucket}/normals/notes.md", b"not an image")
    first = f"{s3_bucket}/normals/sub/{normals[0].name}"
    assert storage.read_bytes(first) == normals[0].read_bytes()
    assert storage.exists(first) and not storage.exists(f"{s3_bucket}/normals/none.jpg")
    assert storage.list_files(f"{s3_bucket}/normals/sub", ".jpg") == [
        f"{s3_bucket}/normals/sub/{p.name}" for p in normals[:4]
    ]
    assert storage.list_files(f"{s3_bucket}/empty-prefix", "") == []
    listed = [f"{s3_bucket}/normals/sub/{p.name}" for p in normals[:4]]
    assert storage.expand_image_sources([f"{s3_bucket}/normals"]) == listed
    assert storage.expand_image_sources([f"{s3_bucket}/normals/sub/exp0*.jpg"]) == listed[:1]
    storage.write_bytes_atomic(f"{s3_bucket}/list.txt", "\n".join(listed[1:3]).encode())
    assert storage.expand_image_sources([f"{s3_bucket}/list.txt"]) == listed[1:3]


def test_missing_bucket_and_objects_are_named(s3_bucket):
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket/x.tar"):
        storage.read_bytes("s3://no-such-bucket/x.tar")
    with pytest.raises(FileNotFoundError, match="no-such-bucket"):
        storage.list_files("s3://no-such-bucket/out", ".json")
    with pytest.raises(FileNotFoundError, match="nothing"):
        storage.expand_image_sources([f"{s3_bucket}/nothing/"])


def test_wrong_credentials_fail_clearly_without_leaking_them(s3_bucket, s3_server, monkeypatch):
    storage.write_bytes_atomic(f"{s3_bucket}/a.bin", b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    storage.configure(endpoint_url=s3_server.endpoint)
    with pytest.raises(storage.StorageError, match="access denied") as caught:
        storage.read_bytes(f"{s3_bucket}/a.bin")
    assert f"{s3_bucket}/a.bin" in str(caught.value)
    assert "not-the-secret" not in str(caught.value) and SECRET_KEY not in str(caught.value)
