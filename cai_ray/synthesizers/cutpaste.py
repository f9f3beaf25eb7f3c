"""CutPaste (Li et al., CVPR 2021): a patch cut from the image itself, colour-jittered and pasted
elsewhere. The label is the pasted region.

Published parameters (the defaults): *normal* cuts a rectangle of 2-15% of the image area with
an aspect ratio drawn log-uniformly from [0.3, 1/0.3]; *scar* cuts a thin rectangle 2-16 px wide
and 10-25 px high, rotated by -45..45 degrees (pixel sizes are the paper's at 256x256 and scale
with the image). Both jitter brightness, contrast, saturation and hue by 0.1. Unlike the paper
the paste centre is kept on the target foreground, the location rule every method here shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from cai_ray.core.synthesis import Donor, Patched
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.patches import (
    PatchSynthesizer,
    SampleBudget,
    color_jitter,
    place_box,
    rotate_with_mask,
)


class CutPasteParams(SampleBudget):
    variant: Literal["normal", "scar"] = "normal"
    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = Field(0.3, gt=0, le=1, description="Log-uniform in [r, 1/r].")
    scar_width: tuple[float, float] = (2, 16)
    scar_height: tuple[float, float] = (10, 25)
    scar_rotation: float = Field(45, ge=0, le=180)
    jitter: float = Field(0.1, ge=0, lt=1)
    reference_size: int = Field(256, ge=1, description="Image size the scar sizes are given at.")


class CutPasteMethod(CutPasteParams, MethodSettings):
    """``synthesizer: {method: cutpaste, variant: normal | scar, ...}``."""

    method: Literal["cutpaste"] = "cutpaste"

    def build(self, context: BuildContext) -> CutPaste:
        return CutPaste(self)


class CutPaste(PatchSynthesizer):
    """Cut from the target itself: donors are not used."""

    def __init__(self, params: CutPasteParams | None = None) -> None:
        self.params = params or CutPasteParams()
        super().__init__(
            "cutpaste" if self.params.variant == "normal" else "cutpaste-scar", self.params
        )

    def _cut_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        p = self.params
        if p.variant == "normal":
            area = rng.uniform(*p.area_ratio) * height * width
            aspect = math.exp(rng.uniform(math.log(p.aspect_ratio), -math.log(p.aspect_ratio)))
            cut_w, cut_h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        else:
            unit = min(height, width) / p.reference_size
            cut_w = rng.uniform(*p.scar_width) * unit
            cut_h = rng.uniform(*p.scar_height) * unit
        return min(height, max(1, round(cut_h))), min(width, max(1, round(cut_w)))

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        p = self.params
        height, width = target.shape[:2]
        cut_h, cut_w = self._cut_size(height, width, rng)
        y0 = int(rng.integers(height - cut_h + 1))
        x0 = int(rng.integers(width - cut_w + 1))
        patch = color_jitter(target[y0 : y0 + cut_h, x0 : x0 + cut_w], p.jitter, rng)
        shape = np.ones((cut_h, cut_w), bool)
        angle = 0.0
        if p.variant == "scar":
            angle = float(rng.uniform(-p.scar_rotation, p.scar_rotation))
            patch, shape = rotate_with_mask(patch, shape, angle)
        corner = place_box(foreground, *shape.shape, rng)
        if corner is None:
            return "no location fits the patch on the foreground"
        py, px = corner
        region = (slice(py, py + shape.shape[0]), slice(px, px + shape.shape[1]))
        image = target.copy()
        image[region][shape] = patch[shape]
        mask = np.zeros((height, width), np.uint8)
        mask[region][shape] = 255
        info = {
            "cut": [y0, x0, cut_h, cut_w],
            "paste": [py, px],
            "rotation": round(angle, 3),
            "blend_box": [py, px, py + shape.shape[0], px + shape.shape[1]],
        }
        return Patched(image, mask, self.method, 1, info)
