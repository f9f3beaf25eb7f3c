import pytest

from cai_ray.io import storage
from cai_ray.io.storage import expand_image_sources, remove_stale_temporaries, write_bytes_atomic
from tests.conftest import DEMO


def test_inputs_from_folders_globs_and_lists(tmp_path):
    normals = sorted(str(p) for p in (DEMO / "normal").glob("*.jpg"))
    assert expand_image_sources([str(DEMO / "normal")]) == normals
    assert expand_image_sources([str(DEMO / "normal" / "exp0*.jpg")]) == normals[:1]
    listing = tmp_path / "inputs.txt"
    listing.write_text("# chosen tiles\n" + "\n".join(normals[:3]) + "\n\n")
    assert expand_image_sources([str(listing)]) == normals[:3]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_image_sources([str(DEMO / "normal"), str(tmp_path / "nothing-here" / "*.png")])


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    write_bytes_atomic(str(target), b"first")
    write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]
    assert target.stat().st_mode & 0o777 == 0o644
    (target.parent / ".a.bin.abc.tmp").write_bytes(b"x")
    assert remove_stale_temporaries(str(target.parent)) == 1


def test_change_stamps_are_size_and_modification_time(tmp_path):
    import os

    image = tmp_path / "a.jpg"
    image.write_bytes(b"12345")
    first = storage.stamps([str(image), str(tmp_path / "none.jpg")])
    assert first[0].startswith("5:") and first[1] == "missing"
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 10**9))  # touched: rsync sees a change
    assert storage.stamps([str(image)]) != first[:1]


def test_a_shard_past_the_millionth_is_found_committed(tmp_path):
    """Review of issue 34: shard names widen past shard 999,999 (shard-1000000.tar), and the
    pattern that finds committed shards took six digits only, so such a shard was never seen
    committed and a resume made it again."""
    from cai_ray.io import layout

    for index in (7, 1_000_000):
        (tmp_path / layout.shard_name(index)).write_bytes(b"tar")
        (tmp_path / layout.entry_name(index)).write_text("{}")
    assert layout.committed_indices(str(tmp_path)) == {7, 1_000_000}


def test_the_retry_budget_has_a_floor_the_docs_state():
    """Half of each wait is fixed: the default attempts outlast any outage under 55.5 s (the
    figure README and the settings give), a store that stays down fails within 111 s."""
    assert storage.retry_budget_s(storage.DEFAULT_REQUEST_ATTEMPTS) == (55.5, 111.0)
    assert storage.retry_budget_s(1) == (0, 0)
    assert [storage.backoff_s(n, 0.0) for n in (1, 2, 5, 6, 9)] == [0.5, 1, 8, 10, 10]
    assert storage.backoff_s(9, 0.999) < storage.BACKOFF_CAP_S


def test_refused_connections_are_retried_for_the_budget_and_counted():
    """A closed port refuses at once; each request still waits the budget's floor before it
    gives up (botocore's full jitter could give up at once), and each retry is counted."""
    import time

    closed = "http://127.0.0.1:9"  # nothing listens there (tests/conftest.py)
    storage.configure(endpoint_url=closed, request_attempts=3)
    least, most = storage.retry_budget_s(3)
    retried = storage.retries_made()
    started = time.monotonic()
    try:
        with pytest.raises(storage.StorageError, match=f"s3://bucket/a.bin at {closed}"):
            storage.read_bytes("s3://bucket/a.bin")
    finally:
        storage.configure()
    assert least <= time.monotonic() - started < most + 10
    assert storage.retries_made() - retried == 2
