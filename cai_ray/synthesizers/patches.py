"""Pieces the baselines share: their sample budget, placing a box on the foreground, colour
jitter, rotation, per-channel operations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from cai_ray.core.geometry import choose_location
from cai_ray.core.synthesis import Donor, Failure, Patched, synthesize_each
from cai_ray.io.settings import Settings


class SampleBudget(Settings):
    """How many samples a baseline makes per target, and how hard it tries for each."""

    model_config = ConfigDict(frozen=True)
    anomalies_per_target: int = Field(10, ge=1)
    min_mask_pixels: int = Field(10, ge=1, description="Smaller label masks are redrawn.")
    max_draws: int = Field(10, ge=1, description="Draws per sample before it is given up.")

    def anomaly_count(self) -> int:
        """The job's count per target (the ``MethodSettings`` hook): the baseline's own."""
        return self.anomalies_per_target

    def label_floor(self, details: dict[str, Any]) -> int:
        """The ``MethodSettings`` hook: the baseline's own ``min_mask_pixels``."""
        return self.min_mask_pixels


class PatchSynthesizer:
    """A baseline synthesizer: :meth:`attempt` draws one sample; :meth:`synthesize` makes the
    budget's samples of a target, each redrawn until its mask is large enough."""

    def __init__(self, method: str, params: SampleBudget) -> None:
        self.method = method
        self.budget = params
        self.anomalies_per_target = params.anomalies_per_target

    def synthesize(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        *,
        seed: int,
        target_key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> list[Patched | Failure]:
        if indices is None:
            indices = range(self.anomalies_per_target)
        refused = self.refuse(donors)
        if refused is not None:
            return [Failure(refused, 0)] * len(indices)
        return synthesize_each(
            lambda rng: self.attempt(target, foreground, donors, rng),
            indices=indices,
            seed=seed,
            target_key=target_key,
            max_draws=self.budget.max_draws,
            min_mask_pixels=self.budget.min_mask_pixels,
        )

    def refuse(self, donors: Sequence[Donor]) -> str | None:
        """Why no sample can be made from these donors (``None``: they will do)."""
        return None

    def attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        donors: Sequence[Donor],
        rng: np.random.Generator,
    ) -> Patched | str:
        """One sample, or why this draw failed."""
        raise NotImplementedError


def place_box(
    foreground: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """Top-left corner of a ``height x width`` box inside the image whose centre lies on the
    foreground (the same location rule as CAI's, so every method respects the object)."""
    return choose_location(foreground, height, width, rng)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.float32)
    return cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision's ColorJitter with brightness, contrast, saturation and hue all at
    ``strength``, applied in that order: brightness and contrast factors in [1 - s, 1 + s], then
    on RGB images a saturation factor and a hue shift of up to ``s`` of the colour circle."""
    out = np.clip(image.astype(np.float32) * rng.uniform(1 - strength, 1 + strength), 0, 255)
    mean = _grey(out).mean()
    out = np.clip((out - mean) * rng.uniform(1 - strength, 1 + strength) + mean, 0, 255)
    if out.ndim == 3:
        grey = _grey(out)[..., None]
        out = np.clip((out - grey) * rng.uniform(1 - strength, 1 + strength) + grey, 0, 255)
        hsv = cv2.cvtColor(out / 255, cv2.COLOR_RGB2HSV)  # float: hue in degrees
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-strength, strength) * 360) % 360
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255
    return np.rint(out).astype(np.uint8)


def rotate_with_mask(
    image: np.ndarray, mask: np.ndarray, degrees: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``image`` and its boolean ``mask`` about the centre, growing the canvas so nothing
    is cut off; pixels outside the rotated mask are zero."""
    height, width = mask.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w = int(np.ceil(height * sin + width * cos - 1e-6))
    new_h = int(np.ceil(height * cos + width * sin - 1e-6))
    matrix[0, 2] += (new_w - width) / 2  # pixel centres: the centre is ((w - 1) / 2, ...)
    matrix[1, 2] += (new_h - height) / 2
    rotated = cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR)
    rotated_mask = cv2.warpAffine(
        mask.astype(np.uint8), matrix, (new_w, new_h), flags=cv2.INTER_NEAREST
    ).astype(bool)
    return rotated, rotated_mask


def per_channel(image: np.ndarray, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``op`` on each channel of an RGB image, or on a grey one as it is."""
    if image.ndim == 2:
        return op(image)
    return np.stack([op(image[..., c]) for c in range(image.shape[2])], axis=-1)


def autocontrast(channel: np.ndarray) -> np.ndarray:
    """A channel's range stretched to 0-255 (a flat channel is left alone)."""
    low, high = int(channel.min()), int(channel.max())
    if high == low:
        return channel
    return np.rint((channel.astype(np.float32) - low) * 255 / (high - low)).astype(np.uint8)


def rotate_in_place(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated about the centre on the same canvas: corners cut, uncovered pixels 0."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)


def blend_texture(
    target: np.ndarray, texture: np.ndarray, region: np.ndarray, beta: float
) -> np.ndarray:
    """``(1 - beta) * texture + beta * target`` inside ``region`` (bool), the target elsewhere
    (DRAEM's and GLASS's blend)."""
    keep = region[..., None] if target.ndim == 3 else region
    blended = (1 - beta) * texture.astype(np.float32) + beta * target.astype(np.float32)
    return np.where(keep, np.rint(blended), target).astype(np.uint8)


def augmented(
    image: np.ndarray,
    operations: Sequence[Callable[[np.ndarray, np.random.Generator], np.ndarray]],
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[int]]:
    """``image`` under ``count`` distinct ``operations``, drawn and applied in the drawn order
    (DRAEM's and GLASS's texture augmentation), and which they were."""
    chosen = [int(op) for op in rng.choice(len(operations), size=count, replace=False)]
    for op in chosen:
        image = operations[op](image, rng)
    return image, chosen
