"""Metrics against hand-worked answers and brute-force computations of their definitions."""

import numpy as np
import pytest
from scipy import ndimage

from cai_ray.detector.metrics import (
    auroc,
    average_precision,
    evaluate,
    image_scores,
    pro_curve,
    pro_score,
)


def _auroc_by_pairs(scores, labels):
    """Mann-Whitney: the chance a positive outscores a negative, ties counting half."""
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


def _ap_by_thresholds(scores, labels):
    total, previous_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        predicted = scores >= t
        recall = (predicted & labels).sum() / labels.sum()
        precision = (predicted & labels).sum() / predicted.sum()
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def _pro_by_thresholds(maps, masks, max_fpr=0.3):
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fpr = (above & normal).sum() / normal.sum()
        pro = np.mean([above[i][region].mean() for i, region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def test_hand_worked_auroc_and_ap():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx(5 / 6)
    assert auroc(-scores, labels) == pytest.approx(0.25)
    flat = np.zeros(10)
    ten = np.array([1, 1, 1] + [0] * 7)
    assert auroc(flat, ten) == 0.5 and average_precision(flat, ten) == pytest.approx(0.3)


def test_auroc_and_ap_match_their_definitions_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 20, 400) / 20  # many ties
        labels = rng.random(400) < 0.2 + 0.3 * scores
        assert auroc(scores, labels) == pytest.approx(_auroc_by_pairs(scores, labels))
        assert average_precision(scores, labels) == pytest.approx(_ap_by_thresholds(scores, labels))


def test_auroc_and_ap_are_sklearns_on_maps_with_ties():
    """The conventions the docstrings promise, against scikit-learn itself."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(7)
    for levels in (3, 16, 1000):
        masks = rng.random((4, 32, 32)) < 0.1
        maps = np.round(rng.random(masks.shape) * 0.8 + 0.3 * masks, 6) * levels // 1 / levels
        assert np.unique(maps).size <= levels + 2  # ties, many of them for few levels
        assert auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
        assert average_precision(maps, masks) == pytest.approx(
            average_precision_score(masks.ravel(), maps.ravel())
        )


def test_pro_of_two_regions_worked_by_hand():
    """A 10-pixel and a 2-pixel region weigh alike, and the area up to FPR 0.3 is divided by
    0.3, not by the last FPR reached below it (0.25 here)."""
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0, :] = True  # region A: 10 pixels
    masks[0, 9, :2] = True  # region B: 2 pixels; 88 normal pixels
    maps = np.zeros((1, 10, 10))
    maps[0, 0, :] = 0.8
    maps[0, 9, :2] = 0.6
    normal = np.flatnonzero(~masks[0].ravel())
    maps[0].flat[normal[:22]] = 0.7  # FPR 0.25 above 0.6
    maps[0].flat[normal[22:44]] = 0.5  # FPR 0.5 above 0.5
    # (0,0) -> (0,0.5) at 0.8 [A in] -> (0.25,0.5) at 0.7 -> (0.25,1) at 0.6 [B in] -> (0.5,1)
    # area to 0.3: 0.25 * 0.5 + 0.05 * 1 = 0.175
    assert pro_score(maps, masks) == pytest.approx(0.175 / 0.3)
    fpr, pro = pro_curve(maps, masks)
    assert fpr[:4] == pytest.approx([0, 0, 0.25, 0.25])
    assert pro[:4] == pytest.approx([0, 0.5, 0.5, 1.0])


def test_pro_matches_a_per_threshold_computation():
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 24, 24), bool)
    masks[0, 2:6, 2:9] = True
    masks[0, 15:20, 15:17] = True  # two regions in one image
    masks[1, 8:9, 3:4] = True  # a one-pixel region weighs as much as a large one
    masks[1, 9, 4] = True  # touches the previous diagonally: 8-connected, one region
    maps = np.round(rng.random(masks.shape) + 0.6 * masks, 2)
    for max_fpr in (0.3, 0.05, 1.0):
        assert pro_score(maps, masks, max_fpr) == pytest.approx(
            _pro_by_thresholds(maps, masks, max_fpr)
        )
    fpr, pro = pro_curve(maps, masks)
    assert fpr[0] == pro[0] == 0 and fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)


def test_pro_known_values_and_normalisation_by_the_limit_not_the_last_fpr():
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0] = True  # one region of 10 pixels, 90 normal pixels
    perfect = masks.astype(float)
    assert pro_score(perfect, masks) == pytest.approx(1.0)
    maps = np.where(masks, 0.9, 0.0)
    maps[0, 5, 1:10] = 0.95  # 9 normal pixels (FPR 0.1) above the whole region
    # curve (0,0) (0.1,0) (0.1,1) (1,1): area to 0.3 is 0.2, over 0.3
    assert pro_score(maps, masks) == pytest.approx(0.2 / 0.3)
    noise = np.random.default_rng(2).random((4, 64, 64))
    random_masks = np.zeros_like(noise, bool)
    random_masks[:, 10:40, 10:40] = True
    assert pro_score(noise, random_masks) == pytest.approx(0.15, abs=0.01)  # PRO ~ FPR


def test_image_scores_smooth_away_single_pixels():
    maps = np.zeros((2, 32, 32))
    maps[0, 16, 16] = 1.0  # one hot pixel
    maps[1, 10:20, 10:20] = 0.5  # a real blob, weaker per pixel
    scores = image_scores(maps)
    assert scores[1] > scores[0]
    assert maps[0].max() > maps[1].max()


def test_evaluate_and_bad_input():
    masks = np.zeros((4, 16, 16), bool)
    masks[:2, 4:8, 4:8] = True
    maps = masks * 1.0 + 0.01 * np.random.default_rng(3).random(masks.shape)
    result = evaluate(maps, masks)
    assert result == pytest.approx(
        {"pixel_auroc": 1.0, "pixel_ap": 1.0, "pro": 1.0, "image_auroc": 1.0}
    )
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="scores for"):
        auroc(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="anomalous region"):
        pro_score(np.ones((1, 4, 4)), np.zeros((1, 4, 4)))


def test_images_of_different_sizes_are_scored_at_their_own_size():
    """A test set of unequal images (stitched from tiles): pixel metrics are sklearn's over all
    their pixels, PRO the per-threshold definition over all their regions, one image score per
    image; an equal-sized set gives the same numbers as a list as one array does."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    shapes = [(24, 40), (31, 17), (24, 40)]
    masks = [rng.random(shape) < 0.08 for shape in shapes]
    masks[1][:] = False  # a normal image
    maps = [np.round(rng.random(m.shape) + 0.5 * m, 2) for m in masks]
    pixels = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([m.ravel() for m in masks])
    assert auroc(maps, masks) == pytest.approx(roc_auc_score(truth, pixels))
    assert average_precision(maps, masks) == pytest.approx(average_precision_score(truth, pixels))
    # PRO by its definition: one row of all pixels, regions labelled image by image
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    points = [(0.0, 0.0)]
    for t in np.unique(pixels)[::-1]:
        fpr = ((pixels >= t) & ~truth).sum() / (~truth).sum()
        points.append((fpr, np.mean([(maps[i][r] >= t).mean() for i, r in regions])))
    xs, ys = np.array(points).T
    inside = xs <= 0.3
    end = np.searchsorted(xs, 0.3, side="right")
    xs_cut = np.r_[xs[inside], 0.3]
    ys_cut = np.r_[ys[inside], np.interp(0.3, xs[end - 1 : end + 1], ys[end - 1 : end + 1])]
    assert pro_score(maps, masks) == pytest.approx(np.trapezoid(ys_cut, xs_cut) / 0.3)
    assert evaluate(maps, masks)["image_auroc"] == auroc(image_scores(maps), [True, False, True])
    same = [maps[0][:24, :17], maps[1][:24, :17]], [masks[0][:24, :17], masks[1][:24, :17]]
    assert evaluate(*same) == evaluate(np.stack(same[0]), np.stack(same[1]))
    with pytest.raises(ValueError, match="must be one"):
        pro_curve([maps[0]], [masks[1]])
