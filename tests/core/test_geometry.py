import numpy as np
import pytest

from cai_ray.core.geometry import (
    Scale,
    choose_location,
    fallback_scale,
    mask_bbox,
    quota_schedule,
    scale_classes,
)


def test_scale_class_boundaries_follow_the_paper():
    ratios = np.array([0.0, 0.0999, 0.1, 0.2999, 0.3, 0.6999, 0.7, 3.0])
    expected = [0, 0, 1, 1, 2, 2, 3, 3]
    assert scale_classes(ratios).tolist() == expected


def test_quota_schedule_fills_larger_scales_first():
    schedule = quota_schedule({Scale.SMALL: 3, Scale.LARGE: 4, Scale.MEDIUM: 3})
    assert schedule == [Scale.LARGE] * 4 + [Scale.MEDIUM] * 3 + [Scale.SMALL] * 3
    with pytest.raises(ValueError):
        quota_schedule({Scale.SMALL: -1})


def test_fallback_never_makes_a_pattern_larger_than_its_class():
    classes = np.array([Scale.SMALL, Scale.MEDIUM, Scale.TRIVIAL])
    assert fallback_scale(Scale.LARGE, classes) == Scale.MEDIUM
    assert fallback_scale(Scale.SMALL, classes) == Scale.SMALL
    assert fallback_scale(Scale.LARGE, np.array([Scale.TRIVIAL])) is None
    assert fallback_scale(Scale.LARGE, np.array([], dtype=np.int8)) is None


def test_mask_bbox():
    mask = np.zeros((10, 12), bool)
    assert mask_bbox(mask) is None
    mask[2:5, 7] = True
    assert mask_bbox(mask) == (2, 7, 5, 8)


def _corner_by_brute_force(allowed, height, width, rng):
    """The reference: list every corner whose box fits with its centre allowed, draw one."""
    img_h, img_w = allowed.shape
    corners = [
        (y, x)
        for y in range(img_h - height + 1)
        for x in range(img_w - width + 1)
        if allowed[y + height // 2, x + width // 2]
    ]
    return corners[int(rng.integers(len(corners)))] if corners else None


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_choose_location_matches_brute_force(share):
    """Same corner, same random draws as listing every candidate (the unoptimised code), for
    a partial foreground, none, and a full one (the fast path)."""
    rng = np.random.default_rng(3)
    allowed = rng.random((23, 31)) < share
    for height, width in [(7, 10), (1, 1), (23, 31), (12, 5)]:
        fast, slow = np.random.default_rng(9), np.random.default_rng(9)
        for _ in range(20):
            assert choose_location(allowed, height, width, fast) == _corner_by_brute_force(
                allowed, height, width, slow
            )


def test_choose_location_keeps_box_in_image_and_centre_on_foreground():
    allowed = np.zeros((64, 64), bool)
    allowed[40:60, 5:20] = True
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, x = choose_location(allowed, 30, 12, rng)
        assert 0 <= y <= 64 - 30 and 0 <= x <= 64 - 12
        assert allowed[y + 15, x + 6]
    assert choose_location(allowed, 65, 5, rng) is None
