"""The baselines on real magnetic-tile targets: each changes the image only where its
construction says, labels what it changed, follows its published parameter ranges, and is a
pure function of (seed, target key)."""

import math

import numpy as np
import pytest

from cai_ray.core.synthesis import Failure, Patched
from cai_ray.synthesizers.cutpaste import CutPaste, CutPasteParams
from cai_ray.synthesizers.draem import AUGMENTATIONS, Draem, DraemParams, perlin_noise
from cai_ray.synthesizers.nsa import NSA, NSAParams
from cai_ray.synthesizers.patches import color_jitter, rotate_with_mask


def _made(results):
    made = [r for r in results if isinstance(r, Patched)]
    assert len(made) >= len(results) - 1, [r for r in results if isinstance(r, Failure)]
    return made


@pytest.fixture
def full(tile_targets):
    return np.ones(tile_targets[0].shape, bool)


def test_color_jitter_at_zero_strength_is_the_identity(tile_targets):
    rng = np.random.default_rng(0)
    rgb = np.stack([tile_targets[0], tile_targets[1], tile_targets[2]], axis=-1)
    assert np.array_equal(color_jitter(tile_targets[0], 0.0, rng), tile_targets[0])
    assert np.abs(color_jitter(rgb, 0.0, rng).astype(int) - rgb).max() <= 1  # float HSV round trip


def test_cutpaste_normal_pastes_a_rectangle_of_the_published_area(tile_targets, full):
    target = tile_targets[0]
    results = _made(CutPaste().synthesize(target, full, seed=1, target_key="t0"))
    assert len(results) == 10
    for result in results:
        mask = result.mask > 0
        ys, xs = np.nonzero(mask)
        box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert box_area == mask.sum()  # one axis-aligned rectangle
        assert 0.02 * 256**2 * 0.97 <= mask.sum() <= 0.15 * 256**2 * 1.03
        assert np.array_equal(result.image[~mask], target[~mask])
        assert result.method == "cutpaste"


def test_cutpaste_scar_is_a_thin_rotated_strip(tile_targets, full):
    target = tile_targets[1]
    params = CutPasteParams(variant="scar")
    results = _made(CutPaste(params).synthesize(target, full, seed=2, target_key="t1"))
    for result in results:
        mask = result.mask > 0
        assert 2 * 10 * 0.6 <= mask.sum() <= 16 * 25 * 1.4
        assert np.array_equal(result.image[~mask], target[~mask])
        assert abs(result.details()["rotation"]) <= 45
    rotated_image, rotated = rotate_with_mask(
        np.ones((20, 4), np.uint8), np.ones((20, 4), bool), 90
    )
    assert rotated.shape == (4, 20) == rotated_image.shape and rotated.all()


def test_nsa_changes_only_its_patches_and_labels_visible_change(tile_targets, full):
    target = tile_targets[2]
    donors = [(image, full) for image in tile_targets[3:6]]
    for blend in ("normal", "mixed"):
        nsa = NSA(NSAParams(blend=blend))
        results = _made(nsa.synthesize(target, full, seed=3, target_key="t2", donors=donors))
        for result in results:
            boxes = np.zeros(target.shape, bool)
            for *_, py, px, h, w in result.details()["patches"]:
                assert 0.03 * 256 * 0.7 - 1 <= h <= 0.4 * 256 * 1.3 + 1
                boxes[py : py + h, px : px + w] = True
            changed = np.abs(result.image.astype(int) - target) > 7
            assert np.array_equal(result.image[~boxes], target[~boxes])
            assert np.array_equal(result.mask > 0, changed & boxes)
            assert result.method == ("nsa" if blend == "normal" else "nsa-mixed")


def test_nsa_without_donors_reports_every_sample(tile_targets, full):
    results = NSA().synthesize(tile_targets[0], full, seed=0, target_key="alone")
    assert len(results) == 10 and all(isinstance(r, Failure) for r in results)
    assert "another normal image" in results[0].reason


def test_perlin_noise_vanishes_on_the_lattice_and_is_bounded():
    rng = np.random.default_rng(5)
    noise = perlin_noise((64, 96), (4, 6), rng)
    assert noise.shape == (64, 96)
    assert np.allclose(noise[::16, ::16], 0, atol=1e-9)  # gradient noise is 0 at lattice points
    assert np.abs(noise).max() <= 1.0 + 1e-9 and noise.std() > 0.05


def test_every_draem_augmentation_keeps_shape_and_type(tile_targets):
    rng = np.random.default_rng(0)
    rgb = np.stack([tile_targets[0]] * 3, axis=-1)
    for augment in AUGMENTATIONS:
        for image in (tile_targets[0], rgb):
            out = augment(image, rng)
            assert out.shape == image.shape and out.dtype == np.uint8


def test_draem_blends_textures_inside_perlin_masks_on_the_foreground(tile_targets):
    target = tile_targets[0]
    foreground = np.zeros(target.shape, bool)
    foreground[:, :160] = True
    draem = Draem(tile_targets[5:8], DraemParams())
    results = _made(draem.synthesize(target, foreground, seed=4, target_key="t0"))
    for result in results:
        mask = result.mask > 0
        assert not mask[:, 160:].any()
        assert np.array_equal(result.image[~mask], target[~mask])
        assert 0 <= result.details()["beta"] <= 0.8
        cells = result.details()["perlin_cells"]
        assert all(c in (1, 2, 4, 8, 16, 32) for c in cells)
    assert {math.log2(c) for r in results for c in r.details()["perlin_cells"]} != {0}


@pytest.mark.parametrize(
    "make",
    [
        lambda textures: CutPaste(),
        lambda textures: CutPaste(CutPasteParams(variant="scar")),
        lambda textures: NSA(),
        lambda textures: Draem(textures),
    ],
)
def test_each_baseline_is_a_pure_function_of_seed_and_key(make, tile_targets, full):
    synthesizer = make(tile_targets[4:6])
    donors = [(tile_targets[3], full)]

    def run(seed, key):
        results = synthesizer.synthesize(
            tile_targets[0], full, seed=seed, target_key=key, donors=donors
        )
        return [r.image for r in results if isinstance(r, Patched)]

    first, again, other = run(0, "a"), run(0, "a"), run(1, "a")
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=False))
