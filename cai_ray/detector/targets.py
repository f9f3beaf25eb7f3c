"""A target dataset's test images as the detector scores them: each decoded and cut into
targets by the geometry its training data was made with (crops become tiles, so every pixel is
scored), each target resized to the network's side, the ground truth kept per image for the
maps stitched back. The geometry and size are read from the synthesis jobs the detector was
trained on.

Bad files never crash the loader: a test image that cannot be read, or whose mask is empty or of
another size, is skipped and counted with the reason, like the DAAD builders do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cai_ray.core.views import Geometry, View, plan_views, render_view, stitch
from cai_ray.detector.target_splits import TargetSplit, TestImage
from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, DecodeError, decode_mask, load_views, resize, resize_mask
from cai_ray.io.layout import JOB_FILE, read_json


@dataclass(frozen=True)
class TestSet:
    """A target's test images as the detector scores them: each image cut into targets by the
    geometry its training data was made with (:func:`scoring_size` says how large), each target
    resized to the network's ``size x size`` as training resizes its samples, every target
    stacked in ``targets``, and each image's ground truth at the resolution its maps are
    stitched back to (``size x size`` under ``resize``, as the paper scores; the image's own
    otherwise, so PRO counts each real defect region at its true size)."""

    targets: np.ndarray  # (V, size, size[, 3]) uint8, the views of image 0, then of image 1 ...
    target_masks: np.ndarray  # (V, size, size) bool: the ground truth each target shows
    views: list[list[View]]  # per image
    masks: list[np.ndarray]  # per image, (H, W) bool
    items: list[TestImage]
    view_size: int  # the side the images were cut at, before the resize to the network's

    def _ranges(self) -> list[slice]:
        ends = np.cumsum([len(views) for views in self.views])
        return [slice(end - len(views), end) for end, views in zip(ends, self.views, strict=True)]

    def stitch(self, target_maps: np.ndarray, images: Sequence[int] | None = None) -> list:
        """Per image (all, or those listed), its targets' maps (at the network's size) scaled
        back to the side the image was cut at and stitched into one map of its mask's shape
        (float32); ``stitch(test.targets)`` gives the images back."""
        ranges = self._ranges()
        chosen = range(len(self.views)) if images is None else images
        return [stitch(self._at_view_size(target_maps[ranges[i]]), self.views[i]) for i in chosen]

    def _at_view_size(self, maps: np.ndarray) -> np.ndarray | list[np.ndarray]:
        side = self.view_size
        if maps.shape[1:3] == (side, side):
            return maps
        return [cv2.resize(m, (side, side), interpolation=cv2.INTER_LINEAR) for m in maps]

    @staticmethod
    def thumbnails(arrays: Sequence[np.ndarray], size: int) -> np.ndarray:
        """Per-image arrays (images, masks or maps) letterboxed into ``size x size`` squares
        for pictures: whole and undistorted, whatever their shapes."""
        boxed = Geometry(mode="letterbox")
        shown = []
        for array in arrays:
            height, width = array.shape[:2]
            (view,) = plan_views(height, width, size, boxed)
            shown.append(render_view(np.asarray(array), view, size))
        return np.stack(shown)


def scoring_size(geometry: Geometry, data_size: int, network_size: int) -> int:
    """The side of the targets test images are cut into, for a network taking
    ``network_size`` squares trained on data that ``geometry`` cut into ``data_size`` squares.
    Under ``crop`` and ``tile`` the training data's: tiles at the image's own resolution, each
    then resized to the network's side as its training samples were, so the detector sees test
    content at the scale it was trained at. ``resize`` and ``letterbox`` show the whole image
    whatever the size: at the network's side."""
    return network_size if geometry.one_view_per_image else data_size


def job_geometry(job: dict) -> Geometry:
    """The ``inputs.geometry`` a synthesis job (its ``job.json``) was made with (``resize``
    for a job that predates it)."""
    return Geometry(**job["config"]["inputs"].get("geometry", {}))


def job_image_size(job: dict) -> int:
    """The ``image_size`` of the targets a synthesis job (its ``job.json``) cut."""
    return int(job["config"]["image_size"])


def training_cut(data: list[str]) -> tuple[Geometry, int]:
    """The geometry and ``image_size`` the synthesis outputs in ``data`` (at least one) were
    cut by; outputs cut differently cannot be scored as one (under ``crop`` and ``tile`` their
    sizes are scales: they must agree too)."""
    jobs = [read_json(storage.join(out, JOB_FILE)) for out in data]
    geometries = {job_geometry(job) for job in jobs}
    if len(geometries) > 1:
        raise ValueError(f"the training data was cut by different geometries: {list(geometries)}")
    geometry = geometries.pop()
    sizes = sorted({job_image_size(job) for job in jobs})
    if len(sizes) > 1 and not geometry.one_view_per_image:
        raise ValueError(
            f"the training data was cut into {geometry.mode}s of different image_size {sizes}: "
            "their content is at different scales"
        )
    return geometry, sizes[0]


def load_test_set(
    split: TargetSplit,
    size: int,
    mode: ColorMode,
    geometry: Geometry | None = None,
    *,
    data_size: int | None = None,
) -> TestSet:
    """The test set of ``split`` (see :class:`TestSet`) for a network taking ``size`` squares,
    trained on data cut by ``geometry`` into ``data_size`` squares (default ``size``);
    unusable images are added to ``split.skipped`` with the reason. Each image is decoded and
    cut by :func:`~cai_ray.io.codecs.load_views`, as synthesis reads its inputs (a large JPEG
    that ``resize`` or ``letterbox`` shrinks decodes at reduced scale in both)."""
    geometry = (geometry or Geometry()).scoring()
    cut = scoring_size(geometry, data_size or size, size)
    targets, target_masks, views, masks, kept = [], [], [], [], []
    for item in split.test:
        try:
            shown = load_views(str(item.path), cut, mode, geometry)
            shape = shown[0][0].image_shape
            mask = (
                np.zeros(shape, bool) if item.mask is None else decode_mask(item.mask.read_bytes())
            )
        except (OSError, DecodeError) as exc:
            split.skipped.append({"path": str(item.path), "reason": f"unreadable: {exc}"})
            continue
        if mask.shape != shape:
            reason = f"mask {mask.shape} and image {shape} differ in size"
            split.skipped.append({"path": str(item.path), "reason": reason})
            continue
        if item.mask is not None and not mask.any():
            split.skipped.append({"path": str(item.path), "reason": "mask is empty"})
            continue
        image_views = [view for view, _, _ in shown]
        if geometry.scored_on_target:  # at size x size (the cut): nothing to stitch
            mask = resize_mask(mask, size)
            if item.mask is not None and not mask.any():
                reason = f"defect smaller than a pixel at {size}x{size}"
                split.skipped.append({"path": str(item.path), "reason": reason})
                continue
            image_views = plan_views(size, size, size, geometry)
        for view, (_, target, _) in zip(image_views, shown, strict=True):
            targets.append(resize(target, size))
            shows = render_view(mask.astype(np.uint8) * 255, view, cut) > 127
            target_masks.append(resize_mask(shows, size))
        views.append(image_views)
        masks.append(mask)
        kept.append(item)
    if not kept:
        raise ValueError(f"target {split.name!r}: no usable test images")
    return TestSet(np.stack(targets), np.stack(target_masks), views, masks, kept, cut)
