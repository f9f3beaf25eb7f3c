"""NSA, natural synthetic anomalies (Schlüter et al., ECCV 2022): rectangular patches from
*another* normal image of the same object, resized and blended in with Poisson editing (NSA:
normal guidance; NSA-mixed: mixed gradients). The label is where the blend changed the image.

Published parameters (the defaults; the texture/tile setting of the authors' code): patch sides
of 3-40% of the image side drawn as 0.03 + Gamma(2, 0.05) (skewed towards small patches), up to
4 patches per image (the first always, each further one with probability 1/2), each resized by
a factor in [0.7, 1.3]. NSA's label is logistic in the intensity change, 1/(1 + exp(-k(d - x0)))
inside the patches with x0 = 7 for tiles and textures; the binary mask here is that label above
1/2, i.e. a grey-level change above ``label_threshold`` inside a patch. Patch centres lie on the
foregrounds of both images. The donors are the other normal images of the same output shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from cai_ray.core.geometry import region_box
from cai_ray.core.labels import grey_difference
from cai_ray.core.poisson import poisson_blend
from cai_ray.core.synthesis import Donor, Patched
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.patches import PatchSynthesizer, SampleBudget, place_box


class NSAParams(SampleBudget):
    blend: Literal["normal", "mixed"] = "normal"
    width_bounds: tuple[float, float] = Field((0.03, 0.4), description="Patch side / image side.")
    gamma_shape: float = Field(2.0, gt=0)
    gamma_scale: float = Field(0.05, gt=0)
    max_patches: int = Field(4, ge=1)
    resize_bounds: tuple[float, float] = (0.7, 1.3)
    label_threshold: int = Field(7, ge=0, le=254, description="NSA's logistic midpoint x0.")


class NSAMethod(NSAParams, MethodSettings):
    """``synthesizer: {method: nsa, blend: normal | mixed, ...}``; patches come from the other
    normal images of the same output shard."""

    method: Literal["nsa"] = "nsa"

    def build(self, context: BuildContext) -> NSA:
        return NSA(self)


class NSA(PatchSynthesizer):
    def __init__(self, params: NSAParams | None = None) -> None:
        self.params = params or NSAParams()
        super().__init__("nsa" if self.params.blend == "normal" else "nsa-mixed", self.params)

    def refuse(self, donors: Sequence[Donor]) -> str | None:
        if not donors:
            return "NSA needs another normal image in the same shard to take patches from"
        return None

    def _side(self, length: int, rng: np.random.Generator) -> int:
        p = self.params
        low, high = p.width_bounds
        fraction = np.clip(low + rng.gamma(p.gamma_shape, p.gamma_scale), low, high)
        return max(2, round(fraction * length))

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        p = self.params
        height, width = target.shape[:2]
        image = target.copy()
        patches = np.zeros((height, width), bool)
        boxes = []
        for number in range(p.max_patches):
            if number > 0 and rng.integers(2) == 0:
                continue
            donor, donor_foreground = donors[int(rng.integers(len(donors)))]
            if donor.shape != target.shape:
                return "donor image differs in shape from the target"
            cut_h, cut_w = self._side(height, rng), self._side(width, rng)
            source = place_box(donor_foreground, cut_h, cut_w, rng)
            if source is None:
                return "no patch fits on the donor's foreground"
            sy, sx = source
            patch = donor[sy : sy + cut_h, sx : sx + cut_w]
            factor = rng.uniform(*p.resize_bounds)
            new_h = min(height - 2, max(2, round(cut_h * factor)))
            new_w = min(width - 2, max(2, round(cut_w * factor)))
            patch = cv2.resize(patch, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            corner = place_box(foreground, new_h, new_w, rng)
            if corner is None:
                return "no location fits the patch on the foreground"
            py, px = corner
            box = (slice(py, py + new_h), slice(px, px + new_w))
            # Like cv2.seamlessClone, which NSA calls: solved on the patch's box, its rim fixed.
            omega = np.ones((new_h, new_w), bool)
            solved = poisson_blend(patch, image[box], omega, p.blend)
            image[box] = np.clip(np.rint(solved), 0, 255).astype(np.uint8)
            patches[box] = True
            boxes.append([sy, sx, cut_h, cut_w, py, px, new_h, new_w])
        changed = grey_difference(image, target) > p.label_threshold
        mask = ((changed & patches) * 255).astype(np.uint8)
        info = {"patches": boxes, "blend_box": region_box(patches)}
        return Patched(image, mask, self.method, 1, info)
