"""GLASS's image-level local anomaly synthesis, LAS (Chen, Luo, Lv, Zhang, "A unified anomaly
synthesis strategy with gradient ascent for industrial anomaly detection and localization",
ECCV 2024). The weight-free half of GLASS: its feature-level half (gradient ascent in a
network's feature space) belongs to its detector, not to a data generator.

Published parameters (the defaults, after the paper and its MIT-licensed reference code):

* mask: two thresholded Perlin noises, each with 2^a x 2^b lattice cells (a, b drawn from
  {0, ..., 5}), rotated by -90..90 degrees and thresholded at 0.5; with probability 1/3 each,
  their union, their intersection, or the first alone; limited to the foreground (GLASS's
  foreground masks);
* texture: an image of the texture folder (DTD in the paper; any folder here, or with none the
  target itself) at the target's size, transformed by 3 distinct operations of GLASS's 9:
  contrast 0.8-1.2, brightness 0.8-1.2, saturation 0.8-1.2 with hue -0.2..0.2, horizontal flip,
  vertical flip, greyscale, autocontrast, equalize, rotation -45..45 degrees;
* blend inside the mask: ``(1 - beta) * texture + beta * image`` with beta drawn from
  N(0.5, 0.1) and clipped to [0.2, 0.8] (DRAEM draws it uniformly in [0, 0.8]). The label is the
  mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from cai_ray.core.geometry import region_box
from cai_ray.core.synthesis import Donor, Patched
from cai_ray.io import storage
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.draem import (
    PerlinParams,
    TextureFolder,
    TextureLibrary,
    draw_texture,
    perlin_region,
)
from cai_ray.synthesizers.patches import (
    PatchSynthesizer,
    augmented,
    autocontrast,
    blend_texture,
    per_channel,
    rotate_in_place,
)


class GlassParams(PerlinParams):
    augmentations: int = Field(3, ge=0, le=9)
    beta_mean: float = Field(0.5, ge=0, le=1)
    beta_std: float = Field(0.1, ge=0)
    beta_bounds: tuple[float, float] = Field((0.2, 0.8), description="beta is clipped to these.")


def _scaled(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(np.rint(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mean = float(grey.mean())
    out = (image.astype(np.float32) - mean) * factor + mean
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _saturation_hue(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    saturation, hue = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2)
    if image.ndim == 2:
        return image
    hsv = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)  # hue in degrees
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    hsv[..., 0] = (hsv[..., 0] + hue * 360) % 360
    return np.clip(np.rint(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255), 0, 255).astype(np.uint8)


def _greyscale(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


AUGMENTATIONS: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = [
    lambda im, r: _contrast(im, r.uniform(0.8, 1.2)),
    lambda im, r: _scaled(im, r.uniform(0.8, 1.2)),
    _saturation_hue,
    lambda im, r: np.ascontiguousarray(im[:, ::-1]),
    lambda im, r: np.ascontiguousarray(im[::-1]),
    lambda im, r: _greyscale(im),
    lambda im, r: per_channel(im, autocontrast),
    lambda im, r: per_channel(im, cv2.equalizeHist),
    lambda im, r: rotate_in_place(im, r.uniform(-45, 45)),
]
"""GLASS's nine texture operations, in its order (see the module docstring)."""


class GlassMethod(GlassParams, MethodSettings):
    """``synthesizer: {method: glass, textures: [...]}``; without textures each target is its
    own texture."""

    method: Literal["glass"] = "glass"
    textures: list[str] = Field(
        default_factory=list,
        description="Texture images (folders, globs, .txt lists), e.g. DTD; none: the target.",
    )

    def for_workers(self) -> GlassMethod:
        """The texture list expanded to absolute file paths, in a fixed order."""
        if not self.textures:
            return self
        found = sorted(dict.fromkeys(storage.expand_image_sources(self.textures)))
        return self.model_copy(update={"textures": [storage.absolute(p) for p in found]})

    def source_files(self) -> list[str]:
        return self.for_workers().textures

    def build(self, context: BuildContext) -> Glass:
        if not self.textures:
            return Glass(None, self)
        return Glass(TextureFolder(self.textures, context.image_size, context.mode), self)


class Glass(PatchSynthesizer):
    """Textures from the library, or the target itself; donors are not used."""

    def __init__(self, textures: TextureLibrary | None, params: GlassParams | None = None) -> None:
        if textures is not None and not len(textures):
            raise ValueError("GLASS needs at least one texture image (is the folder empty?)")
        self.textures = textures
        self.params = params or GlassParams()
        super().__init__("glass", self.params)

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        p = self.params
        shape = target.shape[:2]
        first, _ = perlin_region(shape, p, rng)
        second, _ = perlin_region(shape, p, rng)
        combine = rng.random()
        if combine > 2 / 3:
            region, how = first | second, "union"
        elif combine > 1 / 3:
            region, how = first & second, "intersection"
        else:
            region, how = first, "one"
        region &= foreground
        if self.textures is None:
            texture, source = target, "target"
        else:
            drawn = draw_texture(self.textures, target, rng)
            if isinstance(drawn, str):
                return drawn
            texture, source = drawn[0], f"texture {drawn[1]}"
        texture, chosen = augmented(texture, AUGMENTATIONS, p.augmentations, rng)
        beta = float(np.clip(rng.normal(p.beta_mean, p.beta_std), *p.beta_bounds))
        image = blend_texture(target, texture, region, beta)
        mask = (region * 255).astype(np.uint8)
        info = {
            "texture": source,
            "masks": how,
            "augmentations": chosen,
            "beta": round(beta, 4),
            "blend_box": region_box(region),
        }
        return Patched(image, mask, self.method, 1, info)
