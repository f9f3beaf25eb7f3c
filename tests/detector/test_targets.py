"""Target datasets for the detector: magnetic tile from ../shared/data, and an MVTec layout."""

import numpy as np
import pytest

from cai_ray.detector.targets import (
    MvtecTarget,
    load_target_spec,
    load_target_split,
    load_test_set,
)
from cai_ray.io.codecs import encode_image
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
    images, masks, kept = load_test_set(split, 64, "grey")
    assert images.shape == (571, 64, 64) and masks.dtype == bool and len(kept) == 571
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
    images, masks, kept = load_test_set(split, 32, "rgb")
    assert images.shape == (3, 32, 32, 3) and [k.defect for k in kept] == ["crack", "good", "good"]
    assert masks[0].sum() == 8 * 8 and not masks[1:].any()
    reasons = [s["reason"] for s in split.skipped]
    assert "differ in size" in reasons[1] and reasons[2] == "mask is empty"


def test_missing_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_target_split(MvtecTarget(layout="mvtec", name="x", root="nothing"), tmp_path)
