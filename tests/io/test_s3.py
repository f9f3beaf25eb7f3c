"""Storage against a real S3 server (SeaweedFS on 127.0.0.1)."""

from unittest.mock import ANY

import pytest

from cai_ray.io import inputs, storage
from tests.conftest import DEMO, REPO
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


def test_a_prefix_is_listed_page_by_page_with_stamps_from_the_listing(s3_bucket, tmp_path):
    normals = sorted((DEMO / "normal").glob("*.jpg"))
    names = ["a/x.jpg", "a.b/y.jpg", "a0.jpg", "a/b/z.jpg", "notes.md"]
    for name, path in zip(names, normals, strict=False):
        storage.write_bytes_atomic(f"{s3_bucket}/in/{name}", path.read_bytes())
    dest = tmp_path / "list.parquet"
    listing = inputs.write_list([f"{s3_bucket}/in"], str(dest))
    rows = list(inputs.iter_rows(str(dest)))
    paths = [path for path, _ in rows]
    assert paths == storage.expand_image_sources([f"{s3_bucket}/in"])
    assert paths == [f"{s3_bucket}/in/{n}" for n in sorted(names[:4])]  # 'a.b/' before 'a/'
    assert [stamp for _, stamp in rows] == storage.stamps(paths)
    assert listing.unlisted == [{"path": f"{s3_bucket}/in/notes.md", "reason": ANY}]
    storage.put_file_atomic(str(dest), f"{s3_bucket}/out/inputs.parquet")
    beside = inputs.ListReader(f"{s3_bucket}/out/inputs.parquet")
    sizes = [int(stamp.split(":")[0]) for _, stamp in rows]
    assert beside.targets(1, 3, f"{s3_bucket}/in") == [
        {"index": 1, "key": "a/b/z.jpg", "path": paths[1], "listed_bytes": sizes[1]},
        {"index": 2, "key": "a/x.jpg", "path": paths[2], "listed_bytes": sizes[2]},
    ]


def test_change_stamps_follow_rewrites_from_one_listing(s3_bucket):
    urls = [f"{s3_bucket}/stamps/{name}" for name in ("a.jpg", "b.jpg")]
    for url in urls:
        storage.write_bytes_atomic(url, b"first")
    missing = f"{s3_bucket}/stamps/none.jpg"
    before = storage.stamps([*urls, missing])
    assert before[2] == "missing" and before[0].startswith("5:") and before[0] != "5:None"
    storage.write_bytes_atomic(urls[1], b"other")  # same size, other content
    after = storage.stamps([*urls, missing])
    assert after[0] == before[0] and after[1] != before[1]


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


@pytest.fixture
def faulty_store(s3_server):
    """Yields a function that puts cai-ray's storage behind a misbehaving proxy."""
    from tests.faultproxy import FaultProxy

    proxies: list[FaultProxy] = []

    def make(schedule: list[str], request_attempts: int) -> FaultProxy:
        port = int(s3_server.endpoint.rsplit(":", 1)[1])
        proxy = FaultProxy(("127.0.0.1", port), schedule)
        proxies.append(proxy)
        storage.configure(endpoint_url=proxy.endpoint, request_attempts=request_attempts)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
    storage.configure(endpoint_url=s3_server.endpoint)


def test_resets_and_throttling_are_retried_and_counted(s3_bucket, faulty_store):
    proxy = faulty_store(["reset", "throttle", "pass"], request_attempts=5)
    retried = storage.retries_made()
    payloads = {f"{s3_bucket}/retried/{i}.bin": bytes([i]) * (1000 + i) for i in range(2)}
    for url, data in payloads.items():
        storage.write_bytes_atomic(url, data)
        assert storage.read_bytes(url) == data
        assert storage.read_range(url, 10, 20) == data[10:20]
    assert proxy.counts["reset"] >= 6 and proxy.counts["throttle"] >= 6
    # each 503 is retried; each reset too, unless aiohttp resent the request at once itself
    retries = storage.retries_made() - retried
    assert proxy.counts["throttle"] <= retries <= proxy.counts["throttle"] + proxy.counts["reset"]
    assert storage.list_files(f"{s3_bucket}/retried", ".bin") == sorted(payloads)


def test_an_unreachable_store_fails_after_retries_naming_the_object(s3_bucket, faulty_store):
    proxy = faulty_store(["reset"], request_attempts=3)
    with pytest.raises(storage.StorageError, match=f"{s3_bucket}/gone.bin"):
        storage.read_bytes(f"{s3_bucket}/gone.bin")
    assert proxy.counts["reset"] >= 3
    faulty_store(["throttle"], request_attempts=2)
    with pytest.raises(
        storage.StorageError,
        match=f"write {s3_bucket}/gone.bin.*2 attempts.*reduce your request rate",
    ):
        storage.write_bytes_atomic(f"{s3_bucket}/gone.bin", b"data")


def test_an_endpoint_that_accepts_and_never_answers_fails_in_bounded_time(s3_bucket):
    """A local socket that accepts connections and never answers: each attempt waits
    timeout_s, and the error names the endpoint and the bound (no hang)."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        storage.configure(endpoint_url=endpoint, request_attempts=2, timeout_s=1)
        started = time.monotonic()
        with pytest.raises(storage.StorageError) as caught:
            storage.read_bytes(f"{s3_bucket}/silent.bin")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    message = str(caught.value)
    assert f"{s3_bucket}/silent.bin at {endpoint}" in message
    assert "2 attempts of up to 1 s each" in message
    assert elapsed < 30  # 2 attempts of 1 s, plus backoff; the default would wait minutes


def test_a_job_config_can_live_in_the_bucket(s3_bucket):
    from cai_ray.config import load_config
    from cai_ray.io.settings import ConfigError

    text = (REPO / "configs" / "cluster_demo.yaml").read_bytes()
    storage.write_bytes_atomic(f"{s3_bucket}/configs/job.yaml", text)
    config = load_config(f"{s3_bucket}/configs/job.yaml", out=f"{s3_bucket}/out")
    assert config.name == "cluster-demo" and config.output.path == f"{s3_bucket}/out"
    with pytest.raises(ConfigError, match="not found.*missing.yaml"):
        load_config(f"{s3_bucket}/configs/missing.yaml")


def test_of_racing_creators_of_an_object_exactly_one_wins(s3_bucket):
    """The conditional upload (If-None-Match), honoured by the test's SeaweedFS as by AWS S3:
    creators that all looked before any uploaded are told apart by the store."""
    from tests.io.test_storage import racing_creators

    url = f"{s3_bucket}/out/owner.json"
    told = racing_creators(url)
    assert told.count(True) == 1
    assert storage.read_bytes(url) == f"creator {told.index(True)}".encode()
    storage.remove(url)
    assert not storage.exists(url)
    storage.remove(url)  # nothing there: no error
