"""Target datasets for the detector: magnetic tile from ../shared/data, and an MVTec layout."""

import numpy as np
import pytest

from cai_ray.detector.target_specs import MvtecTarget, YoloCropsTarget, load_target_spec
from cai_ray.detector.target_splits import load_target_split
from cai_ray.detector.targets import load_test_set
from cai_ray.detector.yolo_crops import GridCrop, grid_crops
from cai_ray.io.codecs import decode_image, decode_mask, encode_image
from tests.conftest import REPO


def test_magnetic_tile_split(shared_data):
    spec = load_target_spec(REPO / "configs" / "targets" / "magnetic_tile.yaml")
    split = load_target_split(spec, shared_data)
    assert split.counts() == {
        "train": 762,
        "blowhole": 115,
        "break": 85,
        "crack": 57,
        "fray": 32,
        "good": 190,
        "uneven": 103,
    }
    held_out = {item.path for item in split.test if item.defect == "good"}
    assert not held_out & set(split.train) and len(held_out | set(split.train)) == 952
    test = load_test_set(split, 64, "grey")
    images, masks, kept = test.targets, np.stack(test.masks), test.items
    assert images.shape == (571, 64, 64) and masks.dtype == bool and len(kept) == 571
    assert np.array_equal(test.target_masks, masks)  # resize: one target an image
    reasons = sorted(s["reason"] for s in split.skipped)
    # 7 defects vanish when their tile shrinks to 64x64; 4 MT_Uneven masks are empty
    assert reasons == ["defect smaller than a pixel at 64x64"] * 7 + ["mask is empty"] * 4
    anomalous = np.array([item.mask is not None for item in kept])
    assert masks[anomalous].reshape(anomalous.sum(), -1).any(axis=1).all()
    assert not masks[~anomalous].any()


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(array, "png"))


def test_mvtec_layout_with_bad_masks(tmp_path):
    category = tmp_path / "bottle"
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(
            category / "train" / "good" / f"{i:03d}.png",
            rng.integers(0, 255, (40, 40, 3), np.uint8),
        )
    for i in range(2):
        _png(
            category / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, (40, 40, 3), np.uint8)
        )
    for i in range(4):
        _png(
            category / "test" / "crack" / f"{i:03d}.png",
            rng.integers(0, 255, (40, 40, 3), np.uint8),
        )
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 200  # not binary: >= 128 counts as defect
    _png(category / "ground_truth" / "crack" / "000_mask.png", mask)
    _png(category / "ground_truth" / "crack" / "001_mask.png", np.zeros((20, 20), np.uint8) + 255)
    _png(category / "ground_truth" / "crack" / "002_mask.png", np.zeros((40, 40), np.uint8))
    (category / "test" / "crack" / "notes.txt").write_text("not an image")

    split = load_target_split(MvtecTarget(layout="mvtec", name="bottle", root="bottle"), tmp_path)
    assert split.counts() == {"train": 3, "crack": 3, "good": 2}
    assert split.skipped[0]["reason"] == "no mask file 003_mask.png"
    test = load_test_set(split, 32, "rgb")
    images, masks, kept = test.targets, np.stack(test.masks), test.items
    assert images.shape == (3, 32, 32, 3) and [k.defect for k in kept] == ["crack", "good", "good"]
    assert masks[0].sum() == 8 * 8 and not masks[1:].any()
    reasons = [s["reason"] for s in split.skipped]
    assert "differ in size" in reasons[1] and reasons[2] == "mask is empty"


def test_missing_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_target_split(MvtecTarget(layout="mvtec", name="x", root="nothing"), tmp_path)


def test_grid_crops_sorts_normal_anomalous_and_neither():
    thread = np.zeros((64, 96), bool)
    thread[5:27, 30:32] = True  # 44 pixels in crop (0, 0), on its right edge
    packet = np.zeros((64, 96), bool)
    packet[2:10, 2:8] = True  # 48 pixels, also in crop (0, 0): the larger label names it
    packet[40:41, 63:64] = True  # one pixel in crop (32, 32), just inside crop (32, 64)'s margin
    crops, neither = grid_crops(
        {"thread": thread, "packet": packet},
        (64, 96),
        crop=32,
        stride=32,
        margin=2,
        min_defect_fraction=0.02,  # 20.48 pixels of a 32x32 crop
    )
    assert crops == [
        GridCrop(0, 0, "packet"),
        GridCrop(0, 64, None),
        GridCrop(32, 0, None),
    ]
    assert neither == 3  # (0, 32): within the margin of the thread; (32, 32): one pixel;
    # (32, 64): a defect pixel 1 pixel from its edge
    edge, _ = grid_crops({}, (50, 40), crop=32, stride=32, margin=0, min_defect_fraction=0.1)
    assert [(c.y, c.x) for c in edge] == [(0, 0), (0, 8), (18, 0), (18, 8)]  # flush with edges


def _yolo_export(root, frames, names=("belt", "thread")):
    (root / "data.yaml").write_text(f"names: {list(names)}\n")
    rng = np.random.default_rng(1)
    for part, stems in frames.items():
        for stem, lines in stems.items():
            _png(
                root / part / "images" / f"{stem}.png", rng.integers(0, 255, (64, 64, 3), np.uint8)
            )
            if lines is not None:
                (root / part / "labels").mkdir(parents=True, exist_ok=True)
                (root / part / "labels" / f"{stem}.txt").write_text(lines)


def _crops_spec(tmp_path, **changes):
    fields = {
        "layout": "yolo_crops",
        "name": "toy",
        "names": "data.yaml",
        "defects": ["thread"],
        "train": [{"images": "a/images", "labels": "a/labels"}],
        "test": [{"images": "b/images", "labels": "b/labels"}],
        "crop": 32,
        "margin": 2,
        "min_defect_fraction": 0.05,
        "crops": str(tmp_path / "crops"),
    }
    return YoloCropsTarget(**{**fields, **changes})


def test_yolo_crops_target_cuts_keeps_and_recuts(tmp_path):
    # A thread across the top-left quarter; the belt label is the surface, not a defect.
    thread = "1 0.05 0.05 0.4 0.05 0.4 0.2 0.05 0.2\n0 0 0 1 0 1 1 0 1\n"
    _yolo_export(
        tmp_path,
        {
            "a": {"f1": thread, "f2": "", "nolabel": None},
            "b": {"g1": thread, "g2": "7 0 0 1 0 1 1\n", "g3": thread + "1 0.5 0.5 0.6\n"},
        },
    )
    spec = _crops_spec(tmp_path)
    split = load_target_split(spec, tmp_path)
    # f1: 3 normal crops (its thread crop is left out of training); f2: 4; g1: 3 good + 1 thread
    assert split.counts() == {"train": 7, "good": 3, "thread": 1}
    reasons = sorted(s["reason"] for s in split.skipped)
    assert reasons == [
        "no label file nolabel.txt",
        "unreadable: line 1 has label index 7, not in the names list (2)",
        "unreadable: line 3 has 3 coordinates, not 3+ points",  # its thread is not used alone
    ]
    anomaly = next(t for t in split.test if t.defect == "thread")
    assert anomaly.path.name == "g1_y0000_x0000.png"
    mask = decode_mask(anomaly.mask.read_bytes())
    expected = np.zeros((64, 64), bool)
    expected[3:14, 3:26] = True  # corners 0.05, 0.4 (x) and 0.2 (y) of 63, rounded, filled
    assert np.array_equal(mask, expected[:32, :32])
    cut = decode_image(anomaly.path.read_bytes(), "rgb")
    frame = decode_image((tmp_path / "b" / "images" / "g1.png").read_bytes(), "rgb")
    assert np.array_equal(cut, frame[:32, :32])

    index = tmp_path / "crops" / "crops.json"
    written = index.stat().st_mtime_ns
    assert load_target_split(spec, tmp_path).counts() == split.counts()
    assert index.stat().st_mtime_ns == written  # unchanged spec: the crops are reused

    recut = load_target_split(_crops_spec(tmp_path, crop=64), tmp_path)
    assert recut.counts() == {"train": 1, "thread": 1}  # f2 whole; g1 holds the thread
    left = sorted(p.name for p in (tmp_path / "crops").rglob("*.png"))
    assert left == ["f2_y0000_x0000.png", "g1_y0000_x0000.png", "g1_y0000_x0000.png"]


def test_yolo_crops_target_refuses_leaks_and_unknown_labels(tmp_path):
    with pytest.raises(ValueError, match="in both train and test"):
        _crops_spec(tmp_path, test=[{"images": "a/images", "labels": "a/labels"}])
    _yolo_export(tmp_path, {"a": {"f1": ""}, "b": {"g1": ""}})
    with pytest.raises(ValueError, match=r"defects \['wood'\] are not labels"):
        load_target_split(_crops_spec(tmp_path, defects=["wood"]), tmp_path)


def test_cotton_impurity_target(shared_data, tmp_path):
    spec = load_target_spec(REPO / "configs" / "targets" / "cotton_impurity.yaml")
    assert isinstance(spec, YoloCropsTarget)
    split = load_target_split(spec.model_copy(update={"crops": str(tmp_path)}), shared_data)
    counts = split.counts()
    assert counts == {
        "train": 457,
        "cloth": 47,
        "good": 264,
        "jute": 66,
        "packet": 67,
        "thread": 245,
    }
    assert not split.skipped
    train_frames = {p.name.split("_y")[0] for p in split.train}
    test_frames = {t.path.name.split("_y")[0] for t in split.test}
    assert train_frames and test_frames and not train_frames & test_frames
    test = load_test_set(split, 96, "grey")
    images, masks, kept = test.targets, np.stack(test.masks), test.items
    anomalous = np.array([item.mask is not None for item in kept])
    assert images.shape[1:] == (96, 96) and anomalous.sum() == 425
    assert masks[anomalous].reshape(anomalous.sum(), -1).any(axis=1).all()
    assert not masks[~anomalous].any()
