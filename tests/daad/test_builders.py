"""Builders on real layouts, including the broken inputs real datasets contain."""

import io
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cai_ray.daad.builders import DaadSpec, build_daad, split_regions
from cai_ray.daad.shards import PatternBank, iter_records
from cai_ray.daad.stats import daad_stats
from tests.conftest import DEMO, REPO

CRACKS = DEMO / "defects" / "MT_Crack" / "Imgs"


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Real magnetic-tile cracks plus one file of each kind of trouble."""
    folder = tmp_path / "data" / "cracks"
    folder.mkdir(parents=True)
    originals = sorted(CRACKS.glob("*.jpg"))
    for jpg in originals[:3]:
        shutil.copy(jpg, folder)
        shutil.copy(jpg.with_suffix(".png"), folder)
    image = np.asarray(Image.open(originals[0]).convert("L"))
    mask = np.asarray(Image.open(originals[0].with_suffix(".png")).convert("L"))
    data = originals[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "truncated.png").write_bytes(_png(mask))
    shutil.copy(originals[0], folder / "empty.jpg")
    (folder / "empty.png").write_bytes(_png(np.zeros_like(mask)))
    shutil.copy(originals[0], folder / "mismatch.jpg")
    (folder / "mismatch.png").write_bytes(_png(mask[:-5]))
    shutil.copy(originals[0], folder / "nomask.jpg")
    Image.fromarray(image).save(folder / "sixteen.jpg")
    (folder / "sixteen.png").write_bytes(_png(mask.astype(np.uint16) * 257))
    Image.fromarray(image).convert("RGBA").save(folder / "rgba.tif")
    (folder / "rgba.png").write_bytes(_png(mask, "P"))
    return tmp_path / "data"


def _spec(**source) -> DaadSpec:
    base = {
        "layout": "folder",
        "domain": "tile",
        "license": "cite",
        "anomaly_class": "crack",
        "images": "cracks",
    }
    return DaadSpec.model_validate({"name": "t", "sources": [{**base, **source}]})


def test_folder_layout_counts_every_skip_with_a_reason(messy_folder, tmp_path):
    index = build_daad(_spec(image_glob="*.[jt]*"), messy_folder, str(tmp_path / "daad"))
    report = index["report"]
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert "unreadable" in reasons["truncated.jpg"]
    assert reasons["empty.jpg"] == "mask is empty"
    assert "differ in size" in reasons["mismatch.jpg"]
    assert reasons["nomask.jpg"] == "no mask file"
    assert report["records"] == 5  # three real, the 16-bit mask, the RGBA TIFF with a palette mask
    records = list(iter_records(str(tmp_path / "daad")))
    assert len(records) == 5
    for label, _, mask in records:
        assert mask.dtype == bool and mask.any()
        y0, x0, y1, x1 = label.bbox
        assert mask[y0:y1, x0:x1].any() and not mask[:y0].any() and not mask[y1:].any()
        assert label.license == "cite" and label.domain == "tile"


def test_the_build_is_reproducible(messy_folder, tmp_path):
    first = build_daad(_spec(image_glob="*.jpg"), messy_folder, str(tmp_path / "a"))
    second = build_daad(_spec(image_glob="*.jpg"), messy_folder, str(tmp_path / "b"))
    assert first["shards"] == second["shards"]


def test_bad_specs_and_roots_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root"):
        build_daad(_spec(), tmp_path / "missing", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="image folder"):
        build_daad(_spec(images="nowhere"), tmp_path, str(tmp_path / "out"))
    with pytest.raises(ValueError):
        DaadSpec.model_validate(
            {"name": "t", "sources": [{"layout": "folder", "anomaly_class": "dent"}]}
        )


def test_mvtec_layout(tmp_path):
    category = tmp_path / "tile"
    for defect, folder in (("crack", "MT_Crack"), ("blowhole", "MT_Blowhole"), ("glue", "MT_Fray")):
        (category / "test" / defect).mkdir(parents=True)
        (category / "ground_truth" / defect).mkdir(parents=True)
        for n, jpg in enumerate(sorted((DEMO / "defects" / folder / "Imgs").glob("*.jpg"))[:2]):
            Image.open(jpg).save(category / "test" / defect / f"{n:03d}.png")
            shutil.copy(
                jpg.with_suffix(".png"), category / "ground_truth" / defect / f"{n:03d}_mask.png"
            )
    (category / "test" / "good").mkdir()
    Image.open(sorted((DEMO / "normal").glob("*.jpg"))[0]).save(
        category / "test" / "good" / "000.png"
    )
    spec = DaadSpec.model_validate(
        {
            "name": "m",
            "sources": [
                {
                    "layout": "mvtec",
                    "root": "tile",
                    "domain": "mvtec_tile",
                    "license": "cc-by-nc-sa",
                    "classes": {"crack": "crack", "blowhole": "hole"},
                }
            ],
        }
    )
    index = build_daad(spec, tmp_path, str(tmp_path / "daad"))
    assert index["report"]["by_class"] == {"crack": 2, "hole": 2}
    assert [s["reason"] for s in index["report"]["skipped"]] == [
        "no class mapping for defect 'glue'"
    ] * 2


def test_shared_data_spec_builds_every_dataset_it_names(shared_data, tmp_path):
    spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "shared_data.yaml")
    index = build_daad(spec, shared_data, str(tmp_path / "daad"))
    report = index["report"]
    assert set(report["by_domain"]) == {
        "magnetic_tile",
        "deepcrack",
        "crackforest",
        "neu_seg",
        "leather",
        "cotton_impurity",
    }
    assert report["by_domain"]["deepcrack"] == 537
    assert report["by_domain"]["crackforest"] == 118  # 155 images, 118 with ground truth
    # NEU-Seg: 1,123 images, 225 of them with two or three classes (one record per class)
    assert report["by_domain"]["neu_seg"] >= 1123 + 225
    assert report["skipped_by_reason"]["no mask file"] == 37
    assert sum(report["by_class"].values()) == report["records"]
    assert sum(1 for count in report["by_class"].values() if count >= 50) >= 6
    # cotton and NEU-Seg are split into regions: one record per object or defect
    assert report["by_domain"]["cotton_impurity"] > 141 and report["dropped_regions"] > 0
    # cotton's objects lying on the cotton are tagged: a surface target may leave them out
    assert report["by_tag"] == {"foreign_object": report["by_domain"]["cotton_impurity"]}
    stats = daad_stats(str(tmp_path / "daad"))
    assert stats["records"] == report["records"]
    assert sum(stats["by_source_scale"].values()) == report["records"]
    # a magnetic-tile target excludes its own domain: five classes must still be well stocked
    others = Counter()
    for domain, counts in stats["by_domain_and_class"].items():
        if domain != "magnetic_tile":
            others.update(counts)
    assert sum(1 for count in others.values() if count >= 50) >= 5
    # magnetic tile shoots one tile at several exposures (exp1..exp6): found as near-duplicates
    dup = stats["near_duplicates"]
    assert dup["images"] < report["records"]  # split sources give several records per image
    exposures = [g for g in dup["listed"] if all(p.startswith("magnetic_tile/") for p in g)]
    assert len(exposures) >= 10
    assert any(len({Path(p).stem.split("_")[0] for p in group}) >= 5 for group in exposures)
    cracks = PatternBank(
        str(tmp_path / "daad"),
        mode="grey",
        exclude_domains=["magnetic_tile", "neu_seg", "leather", "cotton_impurity"],
    )
    assert len(cracks) == 537 + 118
    assert {cracks[i].domain for i in range(len(cracks))} == {"deepcrack", "crackforest"}
    leather = PatternBank(str(tmp_path / "daad"), mode="rgb", include_classes=["pits"])
    assert len(leather) == 18 and leather[0].image.shape[2] == 3  # RGBA photos read as RGB
    with pytest.raises(ValueError, match="no source patterns"):
        PatternBank(
            str(tmp_path / "daad"),
            mode="grey",
            exclude_domains=sorted(report["by_domain"]),
        )


def test_class_value_masks_give_a_record_per_class(tmp_path):
    """A mask of class values (NEU-Seg's layout): one record per mapped class present, its
    pixels that value; an unmapped value is a counted skip; an image without a class is none."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    tile = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    values = np.zeros((64, 64), np.uint8)
    values[5:20, 5:20] = 1
    values[30:50, 30:40] = 3
    values[60:62, 60:62] = 7  # no mapping
    for name, mask in (("two", values), ("none", np.zeros_like(values))):
        (root / "images" / f"{name}.png").write_bytes(_png(tile))
        (root / "masks" / f"{name}.png").write_bytes(_png(mask))
    spec = DaadSpec.model_validate(
        {
            "name": "values",
            "sources": [
                {
                    "layout": "folder",
                    "domain": "steel",
                    "license": "test",
                    "images": "images",
                    "masks": "masks",
                    "mask_classes": {1: "impurity", 2: "stain", 3: "scratch"},
                }
            ],
        }
    )
    index = build_daad(spec, root, str(tmp_path / "daad"))
    assert index["report"]["by_class"] == {"impurity": 1, "scratch": 1}
    assert [s["reason"] for s in index["report"]["skipped"]] == [
        "mask value 7 has no class mapping"
    ]
    masks = {label.anomaly_class: mask for label, _, mask in iter_records(str(tmp_path / "daad"))}
    assert np.array_equal(masks["impurity"], values == 1)
    assert np.array_equal(masks["scratch"], values == 3)
    with pytest.raises(ValueError, match="either anomaly_class or mask_classes"):
        DaadSpec.model_validate(
            {"name": "x", "sources": [{**spec.sources[0].model_dump(), "anomaly_class": "pits"}]}
        )


def test_shipped_specs_are_valid():
    for path in (REPO / "configs" / "daad").glob("*.yaml"):
        DaadSpec.model_validate(yaml.safe_load(path.read_text()))


def test_yolo_polygons_are_filled_at_the_images_size(tmp_path):
    """A YOLO segmentation export: mapped labels become records (one per class present),
    background labels none; a broken label file or a label index past the names is a reported
    skip of its image."""
    root = tmp_path / "data"
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    (root / "data.yaml").write_text("names: [cotton, thread, packet]\nnc: 3\n")
    tile = np.full((40, 80, 3), 128, np.uint8)
    for name in ("a", "b", "c", "d"):
        (root / "images" / f"{name}.png").write_bytes(_png(tile))
    square = "0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75"
    (root / "labels" / "a.txt").write_text(f"0 0 0 1 0 1 1\n1 {square}\n2 0 0 0.1 0 0.1 0.1\n")
    (root / "labels" / "b.txt").write_text(f"0 {square}\n")  # background only: no record
    (root / "labels" / "c.txt").write_text("1 0.5 0.5 0.6\n")  # an odd coordinate count
    (root / "labels" / "d.txt").write_text(f"7 {square}\n")
    spec = DaadSpec.model_validate(
        {
            "name": "yolo",
            "sources": [
                {
                    "layout": "yolo",
                    "domain": "cotton",
                    "license": "test",
                    "images": "images",
                    "labels": "labels",
                    "names": "data.yaml",
                    "classes": {"thread": "impurity", "packet": "stain"},
                }
            ],
        }
    )
    index = build_daad(spec, root, str(tmp_path / "daad"))
    assert index["report"]["by_class"] == {"impurity": 1, "stain": 1}
    reasons = sorted(s["reason"] for s in index["report"]["skipped"])
    assert reasons[0].startswith("bad label or image (line 1 has 3 coordinates")
    assert reasons[1] == "bad label or image (line 1 has label index 7, not in the names list (3))"
    masks = {label.anomaly_class: mask for label, _, mask in iter_records(str(tmp_path / "daad"))}
    assert masks["impurity"].shape == (40, 80)
    ys, xs = np.nonzero(masks["impurity"])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 20, 59)
    bad = {**spec.sources[0].model_dump(), "classes": {"rope": "impurity"}}
    with pytest.raises(ValueError, match="labels \\['rope'\\] are not in"):
        build_daad(
            DaadSpec.model_validate({"name": "x", "sources": [bad]}), root, str(tmp_path / "x")
        )


def test_split_regions_make_a_record_per_defect(tmp_path):
    """regions: split: one record per 8-connected region, specks below the floor dropped and
    counted; an image with one region keeps its plain record id."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    tile = np.full((60, 60), 100, np.uint8)
    two = np.zeros((60, 60), np.uint8)
    two[5:15, 5:15] = 255
    two[30:50, 35:45] = 255
    two[55, 55] = 255  # a one-pixel speck
    one = np.zeros((60, 60), np.uint8)
    one[10:30, 10:20] = 255
    for name, mask in (("two", two), ("one", one)):
        (root / "images" / f"{name}.png").write_bytes(_png(tile))
        (root / "images" / f"{name}_mask.png").write_bytes(_png(mask))
    source = {
        "layout": "folder",
        "domain": "d",
        "license": "test",
        "anomaly_class": "stain",
        "images": "images",
        "image_glob": "*[eo].png",
        "mask_name": "{stem}_mask.png",
        "regions": "split",
        "min_region_pixels": 5,
    }
    index = build_daad(
        DaadSpec.model_validate({"name": "s", "sources": [source]}), root, str(tmp_path / "daad")
    )
    assert index["report"]["records"] == 3 and index["report"]["dropped_regions"] == 1
    boxes = {label.record_id: label.bbox for label, _, _ in iter_records(str(tmp_path / "daad"))}
    assert boxes == {
        "d-images_one": (10, 10, 30, 20),
        "d-images_two-r1": (5, 5, 15, 15),
        "d-images_two-r2": (30, 35, 50, 45),
    }


def test_split_regions_join_the_pieces_of_a_gapped_crack_but_not_distant_specks():
    """join_gap: a crack annotated in pieces 3 px apart stays one region; two specks at the
    two ends of a tile (the demo's MT_Crack exp2_num_265639: one 'large' record that was nearly
    all empty box, injected as two invisible specks) are two regions, each at its own size."""
    crack = np.zeros((200, 40), bool)
    crack[10:60, 20] = crack[63:120, 21] = crack[123:190, 20] = True
    regions, dropped = split_regions(crack, 20, join_gap=4)
    assert len(regions) == 1 and dropped == 0 and np.count_nonzero(regions[0]) == crack.sum()
    assert len(split_regions(crack, 20)[0]) == 3  # without a gap: three pieces
    ends = np.zeros((380, 100), bool)
    ends[2:12, 20:34] = ends[360:378, 80:90] = True  # 140 and 180 px, as in that record
    regions, dropped = split_regions(ends, 20, join_gap=24)
    assert [np.count_nonzero(r) for r in regions] == [140, 180] and dropped == 0


@pytest.mark.parametrize("join_gap", [2, 4, 16])
def test_join_gap_joins_gaps_up_to_its_stated_width(join_gap):
    for gap in range(1, 20):
        pieces = np.zeros((10, 60), bool)
        pieces[4:6, 5:20] = pieces[4:6, 20 + gap : 40 + gap] = True
        joined = len(split_regions(pieces, 1, join_gap=join_gap)[0]) == 1
        assert joined == (gap <= join_gap), gap
