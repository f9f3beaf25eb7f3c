"""Where the CDM paints anomalies: masks drawn from real DAAD defect masks, randomly warped
(rotation, flips, anisotropic scale, shear) so that shapes do not repeat, then scaled and placed
by CAI's own rules (source-target matching with the scale quotas, a location inside the target
foreground), and grown like CAI's Poisson region (closed and dilated by ``mask_kernel``).

Pure numpy and OpenCV; every draw of sample ``k`` comes from ``sample_rng(seed, key, k)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from cai_ray.core.cai import (
    CAIParams,
    PatternLibrary,
    PatternList,
    SourcePattern,
    check_weights,
    draw_by_quota,
    draw_pattern,
    place_pattern,
    synthesis_factor,
)
from cai_ray.core.geometry import (
    BBox,
    Scale,
    bbox_longest_side,
    mask_bbox,
    scale_classes,
    scale_of,
)
from cai_ray.core.synthesis import Failure
from cai_ray.io.settings import Settings


class AffineParams(Settings):
    """The random warp of a source mask before it is scaled and placed."""

    model_config = ConfigDict(frozen=True)
    rotation: float = Field(180.0, ge=0, le=180, description="Angle ~ U(-r, r) degrees.")
    scale_x: tuple[float, float] = Field((0.8, 1.25), description="Anisotropic stretch range.")
    shear: float = Field(0.2, ge=0, le=1, description="Shear ~ U(-s, s).")
    flip: bool = True


@dataclass(frozen=True)
class GenerationMask:
    """A region for the CDM to fill, in target coordinates, and where its shape came from."""

    mask: np.ndarray
    """(H, W) bool."""
    anomaly_class: str
    scale: str
    """The class of the placed shape's size (its longest side over the foreground's)."""
    requested_scale: str
    source_record_id: str
    source_domain: str
    center: tuple[int, int]
    attempts: int

    def details(self) -> dict[str, Any]:
        return {
            "anomaly_class": self.anomaly_class,
            "scale": self.scale,
            "requested_scale": self.requested_scale,
            "source_record_id": self.source_record_id,
            "source_domain": self.source_domain,
            "center": list(self.center),
        }


def warp_mask(mask: np.ndarray, params: AffineParams, rng: np.random.Generator) -> np.ndarray:
    """``mask`` (bool) under a random affine map, on a canvas large enough to hold all of it,
    cropped to its bounding box."""
    angle = np.deg2rad(rng.uniform(-params.rotation, params.rotation))
    stretch = rng.uniform(*params.scale_x)
    shear = rng.uniform(-params.shear, params.shear)
    flip = -1.0 if params.flip and rng.random() < 0.5 else 1.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rotation @ np.array([[stretch * flip, shear], [0.0, 1.0]])
    height, width = mask.shape
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    mapped = corners @ linear.T
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    size = np.ceil(high - low).astype(int) + 1
    matrix = np.hstack([linear, -low[:, None]])
    warped = cv2.warpAffine(
        mask.astype(np.uint8) * 255, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR
    )
    box = mask_bbox(warped > 127)
    if box is None:
        return np.zeros((1, 1), bool)
    y0, x0, y1, x1 = box
    return warped[y0:y1, x0:x1] > 127


class MaskGenerator:
    """Generation masks for one target at a time, ``params.quotas`` of them (large first);
    source masks drawn uniformly, or in proportion to per-pattern ``weights`` (a job's draw mode
    and class weights, as CAI draws them: :func:`cai_ray.core.cai.draw_weights`)."""

    def __init__(
        self,
        patterns: Sequence[SourcePattern] | PatternLibrary,
        params: CAIParams | None = None,
        affine: AffineParams | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        if not len(patterns):
            raise ValueError("the CDM's masks need at least one DAAD pattern")
        check_weights(weights, len(patterns))
        self.weights = weights
        self.patterns = patterns if isinstance(patterns, PatternLibrary) else PatternList(patterns)
        self.params = params or CAIParams()
        self.affine = affine or AffineParams()
        self._longest = np.asarray(self.patterns.longest_sides, dtype=np.float64)
        kernel = self.params.mask_kernel
        self._kernel = np.ones((kernel, kernel), np.uint8)
        self.count = self.params.quotas.total

    def draw(
        self,
        foreground: np.ndarray,
        rngs: list[np.random.Generator],
        indices: Sequence[int] | None = None,
    ) -> list[GenerationMask | Failure]:
        """One mask per sample ``indices[i]`` (None: the quota slots in order), drawn from
        ``rngs[i]`` at that sample's quota scale."""
        fg_box = mask_bbox(foreground)
        if fg_box is None:
            raise ValueError("the target foreground is empty")
        fg_longest = bbox_longest_side(fg_box)
        classes = scale_classes(self._longest / fg_longest)

        def attempt(
            scale: Scale, eligible: np.ndarray | None, rng: np.random.Generator
        ) -> dict[str, Any] | str:
            return self._attempt(foreground, fg_longest, scale, eligible, rng)

        if indices is None:
            indices = range(len(rngs))
        drawn = draw_by_quota(attempt, classes, self.params, rngs, indices)
        return [GenerationMask(**d) if isinstance(d, dict) else d for d in drawn]

    def _attempt(
        self,
        foreground: np.ndarray,
        fg_longest: int,
        scale: Scale,
        eligible: np.ndarray | None,
        rng: np.random.Generator,
    ) -> dict[str, Any] | str:
        params = self.params
        pattern = draw_pattern(self.patterns, eligible, self.weights, rng)
        if isinstance(pattern, str):
            return pattern
        y0, x0, y1, x1 = pattern.box
        shape = warp_mask(pattern.mask[y0:y1, x0:x1], self.affine, rng)
        box: BBox = (0, 0, *shape.shape)
        factor = (
            synthesis_factor(scale, fg_longest, bbox_longest_side(box), rng)
            if params.match_scale
            else 1.0
        )
        allowed = foreground if params.within_foreground else np.ones_like(foreground)
        placement = place_pattern(
            shape, box, factor, allowed, rng, shrink_to_fit=params.match_scale
        )
        if isinstance(placement, str):
            return placement
        full = np.zeros(foreground.shape, np.uint8)
        img_h, img_w = foreground.shape
        by0, bx0, by1, bx1 = placement.box
        oy, ox = placement.corner[0] - by0, placement.corner[1] - bx0
        height, width = placement.mask.shape
        py0, px0 = max(0, oy), max(0, ox)
        py1, px1 = min(img_h, oy + height), min(img_w, ox + width)
        full[py0:py1, px0:px1] = placement.mask[py0 - oy : py1 - oy, px0 - ox : px1 - ox]
        grown = cv2.dilate(cv2.morphologyEx(full, cv2.MORPH_CLOSE, self._kernel), self._kernel)
        region = (grown > 127) & foreground if params.within_foreground else grown > 127
        if int(np.count_nonzero(region)) < params.min_mask_pixels:
            return "mask below min_mask_pixels"
        actual = max(by1 - by0, bx1 - bx0) / fg_longest
        return {
            "mask": region,
            "anomaly_class": pattern.anomaly_class,
            "scale": scale_of(actual).label,
            "source_record_id": pattern.record_id,
            "source_domain": pattern.domain,
            "center": (
                placement.corner[0] + (by1 - by0) // 2,
                placement.corner[1] + (bx1 - bx0) // 2,
            ),
        }
