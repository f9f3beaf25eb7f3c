"""Anomaly-detection metrics over anomaly maps, as the literature computes them.

* Pixel AUROC and pixel AP over all test pixels, with scikit-learn's conventions (tied scores
  form one threshold; AP is the step sum of precision over recall increments, not interpolated).
* PRO (per-region overlap, Bergmann et al., MVTec AD): for each threshold, the mean over every
  8-connected ground-truth region of the fraction of the region above it, against the false
  positive rate on normal pixels; the curve is integrated up to FPR 0.3 (the end point
  interpolated) and divided by 0.3. Some popular implementations divide by the last FPR reached
  below 0.3 instead, which inflates the score; this one does not.
* Image AUROC from the maximum of each map after Gaussian smoothing.

All take numpy arrays and return floats; no framework involved. A test set is an (N, H, W)
array, or a sequence of N (H_i, W_i) arrays when its images differ in size (scored at their own
resolution, e.g. stitched from tiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Maps = np.ndarray | Sequence[np.ndarray]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _by_threshold(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by score descending and return, at each distinct score, the cumulative sums of
    the ``weights`` columns (one row per threshold) and the scores themselves."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order]
    cumulative = np.cumsum(weights[order], axis=0)
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    return cumulative[last_of_tie], sorted_scores[last_of_tie]


def _flat(arrays: Maps, dtype: type) -> np.ndarray:
    """Every value of an array, or of a sequence of arrays of any shapes, in one 1-D array."""
    if isinstance(arrays, np.ndarray):
        return arrays.astype(dtype, copy=False).ravel()
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def _check(scores: Maps, labels: Maps) -> tuple[np.ndarray, np.ndarray]:
    scores = _flat(scores, np.float64)
    labels = _flat(labels, bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores for {labels.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    if labels.all() or not labels.any():
        raise ValueError("AUROC and AP need both positive and negative labels")
    return scores, labels


def auroc(scores: Maps, labels: Maps) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``)."""
    scores, labels = _check(scores, labels)
    counts, _ = _by_threshold(scores, np.stack([labels, ~labels], axis=1).astype(np.int64))
    tpr = np.r_[0.0, counts[:, 0] / labels.sum()]
    fpr = np.r_[0.0, counts[:, 1] / (~labels).sum()]
    return float(np.trapezoid(tpr, fpr))


def average_precision(scores: Maps, labels: Maps) -> float:
    """Average precision (``sklearn.metrics.average_precision_score``)."""
    scores, labels = _check(scores, labels)
    counts, _ = _by_threshold(scores, np.stack([labels, ~labels], axis=1).astype(np.int64))
    true_positives = counts[:, 0]
    precision = true_positives / (counts[:, 0] + counts[:, 1])
    recall = true_positives / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pro_curve(maps: Maps, masks: Maps) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct score, from the highest threshold down, starting at (0, 0).

    ``maps``: anomaly scores, (N, H, W) or N arrays of their images' shapes; ``masks``: the
    ground truth in the same shapes, nonzero = anomalous. Each pixel of a region of ``n``
    pixels adds ``1 / (n * regions)`` to PRO once the threshold falls to its score; each
    normal pixel adds ``1 / normal pixels`` to the FPR.
    """
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps for {len(masks)} masks")
    regions = []
    total = 0
    for score_map, mask in zip(maps, masks, strict=True):
        if np.shape(score_map) != np.shape(mask) or np.ndim(mask) != 2:
            raise ValueError(
                f"a map {np.shape(score_map)} and its mask {np.shape(mask)} must be one (H, W)"
            )
        labelled, count = ndimage.label(np.asarray(mask, bool), structure=EIGHT_CONNECTED)
        regions.append(np.where(labelled > 0, labelled + total, 0).ravel())
        total += count
    flat = np.concatenate(regions) if regions else np.zeros(0, np.int64)
    normal = int((flat == 0).sum())
    if total == 0 or normal == 0:
        raise ValueError("PRO needs at least one anomalous region and some normal pixels")
    sizes = np.bincount(flat, minlength=total + 1).astype(np.float64)
    pro_weight = np.where(flat > 0, 1.0 / (sizes[flat] * total), 0.0)
    fpr_weight = np.where(flat == 0, 1.0 / normal, 0.0)
    counts, _ = _by_threshold(_flat(maps, np.float64), np.stack([fpr_weight, pro_weight], axis=1))
    return np.r_[0.0, counts[:, 0]], np.r_[0.0, counts[:, 1]]


def pro_score(maps: Maps, masks: Maps, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (1.0 is perfect)."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    fpr, pro = pro_curve(maps, masks)
    fpr, pro = np.minimum(fpr, 1.0), np.minimum(pro, 1.0)  # float sums may pass 1 by an ulp
    inside = fpr <= max_fpr
    end = np.searchsorted(fpr, max_fpr, side="right")
    xs, ys = fpr[inside], pro[inside]
    if end < fpr.size and xs[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        xs = np.r_[xs, max_fpr]
        ys = np.r_[ys, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)]
    return float(np.trapezoid(ys, xs) / max_fpr)


def image_scores(maps: Maps, sigma: float = 4.0) -> np.ndarray:
    """One score per image: the maximum of its map after Gaussian smoothing (``sigma`` pixels),
    so a single hot pixel does not decide."""
    if any(np.ndim(m) != 2 for m in maps):
        raise ValueError("maps must be (N, H, W), or (H, W) arrays")
    return np.array([ndimage.gaussian_filter(np.asarray(m, np.float64), sigma).max() for m in maps])


def evaluate(maps: Maps, masks: Maps, *, sigma: float = 4.0) -> dict[str, float]:
    """Every metric of the detector benchmark for one test set."""
    anomalous_images = np.array([np.asarray(m).any() for m in masks])
    return {
        "pixel_auroc": auroc(maps, masks),
        "pixel_ap": average_precision(maps, masks),
        "pro": pro_score(maps, masks),
        "image_auroc": auroc(image_scores(maps, sigma), anomalous_images),
    }
