import cv2
import numpy as np
import pytest

from cai_ray.core.labels import binary_median, grey_difference, label_mask


def _pair():
    target = np.full((40, 40), 100, np.uint8)
    result = target.copy()
    result[10:30, 10:30] = 110  # a 20x20 visible change
    result[2, 2] = 200  # an isolated speck
    result[35, 5:35] = 105  # below the threshold
    return result, target


def test_published_rule_thresholds_then_median_filters():
    result, target = _pair()
    mask = label_mask(result, target, rule="published")
    assert set(np.unique(mask)) == {0, 255}
    assert mask[2, 2] == 0  # the median removed the speck
    assert not mask[35].any()  # difference 5 <= 7
    assert mask[12:28, 12:28].all()


def test_pattern_rule_keeps_only_pixels_near_the_pattern():
    result, target = _pair()
    pattern = np.zeros((40, 40), bool)
    pattern[15:20, 15:20] = True
    mask = label_mask(result, target, rule="pattern", pattern_mask=pattern, pattern_dilation=5)
    ys, xs = np.nonzero(mask)
    assert ys.min() == 13 and ys.max() == 21 and xs.min() == 13 and xs.max() == 21
    with pytest.raises(ValueError):
        label_mask(result, target, rule="pattern")


def test_connected_rule_keeps_the_change_connected_to_the_pattern():
    """The 20x20 change touches the pattern: kept whole, beyond the pattern rule's reach; the
    speck elsewhere does not: dropped."""
    result, target = _pair()
    pattern = np.zeros((40, 40), bool)
    pattern[15:20, 15:20] = True
    mask = label_mask(result, target, rule="connected", pattern_mask=pattern, pattern_dilation=5)
    assert mask[10:30, 10:30].all() and mask.sum() == 400 * 255
    assert mask[2, 2] == 0
    apart = np.zeros((40, 40), bool)
    apart[36:39, 36:39] = True  # nothing visible touches it
    assert not label_mask(result, target, rule="connected", pattern_mask=apart).any()
    with pytest.raises(ValueError, match="needs the pattern mask"):
        label_mask(result, target, rule="connected")


def test_grey_difference_of_rgb_uses_luminance():
    target = np.zeros((4, 4, 3), np.uint8)
    result = target.copy()
    result[..., 1] = 100
    assert grey_difference(result, target).max() == 59  # 0.587 * 100
    with pytest.raises(ValueError):
        grey_difference(result, target[:3])


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9])
def test_binary_median_is_cv2s_median_pixel_for_pixel(size):
    """Issue 24: the box-count median of a {0, 255} mask equals cv2.medianBlur everywhere,
    borders included, for sparse, dense and tiny masks."""
    rng = np.random.default_rng(size)
    for height, width, share in [(64, 80, 0.3), (1, 40, 0.5), (9, 2, 0.7), (33, 33, 0.05)]:
        mask = np.where(rng.random((height, width)) < share, 255, 0).astype(np.uint8)
        expected = mask if size == 1 else cv2.medianBlur(mask, size)
        assert np.array_equal(binary_median(mask, size), expected)
