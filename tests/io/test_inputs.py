"""The input list: written from folders, globs and lists in the order the driver used to sort
them in, each input once, with stamps; read back by range."""

import os
import posixpath
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_ray.core.views import Geometry
from cai_ray.io import inputs, storage
from cai_ray.io.codecs import ChangedInputError, load_views
from tests.conftest import DEMO


def _listed(sources: list[str], tmp_path, **kwargs) -> tuple[list, inputs.Listing]:
    dest = str(tmp_path / "list.parquet")
    listing = inputs.write_list(sources, dest, **kwargs)
    return list(inputs.iter_rows(dest)), listing


def _as_before(sources: list[str]) -> list[str]:
    """The driver's order before the list: every source expanded, sorted whole, made absolute."""
    found, _ = storage.list_image_sources(sources)
    return [storage.absolute(p) for p in sorted(dict.fromkeys(found))]


@pytest.fixture
def tricky(tmp_path):
    """A folder whose sorted path strings differ from a naive walk: 'a.b/' sorts before 'a/'
    ('.' < '/'), 'a0.jpg' between them; a note and a broken link that are no images."""
    root = tmp_path / "tricky"
    image = (DEMO / "normal").glob("*.jpg").__next__().read_bytes()
    for name in ("a/x.jpg", "a.b/y.jpg", "a0.jpg", "a/b/z.png", "c.jpg", "notes.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(image)
    os.symlink(root / "gone.jpg", root / "link.jpg")
    return root


def test_a_folder_is_listed_in_the_order_and_with_the_stamps_of_before(tricky, tmp_path):
    rows, listing = _listed([str(tricky)], tmp_path)
    assert [path for path, _ in rows] == _as_before([str(tricky)])
    assert [stamp for _, stamp in rows] == storage.stamps([path for path, _ in rows])
    assert listing.count == 5 and listing.duplicates == 0
    assert sorted(s["reason"].split(" (")[0] for s in listing.unlisted) == [
        "broken link",
        "not an image file name",
    ]


def test_a_folder_too_large_to_sort_in_memory_is_sorted_on_disk(tricky, tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "SORTED_DIRECTORY_ENTRIES", 2)
    monkeypatch.setattr(inputs, "SORT_RUN_ROWS", 3)
    monkeypatch.setattr(inputs, "BATCH_ROWS", 2)
    rows, listing = _listed([str(tricky)], tmp_path)
    assert [path for path, _ in rows] == _as_before([str(tricky)])
    assert listing.count == 5 and listing.duplicates == 0


def test_the_demo_folder_and_overlapping_sources_give_the_targets_of_before(tmp_path):
    sources = [str(DEMO / "normal"), str(DEMO), str(DEMO / "normal" / "exp0*.jpg")]
    rows, listing = _listed(sources, tmp_path)
    assert [path for path, _ in rows] == _as_before(sources)
    assert listing.duplicates == 13  # the normals twice more, the glob's one once more


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_a_list_file_is_read_with_its_stamps_or_stamped(kind, tmp_path):
    normals = sorted(str(p) for p in (DEMO / "normal").glob("*.jpg"))
    chosen = [normals[5], normals[1], normals[3], normals[1]]  # out of order, one twice
    listed = tmp_path / f"chosen.{kind}"
    if kind == "txt":
        listed.write_text("# chosen tiles\n" + "\n".join(chosen) + "\n\n")
    elif kind == "csv":
        listed.write_text("path,size,mtime_ns\n" + "".join(f"{p},1,2\n" for p in chosen))
    else:
        pq.write_table(pa.table({"path": chosen, "stamp": ["x"] * 4}), listed)
    rows, listing = _listed([str(listed)], tmp_path)
    expected = sorted(set(chosen))
    assert [path for path, _ in rows] == expected and listing.duplicates == 1
    stamps = {"txt": storage.stamps(expected), "csv": ["1:2"] * 3, "parquet": ["x"] * 3}[kind]
    assert [stamp for _, stamp in rows] == stamps


def test_a_long_list_out_of_order_is_sorted_from_runs_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "SORT_RUN_ROWS", 7)
    monkeypatch.setattr(inputs, "ROWS_PER_GROUP", 5)
    monkeypatch.setattr(inputs, "BATCH_ROWS", 4)  # duplicates across batches too
    names = [f"/data/img{(i * 37) % 50:03d}.png" for i in range(60)]  # 50 paths, 10 repeated
    source = tmp_path / "shuffled.parquet"
    pq.write_table(pa.table({"path": names, "stamp": names}), source)
    rows, listing = _listed([str(source)], tmp_path)
    assert [path for path, _ in rows] == sorted(set(names))
    assert all(path == stamp for path, stamp in rows)  # each path kept with its own stamp
    assert listing.count == 50 and listing.duplicates == 10
    assert _listed([str(source)], tmp_path, limit=45)[0] == rows[:45]
    reader = inputs.ListReader(str(tmp_path / "list.parquet"))
    assert reader.rows(3, 17) == rows[3:17] and reader.rows(44, 99) == rows[44:45]
    chunks = list(inputs.iter_chunks(str(tmp_path / "list.parquet"), 6, stop=40))
    assert [len(paths) for paths, _ in chunks] == [6] * 6 + [4]


def test_nothing_found_names_the_source(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no image")
    with pytest.raises(FileNotFoundError, match=r"empty \(no image among it\).*nothing-here"):
        inputs.write_list([str(tmp_path / "empty"), str(tmp_path / "nothing-here")], "x")


def test_keys_are_the_paths_relative_to_the_common_folder_even_unusual_ones():
    paths = ["s3://b/in/a.jpg", "s3://b/in//odd/./b.jpg", "s3://b/in/c/../c.jpg"]
    keys = inputs.target_keys(paths, "/b/in")
    assert keys == [posixpath.relpath(inputs.location(p), "/b/in") for p in paths]
    assert inputs.target_keys(["/x/y/a.jpg", "/x/z.jpg"], "/x") == ["y/a.jpg", "z.jpg"]
    assert inputs.target_keys(["/a.jpg"], "/") == ["a.jpg"]


def test_a_txt_list_of_relative_paths_names_the_files_absolutely(tricky, tmp_path, monkeypatch):
    """A .txt list's relative lines were stored as written, so a worker
    elsewhere (another node, another working directory) would open other files."""
    monkeypatch.chdir(tricky)
    listed = tmp_path / "relative.txt"
    listed.write_text("a/x.jpg\n./c.jpg\r\n a0.jpg \n")
    rows, _ = _listed([str(listed)], tmp_path)
    assert [path for path, _ in rows] == sorted(
        str(tricky / name) for name in ("a/x.jpg", "c.jpg", "a0.jpg")
    )


def test_keys_of_mixed_local_and_object_inputs_are_relative_to_their_common_folder(tmp_path):
    """The common folder came from the smallest and largest path strings,
    wrong once local and s3:// paths mix, and keys were cut from it blindly."""
    table = pa.table(
        {
            "path": ["/data/a/x.png", "s3://bucket/b/y.png", "s3://data/zz/q.png"],
            "stamp": ["1:1", "2:2", "3:3"],
        }
    )
    listed = tmp_path / "mixed.parquet"
    pq.write_table(table, listed)
    low, high = inputs.location_bounds(str(listed), 3)
    common = posixpath.commonpath([low, high])
    assert common == "/"
    paths = table.column("path").to_pylist()
    assert inputs.target_keys(paths, common) == ["data/a/x.png", "bucket/b/y.png", "data/zz/q.png"]
    assert inputs.target_keys(paths, "/data") == ["a/x.png", "../bucket/b/y.png", "zz/q.png"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("latin.txt", "/data/caf\xe9.jpg\n".encode("latin-1"), "line 1: not UTF-8"),
        ("broken.parquet", b"PAR1x", "not a readable input list"),
        ("empty.csv", b"", "not a readable input list"),
    ],
)
def test_a_list_that_cannot_be_read_is_refused_with_its_name(tmp_path, name, content, says):
    listed = tmp_path / name
    listed.write_bytes(content)
    with pytest.raises(ValueError, match=says) as raised:
        _listed([str(listed)], tmp_path)
    assert name in str(raised.value)


def test_a_list_whose_path_column_is_not_text_is_refused(tmp_path):
    listed = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"path": [1, 2]}), listed)
    with pytest.raises(ValueError, match="'path' column holds int64, not text"):
        _listed([str(listed)], tmp_path)


def test_a_list_written_as_a_folder_of_parts_is_read_whole(tmp_path):
    """Ray Data, Spark and pandas write a dataset as a folder of part files
    (normals.parquet/part-0.parquet, ..., _SUCCESS): such a folder is one list."""
    folder = tmp_path / "normals.parquet"
    folder.mkdir()
    images = sorted(str(p) for p in (DEMO / "normal").glob("*.jpg"))
    pq.write_table(pa.table({"path": images[6:]}), folder / "part-1.parquet")
    pq.write_table(pa.table({"path": images[:6]}), folder / "part-0.parquet")
    (folder / "_SUCCESS").write_text("")
    rows, listing = _listed([str(folder)], tmp_path)
    assert [path for path, _ in rows] == images and listing.count == len(images)
    (tmp_path / "empty.csv").mkdir()
    with pytest.raises(ValueError, match="folder without .csv part files"):
        _listed([str(tmp_path / "empty.csv")], tmp_path)


def test_files_left_out_are_all_counted_and_the_first_named(tmp_path, monkeypatch):
    """Every file a folder held that is not an image was kept in the
    driver and job.json; a label file beside each of ten million images is ten million
    records. Now all are counted and the first LEFT_OUT_NAMED named."""
    monkeypatch.setattr(inputs, "LEFT_OUT_NAMED", 2)
    folder = tmp_path / "images"
    folder.mkdir()
    image = next((DEMO / "normal").glob("*.jpg")).read_bytes()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(image)
        (folder / f"{i}.txt").write_text("a label")
    rows, listing = _listed([str(folder)], tmp_path)
    assert len(rows) == 3 and listing.unlisted.total == 3
    assert [Path(s["path"]).name for s in listing.unlisted] == ["0.txt", "1.txt"]


def test_a_stamp_gives_its_size_and_a_reader_refuses_another(tmp_path):
    assert inputs.listed_size("1234:1700000000") == 1234
    assert inputs.listed_size('77:"etag"') == 77
    assert inputs.listed_size("missing") is None and inputs.listed_size(None) is None
    image = sorted((DEMO / "normal").glob("*.jpg"))[0]
    size = image.stat().st_size
    assert load_views(str(image), 64, "grey", Geometry(), listed_bytes=size)
    with pytest.raises(ChangedInputError, match=f"{size} bytes, {size + 1} when it was listed"):
        load_views(str(image), 64, "grey", Geometry(), listed_bytes=size + 1)
