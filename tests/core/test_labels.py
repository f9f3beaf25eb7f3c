import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from cai_ray.core.labels import binary_median, grey_difference, label_mask, visibility


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
    """The box-count median of a {0, 255} mask equals cv2.medianBlur everywhere,
    borders included, for sparse, dense and tiny masks."""
    rng = np.random.default_rng(size)
    for height, width, share in [(64, 80, 0.3), (1, 40, 0.5), (9, 2, 0.7), (33, 33, 0.05)]:
        mask = np.where(rng.random((height, width)) < share, 255, 0).astype(np.uint8)
        expected = mask if size == 1 else cv2.medianBlur(mask, size)
        assert np.array_equal(binary_median(mask, size), expected)


def _holes(mask: np.ndarray) -> np.ndarray:
    return binary_fill_holes(mask > 0) & ~(mask > 0)


@pytest.mark.parametrize("rule", ["pattern", "connected"])
def test_a_stain_whose_change_is_scattered_gets_a_solid_label(rule):
    """A large stain whose blended change falls under the threshold in scattered
    pixels (its edge included) is labelled as one region, not a spray with holes."""
    rng = np.random.default_rng(0)
    target = np.full((80, 80), 100, np.uint8)
    pattern = np.zeros((80, 80), bool)
    pattern[20:60, 15:65] = True
    result = target.copy()
    result[pattern] = np.where(rng.random(pattern.sum()) < 0.35, 104, 120)  # 35% under 7
    label = label_mask(result, target, rule=rule, pattern_mask=pattern) > 0
    assert not _holes(label).any()
    assert label[pattern].mean() > 0.97  # a rim pixel under the threshold may stay out
    near = cv2.dilate(pattern.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert not (label & ~near).any()
    # Without regions (the labels before them, kept for the benchmark's comparison): the
    # changed pixels themselves, the spray.
    raw = label_mask(result, target, rule=rule, pattern_mask=pattern, regions=False) > 0
    assert np.array_equal(raw, (result.astype(int) - target > 7) & near)
    assert _holes(raw).any()


def test_a_one_pixel_crack_stays_as_thin_as_its_mask():
    """Two one-pixel cracks 8 px apart with a visible halo: closing does not fill the gap
    between them, the label stays within each crack's dilated mask."""
    target = np.full((60, 60), 100, np.uint8)
    pattern = np.zeros((60, 60), bool)
    pattern[10:50, 20] = pattern[10:50, 28] = True
    result = target.copy()
    result[:, 18:23] = result[:, 26:31] = 110  # the halo 2 px either side, visible
    result[pattern] = 40
    label = label_mask(result, target, rule="pattern", pattern_mask=pattern) > 0
    near = cv2.dilate(pattern.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert not (label & ~near).any()
    assert not label[:, 23:26].any()  # the gap between the cracks stays open
    assert label[10:50, 20].all() and label[10:50, 28].all()
    assert label.sum() <= near.sum()


def test_a_hole_the_pattern_has_stays_a_hole():
    """A ring-shaped pattern, changed everywhere: the pattern rule keeps the ring's hole (where
    the pattern is not), the label has no other hole."""
    target = np.full((60, 60), 100, np.uint8)
    pattern = np.zeros((60, 60), bool)
    pattern[10:50, 10:50] = True
    pattern[22:38, 22:38] = False  # 16x16 hole, wider than the dilation closes
    result = target.copy()
    result[5:55, 5:55] = 130
    label = label_mask(result, target, rule="pattern", pattern_mask=pattern) > 0
    assert not label[26:34, 26:34].any()
    near = cv2.dilate(pattern.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert not (_holes(label) & near).any()


def test_visibility_measures_the_changed_share_and_the_contrast():
    rng = np.random.default_rng(1)
    flat = np.full((60, 60), 100, np.uint8)
    textured = np.clip(rng.normal(100, 20, (60, 60)), 0, 255).astype(np.uint8)
    placed = np.zeros((60, 60), bool)
    placed[20:40, 20:40] = True
    for target in (flat, textured):
        result = target.copy()
        result[20:30, 20:40] = target[20:30, 20:40] + 12  # half the pattern, 12 levels
        label = label_mask(result, target, rule="pattern", pattern_mask=placed)
        share, contrast = visibility(result, target, placed, label, threshold=7)
        assert share == pytest.approx(0.5)
        if target is flat:  # no spread around: 12 levels over one
            assert contrast == pytest.approx(12.0)
        else:  # 12 levels on a texture spreading 20: under one spread
            assert 0.3 < contrast < 1.0


def test_the_contrast_ring_lies_on_the_surface_not_the_padding():
    """A change next to a letterbox bar: the bar's black in the ring would make a flat tile look
    textured and the change faint; with the surface given the ring skips it."""
    target = np.full((64, 64), 120, np.uint8)
    target[:, :20] = 0  # the padding
    target[:, 20:] += (np.arange(44) % 2).astype(np.uint8)  # a flat surface, one grey level
    result = target.copy()
    result[20:40, 22:30] += 12
    label = np.zeros((64, 64), np.uint8)
    label[20:40, 22:30] = 255
    placed = label > 0
    _, with_padding = visibility(result, target, placed, label, threshold=7)
    surface = np.zeros((64, 64), bool)
    surface[:, 20:] = True
    share, on_surface = visibility(result, target, placed, label, threshold=7, surface=surface)
    assert share == 1.0 and with_padding < 0.4 < on_surface
