"""Geometry of CAI: bounding boxes, source-target ratios, scale classes and injection locations.

The published rules: source-target ratio (STR) = longest side of the pattern / longest side of the
target foreground's bounding box; STR < 0.1 is trivial (never used), [0.1, 0.3) small,
[0.3, 0.7) medium, >= 0.7 large. A pattern may make its own scale or a smaller one, never a
larger one (so it is never blown up past its class).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Scale(IntEnum):
    """Source and synthesis scale classes, ordered so that a larger class compares greater."""

    TRIVIAL = 0
    SMALL = 1
    MEDIUM = 2
    LARGE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


#: Lower STR bound of each class (the class holds [bound, next bound)).
STR_BOUNDS: dict[Scale, float] = {Scale.SMALL: 0.1, Scale.MEDIUM: 0.3, Scale.LARGE: 0.7}

#: Synthesis scale s is drawn uniformly from these ranges; the pattern is resized by s / STR.
SYNTHESIS_RANGES: dict[Scale, tuple[float, float]] = {
    Scale.LARGE: (0.7, 1.0),
    Scale.MEDIUM: (0.3, 0.7),
    Scale.SMALL: (0.1, 0.3),
}

BBox = tuple[int, int, int, int]
"""(y0, x0, y1, x1) with exclusive ends."""


def mask_bbox(mask: np.ndarray) -> BBox | None:
    """Bounding box of the non-zero pixels of a 2-D mask, or ``None`` for an empty mask."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def region_box(mask: np.ndarray) -> list[int]:
    """A sample's ``blend_box`` when it changed no pixel outside ``mask``: the mask's bounding
    box as [y0, x0, y1, x1], [0, 0, 0, 0] for an empty one (such a sample changed nothing)."""
    box = mask_bbox(mask)
    return [0, 0, 0, 0] if box is None else list(box)


def bbox_longest_side(box: BBox) -> int:
    y0, x0, y1, x1 = box
    return max(y1 - y0, x1 - x0)


def scale_classes(ratios: np.ndarray) -> np.ndarray:
    """Scale class (as ``Scale`` values) of each source-target ratio, vectorised."""
    ratios = np.asarray(ratios, dtype=np.float64)
    bounds = [STR_BOUNDS[Scale.SMALL], STR_BOUNDS[Scale.MEDIUM], STR_BOUNDS[Scale.LARGE]]
    return np.searchsorted(bounds, ratios, side="right").astype(np.int8)


def scale_of(ratio: float) -> Scale:
    return Scale(int(scale_classes(np.array([ratio]))[0]))


def quota_schedule(quotas: dict[Scale, int]) -> list[Scale]:
    """The scale of each sample index of one target, larger scales first (filled first)."""
    schedule: list[Scale] = []
    for scale in (Scale.LARGE, Scale.MEDIUM, Scale.SMALL):
        count = quotas.get(scale, 0)
        if count < 0:
            raise ValueError(f"quota for {scale.label} must be >= 0, got {count}")
        schedule.extend([scale] * count)
    return schedule


def fallback_scale(requested: Scale, pattern_classes: np.ndarray) -> Scale | None:
    """The largest scale <= ``requested`` that at least one pattern can make, or ``None``.

    A pattern of class c can make any scale <= c, so scale s is possible iff some class >= s.
    """
    if pattern_classes.size == 0:
        return None
    best = Scale(int(pattern_classes.max()))
    if best == Scale.TRIVIAL:
        return None
    return min(requested, best)


def choose_location(
    allowed: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A random top-left corner, uniform over those where a ``height x width`` box fits in the
    image and its centre falls on an ``allowed`` pixel (the target foreground, or everywhere
    without ILS): the k-th such corner in row-major order for ``k = rng.integers(count)``.
    ``None`` when there is none. Where every centre is allowed, the k-th is found without
    listing them all (listing was 5% of a CAI draw's time at 256x256)."""
    img_h, img_w = allowed.shape
    if height > img_h or width > img_w or height < 1 or width < 1:
        return None
    cy, cx = height // 2, width // 2
    centres = allowed[cy : img_h - height + cy + 1, cx : img_w - width + cx + 1]
    count = int(np.count_nonzero(centres))
    if count == 0:
        return None
    k = int(rng.integers(count))
    flat = k if count == centres.size else int(np.flatnonzero(centres)[k])
    y, x = divmod(flat, centres.shape[1])
    return y, x
