"""Near-duplicate fingerprints on real images: copies found, distinct images left apart."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from cai_ray.core.duplicates import fingerprint, near_duplicate_groups
from cai_ray.io.codecs import decode_image

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def _ratio(image: np.ndarray) -> float:
    return max(image.shape[:2]) / min(image.shape[:2])


def _reencoded(image: np.ndarray, quality: int) -> np.ndarray:
    quality_flag = [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), quality_flag)
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _load(files: list[Path]) -> list[np.ndarray]:
    return [decode_image(f.read_bytes(), "grey") for f in files]


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    """Distinct real defect-free tiles of several sizes (the bundled normal sample)."""
    return _load(sorted((DEMO / "normal").glob("*.jpg")))


def test_rotated_flipped_resized_reencoded_copies_are_grouped_with_their_original(tiles):
    originals = tiles[:6]
    copies = [
        np.rot90(originals[0], 1),
        np.rot90(originals[1], 2)[:, ::-1],  # rotated and flipped
        _reencoded(originals[2][::-1], 80),  # flipped and re-encoded
        cv2.resize(np.rot90(originals[3], 3), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
    ]
    images = originals + copies
    groups = near_duplicate_groups(
        np.stack([fingerprint(i) for i in images]), np.array([_ratio(i) for i in images])
    )
    assert groups == [[0, 6], [1, 7], [2, 8], [3, 9]]


def test_distinct_real_tiles_are_not_duplicates(tiles):
    groups = near_duplicate_groups(
        np.stack([fingerprint(i) for i in tiles]), np.array([_ratio(i) for i in tiles])
    )
    assert groups == []


def test_one_tile_photographed_at_several_exposures_is_found():
    """The bundled blowholes hold one tile shot in three of the dataset's exposure runs
    (exp1, exp5, exp6), and two frays one tile in two: distinct files, one defect each."""
    files = sorted(DEMO.glob("defects/MT_Blowhole/Imgs/*.jpg")) + sorted(
        DEMO.glob("defects/MT_Fray/Imgs/*.jpg")
    )
    images = _load(files)
    groups = near_duplicate_groups(
        np.stack([fingerprint(i) for i in images]), np.array([_ratio(i) for i in images])
    )
    assert [[files[i].stem for i in group] for group in groups] == [
        ["exp1_num_290998", "exp5_num_291077", "exp6_num_291134"],
        ["exp1_num_135544", "exp5_num_135651"],
    ]


def test_a_pair_needs_the_same_aspect_ratio_and_a_flat_image_matches_nothing(tiles):
    tile = tiles[0]
    square = cv2.resize(tile, (200, 200))
    stretched = cv2.resize(tile, (400, 200))
    flat = np.full((64, 64), 128, np.uint8)
    prints = np.stack([fingerprint(i) for i in (square, stretched, flat, flat)])
    assert not prints[2].any()
    assert near_duplicate_groups(prints, np.array([1.0, 2.0, 1.0, 1.0])) == []
    # the same pair with matching ratios is grouped (the thumbnail ignores the aspect)
    assert near_duplicate_groups(prints[:2], np.array([1.0, 1.0])) == [[0, 1]]


def test_fingerprints_of_colour_and_grey_images_agree(tiles):
    grey = tiles[0]
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(fingerprint(grey), fingerprint(rgb))
