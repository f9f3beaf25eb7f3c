"""GLASS's local anomaly synthesis on real tiles: the blend weight's published law, the mask
combinations, the nine texture operations, the target as its own texture, the foreground."""

import numpy as np
import pytest

from cai_ray.core.synthesis import Failure, Patched
from cai_ray.synthesizers.glass import AUGMENTATIONS, Glass, GlassParams


class _Tiles:
    def __init__(self, tiles):
        self.tiles = tiles

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, index):
        return self.tiles[index]


@pytest.fixture
def full(tile_targets):
    return np.ones(tile_targets[0].shape, bool)


def test_every_texture_operation_keeps_shape_and_type(tile_targets):
    rng = np.random.default_rng(0)
    rgb = np.stack(tile_targets[:3], axis=-1)
    for image in (tile_targets[0], rgb):
        for op in AUGMENTATIONS:
            out = op(image, rng)
            assert out.shape == image.shape and out.dtype == np.uint8
    assert len(AUGMENTATIONS) == 9


def test_blend_weights_follow_the_published_law_and_masks_are_labels(tile_targets, full):
    glass = Glass(_Tiles(tile_targets[4:8]), GlassParams(anomalies_per_target=40))
    target = tile_targets[0]
    made = [
        a for a in glass.synthesize(target, full, seed=0, target_key="t") if isinstance(a, Patched)
    ]
    assert len(made) >= 36
    betas = np.array([a.info["beta"] for a in made])
    assert betas.min() >= 0.2 and betas.max() <= 0.8
    assert abs(betas.mean() - 0.5) < 0.05 and 0.05 < betas.std() < 0.15  # N(0.5, 0.1), clipped
    assert {a.info["masks"] for a in made} == {"union", "intersection", "one"}
    for anomaly in made:
        assert len(set(anomaly.info["augmentations"])) == 3
        outside = anomaly.mask == 0
        assert np.array_equal(anomaly.image[outside], target[outside])


def test_without_textures_the_target_is_its_own_and_the_foreground_bounds_the_mask(
    tile_targets,
):
    foreground = np.zeros(tile_targets[0].shape, bool)
    foreground[:, :100] = True
    glass = Glass(None, GlassParams(anomalies_per_target=8))
    results = glass.synthesize(tile_targets[1], foreground, seed=3, target_key="t")
    made = [a for a in results if isinstance(a, Patched)]
    assert len(made) >= 6 and {a.info["texture"] for a in made} == {"target"}
    for anomaly in made:
        assert not anomaly.mask[:, 100:].any()
    empty = np.zeros_like(foreground)
    failed = glass.synthesize(tile_targets[1], empty, seed=3, target_key="t")
    assert all(isinstance(r, Failure) for r in failed)
