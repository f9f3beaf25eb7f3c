"""FPI, foreign patch interpolation (Tan, Hou, Batten, Kainz, "Detecting outliers with foreign
patch interpolation", MELBA 2022): NSA's predecessor. A box of the target is linearly blended
with the same box of *another* normal image, ``(1 - a) * target + a * other``, and the
interpolation factor ``a`` is the box's soft label.

Published parameters (the defaults): a box whose height and width are each drawn uniformly in
10-40% of the image's, and ``a`` uniform in [0, 1]. Where NSA moved, resized and Poisson-blended
its patches, FPI takes the patch from the same place and blends it linearly. Our masks are
binary: the soft label is binarised as NSA's is (a grey-level change above ``label_threshold``
inside the box), so a faint blend of two similar regions is no anomaly; ``a`` is kept in the
sample's provenance. The box's centre lies on the target's foreground. The other images are the
other normal images of the same output shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from cai_ray.core.labels import grey_difference
from cai_ray.core.synthesis import Donor, Patched
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.patches import PatchSynthesizer, SampleBudget, place_box


class FPIParams(SampleBudget):
    side_bounds: tuple[float, float] = Field(
        (0.1, 0.4), description="Box height and width, each a fraction of the image's."
    )
    factor_bounds: tuple[float, float] = Field(
        (0.0, 1.0), description="The interpolation factor a (the soft label), uniform in these."
    )
    label_threshold: int = Field(7, ge=0, le=254, description="Binarising change, as NSA's.")


class FPIMethod(FPIParams, MethodSettings):
    """``synthesizer: {method: fpi, ...}``; the foreign patches come from the other normal
    images of the same output shard."""

    method: Literal["fpi"] = "fpi"

    def build(self, context: BuildContext) -> FPI:
        return FPI(self)


class FPI(PatchSynthesizer):
    def __init__(self, params: FPIParams | None = None) -> None:
        self.params = params or FPIParams()
        super().__init__("fpi", self.params)

    def refuse(self, donors: Sequence[Donor]) -> str | None:
        if not donors:
            return "FPI needs another normal image in the same shard to interpolate with"
        return None

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        p = self.params
        height, width = target.shape[:2]
        other, _ = donors[int(rng.integers(len(donors)))]
        if other.shape != target.shape:
            return "the other image differs in shape from the target"
        box_h = max(1, round(rng.uniform(*p.side_bounds) * height))
        box_w = max(1, round(rng.uniform(*p.side_bounds) * width))
        corner = place_box(foreground, box_h, box_w, rng)
        if corner is None:
            return "no location fits the box on the foreground"
        y, x = corner
        factor = float(rng.uniform(*p.factor_bounds))
        box = (slice(y, y + box_h), slice(x, x + box_w))
        image = target.copy()
        mixed = (1 - factor) * target[box].astype(np.float32) + factor * other[box]
        image[box] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        inside = np.zeros((height, width), bool)
        inside[box] = True
        changed = grey_difference(image, target) > p.label_threshold
        mask = ((changed & inside) * 255).astype(np.uint8)
        info = {
            "box": [y, x, box_h, box_w],
            "factor": round(factor, 4),
            "blend_box": [y, x, y + box_h, x + box_w],
        }
        return Patched(image, mask, self.method, 1, info)
