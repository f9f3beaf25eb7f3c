"""DRAEM's simulated anomalies (Zavrtanik et al., ICCV 2021): a Perlin-noise mask filled with an
augmented texture image, blended with opacity. The label is the Perlin mask.

Published parameters (the defaults): Perlin noise with 2^a x 2^b lattice cells, a and b drawn
from {0, ..., 5}, rotated by -90..90 degrees and thresholded at 0.5; the texture (DTD in the
paper; any folder here) is resized to the image and transformed by 3 distinct operations drawn
from DRAEM's list of 10; the blend is ``(1 - beta) * texture + beta * image`` inside the mask
with beta uniform in [0, 0.8]. DRAEM also trains on unaltered images half the time: here normal
samples come from ``output.include_normal`` instead. The mask is limited to the foreground.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import cv2
import numpy as np
from pydantic import Field

from cai_ray.core.geometry import region_box
from cai_ray.core.synthesis import Donor, Patched
from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, DecodeError, load_image
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.patches import (
    PatchSynthesizer,
    SampleBudget,
    augmented,
    autocontrast,
    blend_texture,
    per_channel,
    rotate_in_place,
)


class TextureLibrary(Protocol):
    """Texture images by position, already at the targets' size and channel layout."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class PerlinParams(SampleBudget):
    """The settings :func:`perlin_region` reads, shared by DRAEM and GLASS."""

    max_perlin_exponent: int = Field(6, ge=1, description="Lattice 2^[0, this) cells per axis.")
    threshold: float = Field(0.5, ge=-1, le=1)
    max_rotation: float = Field(90, ge=0, le=180)


class DraemParams(PerlinParams):
    augmentations: int = Field(3, ge=0, le=10)
    max_beta: float = Field(0.8, ge=0, le=1)


def perlin_region(
    shape: tuple[int, int], params: PerlinParams, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int]]:
    """DRAEM's (and GLASS's) anomaly shape: Perlin noise over 2^a x 2^b lattice cells (a, b
    drawn below ``max_perlin_exponent``), rotated by up to ``max_rotation`` degrees, above
    ``threshold``; (H, W) bool and the cells."""
    cells = (
        2 ** int(rng.integers(0, params.max_perlin_exponent)),
        2 ** int(rng.integers(0, params.max_perlin_exponent)),
    )
    noise = perlin_noise(shape, cells, rng).astype(np.float32)
    angle = rng.uniform(-params.max_rotation, params.max_rotation)
    return rotate_in_place(noise, angle) > params.threshold, cells


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """2-D gradient (Perlin) noise over ``cells`` lattice cells, values in about [-1, 1]."""
    height, width = shape
    ys = np.arange(height) * cells[0] / height
    xs = np.arange(width) * cells[1] / width
    angles = rng.uniform(0, 2 * np.pi, (cells[0] + 1, cells[1] + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[(y0 + dy)[:, None], (x0 + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return np.sqrt(2) * (top * (1 - uy) + bottom * uy)


def _sharpen(image: np.ndarray, factor: float) -> np.ndarray:
    smooth = cv2.filter2D(image, -1, np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13)
    return np.clip(smooth + factor * (image.astype(np.float32) - smooth), 0, 255).astype(np.uint8)


def _hue_saturation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if image.ndim == 2:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-50, 51)) // 2) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-50, 51)), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _solarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() >= 0.5:
        return image
    threshold = rng.uniform(32, 128)
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def _posterize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bits = int(rng.integers(1, 9))
    return (image & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype(np.uint8)


AUGMENTATIONS: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = [
    lambda im, r: np.clip(255 * (im / 255) ** r.uniform(0.5, 2.0), 0, 255).astype(np.uint8),
    lambda im, r: np.clip(im * r.uniform(0.8, 1.2) + r.uniform(-30, 30), 0, 255).astype(np.uint8),
    lambda im, r: _sharpen(im, r.uniform(0, 2)),
    _hue_saturation,
    _solarize,
    _posterize,
    lambda im, r: 255 - im,
    lambda im, r: per_channel(im, autocontrast),
    lambda im, r: per_channel(im, cv2.equalizeHist),
    lambda im, r: rotate_in_place(im, r.uniform(-45, 45)),
]
"""DRAEM's texture augmenters, in its order: gamma contrast 0.5-2, multiply 0.8-1.2 and add
-30..30, sharpness 0-2, hue and saturation -50..50, solarize (p 0.5, threshold 32-128),
posterize, invert, autocontrast, equalize, rotation -45..45 degrees."""


def draw_texture(
    textures: TextureLibrary, target: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int] | str:
    """A texture drawn uniformly and its index, or why it cannot fill this target."""
    index = int(rng.integers(len(textures)))
    texture = textures[index]
    if texture.shape != target.shape:
        return f"texture {index} has shape {texture.shape}, not {target.shape}"
    return texture, index


class TextureFolder:
    """Texture images read on demand from a sorted list of paths, resized to the targets' size
    and mode; the last few decoded ones are kept."""

    def __init__(self, paths: list[str], size: int, mode: ColorMode, keep: int = 64) -> None:
        if not paths:
            raise ValueError("the texture list is empty")
        self.paths = paths
        self.size = size
        self.mode: ColorMode = mode
        self.keep = keep
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            path = self.paths[index]
            try:
                self._cache[index] = load_image(path, self.size, self.mode)
            except (OSError, DecodeError) as exc:
                raise ValueError(f"texture {path} is unreadable: {exc}") from exc
        return self._cache[index]


class DraemMethod(DraemParams, MethodSettings):
    """``synthesizer: {method: draem, textures: [...], ...}``."""

    method: Literal["draem"] = "draem"
    textures: list[str] = Field(
        min_length=1,
        description="Texture images (folders, globs, .txt lists), e.g. DTD or DAAD images.",
    )

    def for_workers(self) -> DraemMethod:
        """The texture list expanded to absolute file paths, in a fixed order (a source that
        matches no image is an error here, in the driver)."""
        found = sorted(dict.fromkeys(storage.expand_image_sources(self.textures)))
        return self.model_copy(update={"textures": [storage.absolute(p) for p in found]})

    def source_files(self) -> list[str]:
        return self.for_workers().textures

    def build(self, context: BuildContext) -> Draem:
        """Over ``textures`` as :meth:`for_workers` expanded them."""
        return Draem(TextureFolder(self.textures, context.image_size, context.mode), self)


class Draem(PatchSynthesizer):
    """Textures come from the texture library: donors are not used."""

    def __init__(self, textures: TextureLibrary, params: DraemParams | None = None) -> None:
        if not len(textures):
            raise ValueError("DRAEM needs at least one texture image (is the folder empty?)")
        self.textures = textures
        self.params = params or DraemParams()
        super().__init__("draem", self.params)

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        p = self.params
        height, width = target.shape[:2]
        drawn = draw_texture(self.textures, target, rng)
        if isinstance(drawn, str):
            return drawn
        texture, texture_index = drawn
        texture, _ = augmented(texture, AUGMENTATIONS, p.augmentations, rng)
        region, cells = perlin_region((height, width), p, rng)
        region &= foreground
        beta = rng.uniform(0, p.max_beta)
        image = blend_texture(target, texture, region, beta)
        mask = (region * 255).astype(np.uint8)
        info = {
            "texture": texture_index,
            "perlin_cells": list(cells),
            "beta": round(beta, 4),
            "blend_box": region_box(region),
        }
        return Patched(image, mask, self.method, 1, info)
