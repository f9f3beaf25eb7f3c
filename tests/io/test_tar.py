import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from cai_ray.io.tar import build_tar, iter_tar, member_spans, sample_spans

SAMPLES = [("a-0", {"png": b"x" * 10, "json": b"{}", "mask.png": b"m"}), ("a-1", {"json": b"[]"})]


def test_round_trip_and_byte_identical_rebuilds(tmp_path):
    data = build_tar(SAMPLES)
    assert data == build_tar(SAMPLES)
    assert list(iter_tar(data)) == [(k, dict(sorted(v.items()))) for k, v in SAMPLES]
    path = tmp_path / "s.tar"
    path.write_bytes(data)
    read = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in read] == ["a-0", "a-1"]
    assert read[0]["mask.png"] == b"m"


@pytest.mark.parametrize("key", ["a.b", "", "a/b"])
def test_keys_with_dots_or_slashes_are_refused(key):
    with pytest.raises(ValueError):
        build_tar([(key, {"json": b"{}"})])


def _tarfile_reference(samples):
    """What build_tar wrote before its own headers: the standard library's tarfile, member by
    member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key, files in samples:
            for ext in sorted(files):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(files[ext]), 0, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                archive.addfile(info, io.BytesIO(files[ext]))
    return buffer.getvalue()


def test_build_tar_writes_tarfiles_bytes():
    """The hand-written ustar headers are tarfile's, byte for byte (sizes on and
    off block boundaries, empty members, long keys, an empty shard)."""
    rng = np.random.default_rng(0)
    for count in [0, 1, 5, 40]:
        samples = [
            (
                f"s{count}-{i:07d}-{i % 3:02d}" + "k" * int(rng.integers(0, 70)),
                {
                    ext: rng.bytes(int(rng.choice([0, 1, 511, 512, 513, int(rng.integers(2000))])))
                    for ext in ["png", "mask.png", "json"][: int(rng.integers(1, 4))]
                },
            )
            for i in range(count)
        ]
        assert build_tar(samples) == _tarfile_reference(samples)
    with pytest.raises(ValueError, match="100 bytes"):
        build_tar([("k" * 97, {"png": b""})])


def test_member_spans_cut_runs_of_members_readable_on_their_own():
    data = build_tar(SAMPLES)
    spans = member_spans(data)
    assert [name for name, _, _ in spans] == ["a-0.json", "a-0.mask.png", "a-0.png", "a-1.json"]
    _, start, _ = spans[1]
    _, _, end = spans[2]
    assert list(iter_tar(data[start:end])) == [("a-0", {"mask.png": b"m", "png": b"x" * 10})]
    assert sample_spans(data) == [("a-0", spans[0][1], spans[2][2]), ("a-1", *spans[3][1:])]
