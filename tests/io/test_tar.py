import pytest
import webdataset as wds

from cai_ray.io.tar import build_tar, iter_tar

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
