"""Views: the ``size x size`` targets an input image of any shape becomes.

Inspection images are rarely small squares (a line-scan strip is 4096x256, a camera frame
1130x460, a casting photo 6000x4000). Squashing them to a square distorts every defect and
shrinks small ones to a pixel or two, so the job can instead letterbox them (keep the aspect
ratio, pad), crop them or tile them at their own resolution. Each view records where it came
from in the input (``box``) and where that lies in the target (``placed``), so a sample can be
traced back and a detector's maps stitched back into the full image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from cai_ray.core.synthesis import sample_rng

GeometryMode = Literal["resize", "letterbox", "crop", "tile"]
WHOLE_IMAGE_MODES = ("resize", "letterbox")
"""The modes that make one target of an image (the others make several, each its own key)."""
Box = tuple[int, int, int, int]
"""(y0, x0, y1, x1), ends exclusive."""


@dataclass(frozen=True)
class Geometry:
    """How an input image becomes ``size x size`` targets.

    ``resize`` (default): the whole image squashed to the square; the aspect ratio is lost.
    ``letterbox``: the whole image scaled by its longer side and centred, the rest padded black;
    the padding is never foreground, so nothing is injected there.
    ``crop``: ``crops`` windows of ``size x size`` at the image's own resolution, placed at
    random (drawn from the seed and the image's key) or one in the centre.
    ``tile``: windows of ``size x size`` at the image's own resolution covering all of it, each
    two neighbours overlapping by at least ``overlap`` pixels; each window is a target. (A
    detector trained on crops scores its test images by such tiles, with this ``overlap``.)
    In ``crop`` and ``tile`` a side shorter than ``size`` is taken whole and padded: an image is
    never enlarged.

    >>> tiles = plan_views(300, 500, 256, Geometry(mode="tile", overlap=32))
    >>> [view.box for view in tiles][:3]
    [(0, 0, 256, 256), (0, 122, 256, 378), (0, 244, 256, 500)]
    >>> [view.placed for view in plan_views(300, 500, 256, Geometry(mode="letterbox"))]
    [(51, 0, 205, 256)]
    """

    __pydantic_config__ = {"extra": "forbid"}
    mode: GeometryMode = "resize"
    crops: int = 1
    position: Literal["random", "centre"] = "random"
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        if self.overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {self.overlap}")
        if self.position == "centre" and self.crops > 1:
            raise ValueError("position 'centre' makes one crop per image; set crops: 1")

    # What each mode means to the rest of the package is asked of these members, never of
    # ``mode`` itself: a new mode is this class and :func:`plan_views`.

    @property
    def one_view_per_image(self) -> bool:
        """Whether an image makes one target (the whole of it) rather than several windows,
        each of which is then seeded, counted and skipped on its own."""
        return self.mode in WHOLE_IMAGE_MODES

    @property
    def draws_views(self) -> bool:
        """Whether :func:`plan_views` places the views at random (it needs a generator)."""
        return self.mode == "crop" and self.position == "random"

    @property
    def records_view(self) -> bool:
        """Whether a sample records its view (:meth:`View.details`): all but ``resize``, whose
        one view is the whole image, as before views existed."""
        return self.mode != "resize"

    @property
    def scored_on_target(self) -> bool:
        """Whether a detector's maps are scored on the ``size x size`` target itself, the
        ground truth resized to it (``resize``, the paper's protocol), rather than stitched
        back onto the image at its own shape."""
        return self.mode == "resize"

    def scoring(self) -> Geometry:
        """How test images are cut for a detector trained on data made with these settings:
        whole images as in training; crops become tiles (with the same overlap), so that every
        pixel of a test image is scored."""
        if self.mode == "crop":
            return Geometry(mode="tile", overlap=self.overlap)
        return self

    def check_size(self, size: int) -> None:
        """Raise ValueError where the settings cannot work at this target size."""
        if not self.one_view_per_image and self.overlap >= size:
            raise ValueError(f"tile overlap {self.overlap} must be smaller than the tile {size}")


@dataclass(frozen=True)
class View:
    """One target of an input image (``image_shape`` its height and width): ``box`` in the
    input, shown at ``placed`` in the target."""

    index: int
    box: Box
    placed: Box
    image_shape: tuple[int, int]

    def details(self, mode: GeometryMode) -> dict[str, Any]:
        """What a sample records of its view (JSON-ready)."""
        return {
            "mode": mode,
            "index": self.index,
            "box": list(self.box),
            "placed": list(self.placed),
            "image_size": list(self.image_shape),
        }


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``height x width``: area averaging when shrinking, bilinear when growing."""
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] * image.shape[1] > height * width
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` (:func:`_fit`'s interpolation)."""
    return _fit(image, size, size)


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of the fewest windows that cover ``length`` with neighbours overlapping by at
    least ``overlap``, spread evenly (the first at 0, the last flush with the end)."""
    if length <= window:
        return [0]
    count = math.ceil((length - overlap) / (window - overlap))
    count = max(count, 2)
    span, gaps = length - window, count - 1
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(count)]  # i * span / gaps, rounded


def _centred(inner: tuple[int, int], size: int) -> Box:
    height, width = inner
    y0, x0 = (size - height) // 2, (size - width) // 2
    return (y0, x0, y0 + height, x0 + width)


def letterbox_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The image's shape scaled so its longer side is ``size`` (each side at least 1)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def plan_views(
    height: int,
    width: int,
    size: int,
    geometry: Geometry,
    rng: np.random.Generator | None = None,
) -> list[View]:
    """The views of a ``height x width`` image; ``rng`` places random crops."""
    geometry.check_size(size)
    shape = (height, width)
    full = (0, 0, height, width)
    if geometry.mode == "resize":
        return [View(0, full, (0, 0, size, size), shape)]
    if geometry.mode == "letterbox":
        return [View(0, full, _centred(letterbox_shape(height, width, size), size), shape)]
    window_h, window_w = min(size, height), min(size, width)
    placed = _centred((window_h, window_w), size)
    if geometry.mode == "tile":
        corners = [
            (y, x)
            for y in window_starts(height, window_h, geometry.overlap)
            for x in window_starts(width, window_w, geometry.overlap)
        ]
    elif geometry.position == "centre":
        corners = [((height - window_h) // 2, (width - window_w) // 2)]
    elif rng is None:
        raise ValueError("random crops need a random generator")
    else:
        span_y, span_x = height - window_h + 1, width - window_w + 1
        corners = [
            (int(rng.integers(0, span_y)), int(rng.integers(0, span_x)))
            for _ in range(geometry.crops)
        ]
    return [
        View(i, (y, x, y + window_h, x + window_w), placed, shape)
        for i, (y, x) in enumerate(corners)
    ]


def crop_rng(seed: int, key: str) -> np.random.Generator:
    """The generator that places an image's random crops: a pure function of (seed, key),
    apart from every sample's own."""
    return sample_rng(seed, f"crops:{key}", 0)


def render_view(image: np.ndarray, view: View, size: int) -> np.ndarray:
    """The ``size x size`` target of ``view``: its box of the image, scaled to the placed
    rectangle, padding black around it."""
    y0, x0, y1, x1 = view.box
    py0, px0, py1, px1 = view.placed
    part = _fit(image[y0:y1, x0:x1], py1 - py0, px1 - px0)
    if (py0, px0, py1, px1) == (0, 0, size, size):
        return part
    target = np.zeros((size, size, *image.shape[2:]), image.dtype)
    target[py0:py1, px0:px1] = part
    return target


def placed_region(view: View, size: int) -> np.ndarray:
    """(size, size) bool: the target's pixels that show the image (not padding)."""
    region = np.zeros((size, size), bool)
    py0, px0, py1, px1 = view.placed
    region[py0:py1, px0:px1] = True
    return region


def stitch(maps: np.ndarray | Sequence[np.ndarray], views: Sequence[View]) -> np.ndarray:
    """One map over the whole input image from its views' (size, size[, C]) maps: each view's
    placed rectangle scaled back onto its box (bilinear), averaged where boxes overlap. Float32,
    the input's shape (with the maps' channels); pixels no view covers are 0."""
    if len(maps) != len(views) or not views:
        raise ValueError(f"{len(maps)} maps for {len(views)} views")
    total = np.zeros((*views[0].image_shape, *np.shape(maps[0])[2:]), np.float32)
    count = np.zeros_like(total)
    for score_map, view in zip(maps, views, strict=True):
        y0, x0, y1, x1 = view.box
        py0, px0, py1, px1 = view.placed
        part = np.asarray(score_map[py0:py1, px0:px1], np.float32)
        if part.shape[:2] != (y1 - y0, x1 - x0):
            size = (x1 - x0, y1 - y0)
            part = np.asarray(cv2.resize(part, size, interpolation=cv2.INTER_LINEAR), np.float32)
        total[y0:y1, x0:x1] += part
        count[y0:y1, x0:x1] += 1
    return np.divide(total, count, out=total, where=count > 0)
