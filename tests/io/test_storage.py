import pytest

from cai_ray.io import storage
from cai_ray.io.storage import expand_image_sources, remove_stale_temporaries, write_bytes_atomic
from tests.conftest import DEMO
from tests.smalldisk import PAGE


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
    (target.parent / ".notes.tmp").write_bytes(b"someone else's")
    (target.parent / ".b.bin.abc.tmp").write_bytes(b"not ours either")
    assert remove_stale_temporaries(str(target.parent), {"a.bin"}.__contains__) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".b.bin.abc.tmp",
        ".notes.tmp",
        "a.bin",
    ]


def racing_creators(url: str, creators: int = 8) -> list[bool]:
    """What ``creators`` threads that create ``url`` at the same moment were told."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    start = Barrier(creators)

    def create(number: int) -> bool:
        start.wait(timeout=30)
        return storage.create_new(url, f"creator {number}".encode())

    with ThreadPoolExecutor(creators) as pool:
        return list(pool.map(create, range(creators)))


def test_of_racing_creators_exactly_one_wins_and_its_file_is_whole(tmp_path):
    url = str(tmp_path / "out" / "owner.json")
    told = racing_creators(url)
    assert told.count(True) == 1
    assert (tmp_path / "out" / "owner.json").read_text() == f"creator {told.index(True)}"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["owner.json"]  # no temporary left


def test_change_stamps_are_size_and_modification_time(tmp_path):
    import os

    image = tmp_path / "a.jpg"
    image.write_bytes(b"12345")
    first = storage.stamps([str(image), str(tmp_path / "none.jpg")])
    assert first[0].startswith("5:") and first[1] == "missing"
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 10**9))  # touched: rsync sees a change
    assert storage.stamps([str(image)]) != first[:1]


def test_a_shard_past_the_millionth_is_found_committed(tmp_path):
    """Shard names widen past shard 999,999 (shard-1000000.tar), and the
    pattern that finds committed shards took six digits only, so such a shard was never seen
    committed and a resume made it again."""
    from cai_ray.io import layout

    for index in (7, 1_000_000):
        (tmp_path / layout.shard_name(index)).write_bytes(b"tar")
        (tmp_path / layout.entry_name(index)).write_text("{}")
    assert layout.committed_indices(str(tmp_path)) == {7, 1_000_000}


@pytest.mark.parametrize("writer", ["write_bytes_atomic", "put_file_atomic"])
def test_a_write_on_a_full_filesystem_names_the_file_and_leaves_the_old_one(
    small_disk, tmp_path, writer
):
    """A full disk raised a bare '[Errno 28] No space left on device', naming no file, and
    the bytes a write needed were nowhere. Now the error names both, with what is free, and
    the file keeps its old content with no temporary left beside it."""
    small_disk.remount(size=4 * PAGE)
    target = small_disk.path / "out" / "shard-000004.tar"
    write_bytes_atomic(str(target), b"old")
    source = tmp_path / "new.tar"
    source.write_bytes(bytes(5 * PAGE))
    with pytest.raises(storage.OutOfSpaceError) as raised:
        if writer == "write_bytes_atomic":
            write_bytes_atomic(str(target), source.read_bytes())
        else:
            storage.put_file_atomic(str(source), str(target))
    assert str(raised.value) == (
        f"no space left on {small_disk.path} writing {target}: 20,480 bytes needed, 12,288 free"
    )
    assert small_disk.free() == 3 * PAGE
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_filesystem_out_of_inodes_says_so(small_disk):
    small_disk.remount(nr_inodes=3)  # the root folder, "out" and one file
    out = small_disk.path / "out"
    write_bytes_atomic(str(out / "job.json"), b"{}")
    with pytest.raises(storage.OutOfSpaceError, match=r"2 bytes needed, [\d,]+ free and no free"):
        write_bytes_atomic(str(out / "shard-000000.json"), b"{}")
    assert [p.name for p in out.iterdir()] == ["job.json"]


def test_the_retry_budget_has_a_floor_the_docs_state():
    """Half of each wait is fixed: the default attempts outlast any outage under 55.5 s (the
    figure docs/SCALE.md and the settings give), a store that stays down fails within 111 s."""
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


def test_a_write_over_the_disk_quota_says_so_and_leaves_nothing(tmp_path):
    """A quota (EDQUOT) stops a write as a full disk does; the error says it is the quota,
    since the filesystem itself may have room. A real quota needs a quota-mounted filesystem,
    so the write's own fill raises what the kernel would."""
    import errno
    import os

    def over_quota(handle) -> None:
        handle.write(b"part")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    target = tmp_path / "out" / "shard-000000.tar"
    with pytest.raises(storage.OutOfSpaceError, match=r"^disk quota exceeded on /.* 9 bytes"):
        storage._replace_local(target, over_quota, 9)
    assert list(target.parent.iterdir()) == []


def test_create_new_works_where_the_filesystem_has_no_hard_links(tmp_path, monkeypatch):
    """Some FUSE and SMB mounts refuse link(2) (EPERM): the exclusive create falls back to
    O_EXCL instead of failing every run before it starts."""
    import errno
    import os

    def no_links(source, target):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out" / "owner.json"
    assert storage.create_new(str(target), b"first")
    assert not storage.create_new(str(target), b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["owner.json"]
