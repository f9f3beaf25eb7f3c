"""Generation masks: real defect shapes, warped, scaled and placed by CAI's rules."""

import numpy as np
import pytest

from cai_ray.cdm.masks import AffineParams, GenerationMask, MaskGenerator, warp_mask
from cai_ray.core.cai import CAIParams, SourcePattern
from cai_ray.core.geometry import mask_bbox
from cai_ray.core.synthesis import sample_rng


def test_warp_keeps_the_shape_whole_and_roughly_its_area():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 5:55] = True
    for seed in range(20):
        warped = warp_mask(mask, AffineParams(), np.random.default_rng(seed))
        assert warped.any() and mask_bbox(warped) == (0, 0, *warped.shape)  # cropped to its box
        # stretch within [0.8, 1.25] and shear keep the area within those factors (+ edges)
        assert 0.7 * mask.sum() < warped.sum() < 1.45 * mask.sum()
    identity = AffineParams(rotation=0, scale_x=(1, 1), shear=0, flip=False)
    assert np.array_equal(warp_mask(mask, identity, np.random.default_rng(0)), mask[10:30, 5:55])


@pytest.fixture
def generator(crack_patterns):
    return MaskGenerator(crack_patterns, CAIParams())


def test_masks_follow_the_quotas_and_stay_on_the_foreground(generator, crack_patterns):
    foreground = np.zeros((128, 128), bool)
    foreground[16:112, 24:120] = True
    rngs = [sample_rng(0, "target", k) for k in range(generator.count)]
    drawn = generator.draw(foreground, rngs)
    assert len(drawn) == 10
    made = [m for m in drawn if isinstance(m, GenerationMask)]
    assert len(made) >= 8
    assert [m.scale for m in made] == sorted(
        [m.scale for m in made], key="large medium small".index
    )
    ids = {p.record_id for p in crack_patterns}
    for region in made:
        assert region.mask.shape == (128, 128) and not (region.mask & ~foreground).any()
        assert region.mask.sum() >= 10 and region.source_record_id in ids
        assert region.anomaly_class == "crack"
    large = [m.mask for m in made if m.scale == "large"]
    small = [m.mask for m in made if m.scale == "small"]
    assert np.mean([m.sum() for m in large]) > np.mean([m.sum() for m in small])
    again = generator.draw(foreground, [sample_rng(0, "target", k) for k in range(10)])
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(made, again, strict=False))


def test_no_fitting_pattern_is_a_counted_failure():
    huge = np.ones((200, 200), bool)
    pattern = SourcePattern.from_full_image(
        np.zeros((200, 200), np.uint8), huge, anomaly_class="crack", domain="d", record_id="r"
    )
    generator = MaskGenerator([pattern], CAIParams(min_mask_pixels=20, max_draws=2))
    foreground = np.zeros((64, 64), bool)
    foreground[30:34, 30:34] = True  # a 4x4 object: no region reaches 20 pixels
    result = generator.draw(foreground, [np.random.default_rng(k) for k in range(10)])[0]
    assert not isinstance(result, GenerationMask)
    assert "gave up after 6 draws (large/medium/small)" in result.reason  # each scale tried


def test_masks_follow_the_daads_class_weights(demo_daad, tile_targets):
    """The CDM draws its masks' classes as CAI does: crack 3 : hole 1, others not at all (no
    STM and large quotas, so every pattern fits every slot and only the weights decide)."""
    from cai_ray.core.cai import Quotas, class_weights
    from cai_ray.daad.shards import PatternBank

    bank = PatternBank(demo_daad, mode="grey", include_classes=["crack", "hole"])
    weights = class_weights(bank.classes, {"crack": 3, "hole": 1})
    params = CAIParams(match_scale=False, quotas=Quotas(large=10, medium=0, small=0))
    generator = MaskGenerator(bank, params, weights=weights)
    foreground = np.ones(tile_targets[0].shape, bool)
    drawn = [
        mask.anomaly_class
        for target in range(12)
        for mask in generator.draw(foreground, [sample_rng(0, f"t{target}", k) for k in range(10)])
        if isinstance(mask, GenerationMask)
    ]
    assert set(drawn) == {"crack", "hole"} and len(drawn) >= 100
    assert 0.6 <= drawn.count("crack") / len(drawn) <= 0.9  # 0.75 expected
    with pytest.raises(ValueError, match="weights must be positive"):
        MaskGenerator(bank, params, weights=weights[:-1])
