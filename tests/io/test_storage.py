import pytest

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
