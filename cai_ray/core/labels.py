"""Label masks: where a pseudo-anomalous image differs visibly from its normal target.

Three rules (the job's default, :class:`~cai_ray.core.cai.CAIParams`'s ``label_rule``, is
``pattern``):

* ``published`` (the paper's): grey-level absolute difference > 7, then a 7x7 median filter. Poisson
  blending spreads a smooth intensity shift around the pattern, and this rule marks all of it, so
  thin patterns (cracks) get masks several times larger than the defect.
* ``pattern``: the pattern's regions where the blend visibly changed them: the same difference
  threshold within the injected pattern's mask dilated by a few pixels, then closed and
  hole-filled and cut back to that mask. A stain whose change falls under the threshold in
  scattered pixels is one solid region, not a spray with holes; a one-pixel crack stays as thin
  as its dilated mask; a hole the pattern itself has stays a hole. No median filter: it would
  erase one-pixel-wide cracks.
* ``connected``: the ``pattern`` label grown by the visible change 8-connected to it: the
  Poisson halo the pattern caused counts, however far it reaches, a change elsewhere does not.
  Closed and hole-filled the same way, except in the pattern's own holes.

Under ``pattern`` and ``connected``, a label has no holes that the (dilated) pattern does not
have. ``regions=False`` gives these two rules' raw pixels instead (no closing, no hole
filling): the labels before regions, kept to measure what regions are worth.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes

LabelRule = Literal["published", "pattern", "connected"]


def grey_difference(result: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Absolute difference of the grey levels of two uint8 images, (M, N) uint8."""
    if result.shape != target.shape:
        raise ValueError(f"result {result.shape} and target {target.shape} differ in shape")
    if result.ndim == 3:
        result = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)
        target = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
    return cv2.absdiff(result, target)


def binary_median(mask: np.ndarray, size: int) -> np.ndarray:
    """``cv2.medianBlur(mask, size)`` of a {0, 255} uint8 mask, pixel for pixel (replicated
    border included), faster (docs/BENCHMARKS.md, "The injection hot path"): on two values the
    median is 255 exactly where more than half of the ``size x size`` window is 255, so a box
    count replaces the sort."""
    if size <= 1:
        return mask
    ones = (mask > 0).astype(np.uint8)
    count = cv2.boxFilter(
        ones, cv2.CV_16U, (size, size), normalize=False, borderType=cv2.BORDER_REPLICATE
    )
    return np.where(count > (size * size) // 2, 255, 0).astype(np.uint8)


def label_mask(
    result: np.ndarray,
    target: np.ndarray,
    *,
    rule: LabelRule,
    pattern_mask: np.ndarray | None = None,
    threshold: int = 7,
    median_size: int = 7,
    pattern_dilation: int = 5,
    regions: bool = True,
) -> np.ndarray:
    """Binary label mask, (M, N) uint8 with values {0, 255}.

    Parameters
    ----------
    result, target : (M, N[, 3]) uint8 ndarray
    rule : {"published", "pattern", "connected"}
        No default here: the settings hold the one default (``CAIParams.label_rule``).
    pattern_mask : (M, N) bool ndarray
        The injected pattern's own mask in target coordinates; required by the ``pattern`` and
        ``connected`` rules.
    threshold : int
        Grey-level difference a pixel must exceed.
    median_size : int
        Odd median filter size of the published rule (1 disables it).
    pattern_dilation : int
        Square kernel size by which the pattern and connected rules widen the pattern mask
        (a visible change this close to the pattern touches it), and by which they close the
        change (a gap this narrow inside a region is part of it).
    regions : bool
        Whether the pattern and connected rules close and hole-fill the change (False: the
        changed pixels themselves, a spray where the change is faint).
    """
    visible = (grey_difference(result, target) > threshold).astype(np.uint8) * 255
    if rule == "published":
        return binary_median(visible, median_size)
    if rule not in ("pattern", "connected"):
        raise ValueError(
            f"unknown label rule {rule!r}; expected 'published', 'pattern' or 'connected'"
        )
    if pattern_mask is None:
        raise ValueError(f"the {rule!r} label rule needs the pattern mask")
    kernel = np.ones((pattern_dilation, pattern_dilation), np.uint8)
    near_pattern = cv2.dilate(pattern_mask.astype(np.uint8), kernel) > 0
    if rule == "pattern":
        changed = visible.astype(bool) & near_pattern
        return _as_label(_solid(changed, kernel) & near_pattern if regions else changed)
    count, labelled = cv2.connectedComponents(visible, connectivity=8)
    touching = np.unique(labelled[near_pattern & (visible > 0)])
    grown = np.isin(labelled, touching[touching > 0])
    if not regions:
        return _as_label(grown)
    pattern_holes = binary_fill_holes(near_pattern) & ~near_pattern
    return _as_label(_solid(grown, kernel) & ~(pattern_holes & ~grown))


def _solid(changed: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``changed`` (bool) as regions: closed by ``kernel`` (gaps narrower than it bridged),
    then every hole filled; the caller cuts it back to where a label may lie."""
    closed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    return binary_fill_holes(closed)


def _as_label(region: np.ndarray) -> np.ndarray:
    return np.where(region, 255, 0).astype(np.uint8)


CONTRAST_RING = 5
"""Width in pixels of the ring around a label over which :func:`visibility` measures the
target's own grey-level spread."""


def visibility(
    result: np.ndarray,
    target: np.ndarray,
    placed: np.ndarray,
    label: np.ndarray,
    *,
    threshold: int,
    surface: np.ndarray | None = None,
) -> tuple[float, float]:
    """How visible an injection is: (changed share, contrast).

    The changed share is the share of the placed pattern's pixels (``placed``, bool) whose
    grey difference exceeds ``threshold``: a pattern the blend flattened into its surroundings
    changes few of them. The contrast is the label's mean grey change in units of the target's
    grey-level spread (standard deviation) over a ring of :data:`CONTRAST_RING` pixels around
    the label: a change of a few grey levels stands out on a flat surface and vanishes in a
    textured one. A spread under one grey level counts as one. ``surface`` (bool): where the
    ring may lie, the foreground (padding or background next to the pattern is not the surface
    its change must stand out on); None: anywhere."""
    difference = grey_difference(result, target)
    placed_pixels = int(np.count_nonzero(placed))
    share = (
        np.count_nonzero(difference[placed] > threshold) / placed_pixels if placed_pixels else 0.0
    )
    inside = label > 0
    if not inside.any():
        return float(share), 0.0
    width = 2 * CONTRAST_RING + 1
    around = (cv2.dilate(inside.astype(np.uint8), np.ones((width, width), np.uint8)) > 0) & ~inside
    if surface is not None:
        around &= surface
    grey = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY) if target.ndim == 3 else target
    spread = max(float(grey[around].std()), 1.0) if around.any() else 1.0
    return float(share), float(difference[inside].mean()) / spread
