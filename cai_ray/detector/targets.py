"""A target dataset for the detector benchmark: normal training images, and test images with
their ground-truth masks (normal test images have none), from an MVTec AD category, folders, or
crops of a YOLO polygon export (a texture with defects lying on it and no defect-free images).

Bad files never crash the loader: a test image whose mask is missing, unreadable, empty or of
another size is skipped and counted with the reason, like the DAAD builders do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cai_ray.core.views import Geometry, View, plan_views, render_view, stitch
from cai_ray.io import storage
from cai_ray.io.annotations import (
    Shape,
    parse_yolo_polygons,
    shapes_mask,
    yolo_label_names,
    yolo_to_pixels,
)
from cai_ray.io.codecs import (
    ColorMode,
    DecodeError,
    decode_image,
    decode_mask,
    load_views,
    resize,
    resize_mask,
)
from cai_ray.io.layout import JOB_FILE, read_json
from cai_ray.io.png import encode_png
from cai_ray.io.settings import read_yaml, validate_settings


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnomalousFolder(_Spec):
    defect: str = Field(description="Defect type name, reported per image.")
    images: str = Field(description="Folder of defective images, relative to the data root.")
    image_glob: str = "*"
    masks: str | None = Field(None, description="Folder of masks; defaults to the image folder.")
    mask_name: str = Field("{stem}.png", description="Mask file name from the image's {stem}.")


class FolderTarget(_Spec):
    layout: Literal["folder"]
    name: str
    normal: str = Field(description="Folder of defect-free images, relative to the data root.")
    normal_glob: str = "*"
    holdout_every: int | None = Field(
        None,
        ge=2,
        description="Hold out every k-th normal image (sorted order) as a normal test image.",
    )
    test_normal: str | None = Field(None, description="A separate folder of normal test images.")
    anomalous: list[AnomalousFolder] = Field(min_length=1)


class MvtecTarget(_Spec):
    layout: Literal["mvtec"]
    name: str
    root: str = Field(description="One MVTec AD category folder, relative to the data root.")


class YoloFolder(_Spec):
    images: str = Field(description="Folder of images, relative to the data root.")
    labels: str = Field(description="Folder of YOLO polygon .txt files, relative to the root.")


class YoloCropsTarget(_Spec):
    """Square crops on a grid of a YOLO segmentation export's images: a crop with no defect
    near it is a normal image, a crop with enough defect pixels a test anomaly (its polygons
    the mask, its largest defect label the type). For a texture photographed with its defects,
    where no image is defect-free; train and test come from different exports (frames)."""

    layout: Literal["yolo_crops"]
    name: str
    names: str = Field(description="The export's data.yaml (its 'names' list), from the root.")
    defects: list[str] = Field(
        min_length=1,
        description="Labels that are defects; the others (e.g. 'cotton', 'conveyor belt') are "
        "the surface.",
    )
    train: list[YoloFolder] = Field(
        min_length=1, description="Exports whose defect-free crops are the training normals."
    )
    test: list[YoloFolder] = Field(
        min_length=1, description="Exports cut into the test set, defective and defect-free."
    )
    crop: int = Field(128, ge=16, description="Crop side in pixels, at full resolution.")
    stride: int | None = Field(None, ge=1, description="Grid step; default: the crop side.")
    margin: int = Field(
        8,
        ge=0,
        description="A normal crop has no defect pixel within this many pixels of it "
        "(polygons are drawn loosely).",
    )
    min_defect_fraction: float = Field(
        0.01,
        gt=0,
        le=1,
        description="A test anomaly covers at least this share of its crop; crops holding "
        "less are neither normal nor anomalous, and are counted, not used.",
    )
    crops: str = Field(
        description="Folder the crops are written to on first use (relative to the working "
        "directory, not the data root); rewritten when the spec changes."
    )

    @model_validator(mode="after")
    def _train_and_test_apart(self) -> YoloCropsTarget:
        shared = {f.images for f in self.train} & {f.images for f in self.test}
        if shared:
            raise ValueError(f"{sorted(shared)} is in both train and test: normals would leak")
        if "good" in self.defects:
            raise ValueError("'good' names the normal test crops; rename that defect label")
        return self


AnyTarget = FolderTarget | MvtecTarget | YoloCropsTarget
TargetSpec = Annotated[AnyTarget, Field(discriminator="layout")]


class _SpecFile(_Spec):
    target: TargetSpec


def load_target_spec(path: str | Path) -> AnyTarget:
    raw = {"target": read_yaml(path, "target spec")}
    return validate_settings(raw, _SpecFile, "target spec", str(path)).target


@dataclass(frozen=True)
class TestImage:
    path: Path
    mask: Path | None  # None: a normal test image
    defect: str  # "good" for normal ones


@dataclass
class TargetSplit:
    name: str
    train: list[Path]
    test: list[TestImage]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        per_defect: dict[str, int] = {}
        for item in self.test:
            per_defect[item.defect] = per_defect.get(item.defect, 0) + 1
        return {"train": len(self.train), **dict(sorted(per_defect.items()))}


def _images(folder: Path, pattern: str = "*") -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in storage.IMAGE_EXTENSIONS)


def _with_masks(
    images: list[Path], mask_for: dict[Path, Path], defect: str, split: TargetSplit
) -> None:
    for image in images:
        mask = mask_for[image]
        if not mask.is_file():
            split.skipped.append({"path": str(image), "reason": f"no mask file {mask.name}"})
            continue
        split.test.append(TestImage(image, mask, defect))


def load_target_split(spec: AnyTarget, data_root: str | Path) -> TargetSplit:
    """The file lists of a target dataset (nothing decoded yet; YOLO crops are cut and written
    on first use)."""
    root = Path(data_root)
    if isinstance(spec, YoloCropsTarget):
        return _crops_split(spec, root)
    if isinstance(spec, MvtecTarget):
        category = root / spec.root
        split = TargetSplit(spec.name, _images(category / "train" / "good"), [])
        for defect_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir()):
            images = _images(defect_dir)
            if defect_dir.name == "good":
                split.test += [TestImage(p, None, "good") for p in images]
                continue
            truth = category / "ground_truth" / defect_dir.name
            _with_masks(
                images, {p: truth / f"{p.stem}_mask.png" for p in images}, defect_dir.name, split
            )
        return split
    normal = _images(root / spec.normal, spec.normal_glob)
    every = spec.holdout_every
    held = [p for i, p in enumerate(normal) if every and i % every == every - 1]
    split = TargetSplit(spec.name, [p for p in normal if p not in set(held)], [])
    split.test += [TestImage(p, None, "good") for p in held]
    if spec.test_normal:
        split.test += [TestImage(p, None, "good") for p in _images(root / spec.test_normal)]
    for folder in spec.anomalous:
        images = _images(root / folder.images, folder.image_glob)
        mask_dir = root / (folder.masks or folder.images)
        mask_for = {p: mask_dir / folder.mask_name.format(stem=p.stem) for p in images}
        _with_masks(images, mask_for, folder.defect, split)
    if not split.train:
        raise ValueError(f"target {spec.name!r}: no normal training images in {root / spec.normal}")
    return split


@dataclass(frozen=True)
class GridCrop:
    y: int
    x: int
    defect: str | None  # None: a normal crop


def _grid(length: int, crop: int, stride: int) -> list[int]:
    """Crop origins along one side: every ``stride``, the last one flush with the edge."""
    starts = list(range(0, length - crop + 1, stride))
    if starts and starts[-1] != length - crop:
        starts.append(length - crop)
    return starts


def grid_crops(
    defect_masks: dict[str, np.ndarray],
    shape: tuple[int, int],
    *,
    crop: int,
    stride: int,
    margin: int,
    min_defect_fraction: float,
) -> tuple[list[GridCrop], int]:
    """The usable crops of one image from its per-label (H, W) bool defect masks: normal ones
    (no defect pixel within ``margin``) and anomalous ones (at least ``min_defect_fraction``
    of the crop defective, named by the label with most pixels there; ties: the first label).
    Returns them with the number of crops that are neither."""
    height, width = shape
    union = np.zeros(shape, bool)
    for mask in defect_masks.values():
        union |= mask
    near = union
    if margin and union.any():
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        near = cv2.dilate(union.astype(np.uint8), kernel).astype(bool)
    crops, neither = [], 0
    for y in _grid(height, crop, stride):
        for x in _grid(width, crop, stride):
            box = np.s_[y : y + crop, x : x + crop]
            if not near[box].any():
                crops.append(GridCrop(y, x, None))
            elif union[box].sum() >= min_defect_fraction * crop * crop:
                counts = {name: int(mask[box].sum()) for name, mask in defect_masks.items()}
                crops.append(GridCrop(y, x, max(counts, key=lambda name: counts[name])))
            else:
                neither += 1
    return crops, neither


def _defect_masks(
    image_path: Path, label_path: Path, names: list[str], defects: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    image = decode_image(image_path.read_bytes(), "rgb")
    height, width = image.shape[:2]
    shapes: dict[str, list[Shape]] = {name: [] for name in defects}
    for label, polygon in parse_yolo_polygons(label_path.read_text()):
        if not 0 <= label < len(names):
            raise DecodeError(f"label index {label} is not in the names list ({len(names)})")
        if names[label] in shapes:
            pixels = yolo_to_pixels(polygon, height, width)
            shapes[names[label]].append(Shape(label=names[label], polygon=pixels))
    return image, {name: shapes_mask(found, height, width) for name, found in shapes.items()}


def _write_crops(spec: YoloCropsTarget, root: Path, out: Path) -> dict:
    """Cut every export of the spec into crops under ``out``; returns the listing (relative
    paths) that ``crops.json`` keeps."""
    names = yolo_label_names(read_yaml(root / spec.names, "label names"), str(root / spec.names))
    unknown = sorted(set(spec.defects) - set(names))
    if unknown:
        raise ValueError(f"target {spec.name!r}: defects {unknown} are not labels ({names})")
    listing: dict = {"train": [], "test": [], "neither": 0, "skipped": []}
    for part, folders in (("train", spec.train), ("test", spec.test)):
        for folder in folders:
            for image_path in _images(root / folder.images):
                label_path = root / folder.labels / f"{image_path.stem}.txt"
                if not label_path.is_file():
                    reason = f"no label file {label_path.name}"
                    listing["skipped"].append({"path": str(image_path), "reason": reason})
                    continue
                try:
                    image, masks = _defect_masks(image_path, label_path, names, spec.defects)
                except (OSError, DecodeError) as exc:
                    reason = f"unreadable: {exc}"
                    listing["skipped"].append({"path": str(image_path), "reason": reason})
                    continue
                crops, neither = grid_crops(
                    masks,
                    image.shape[:2],
                    crop=spec.crop,
                    stride=spec.stride or spec.crop,
                    margin=spec.margin,
                    min_defect_fraction=spec.min_defect_fraction,
                )
                listing["neither"] += neither
                for item in crops:
                    if part == "train" and item.defect is not None:
                        continue
                    box = np.s_[item.y : item.y + spec.crop, item.x : item.x + spec.crop]
                    stem = f"{image_path.stem}_y{item.y:04d}_x{item.x:04d}.png"
                    kind = "good" if item.defect is None else item.defect
                    folder_name = "train" if part == "train" else f"test/{kind}"
                    relative = f"{folder_name}/{stem}"
                    storage.write_bytes_atomic(str(out / relative), encode_png(image[box]))
                    mask_file = None
                    if item.defect is not None:
                        union = np.any([m[box] for m in masks.values()], axis=0)
                        mask_file = f"test/{kind}_masks/{stem}"
                        mask_png = encode_png(union.astype(np.uint8) * 255)
                        storage.write_bytes_atomic(str(out / mask_file), mask_png)
                    entry = {"image": relative, "defect": kind, "mask": mask_file}
                    listing[part].append(relative if part == "train" else entry)
    return listing


def _listed_files(listing: dict | None, out: Path) -> list[Path]:
    if listing is None:
        return []
    tests = [e[key] for e in listing["test"] for key in ("image", "mask") if e[key] is not None]
    return [out / p for p in listing["train"] + tests]


def _crops_split(spec: YoloCropsTarget, root: Path) -> TargetSplit:
    """The crops' split, cut on first use and kept in ``spec.crops`` with a ``crops.json`` that
    names the spec and data root it was cut from (a changed spec cuts again)."""
    out = Path(spec.crops)
    made_from = {"spec": spec.model_dump(mode="json"), "data_root": str(root.resolve())}
    index = out / "crops.json"
    listing = json.loads(index.read_text()) if index.is_file() else None
    if listing is None or listing.get("made_from") != made_from:
        for stale in _listed_files(listing, out):
            stale.unlink(missing_ok=True)
        listing = {"made_from": made_from, **_write_crops(spec, root, out)}
        storage.write_bytes_atomic(str(index), json.dumps(listing, indent=1).encode())
    split = TargetSplit(spec.name, [out / p for p in listing["train"]], [])
    for entry in listing["test"]:
        mask = None if entry["mask"] is None else out / entry["mask"]
        split.test.append(TestImage(out / entry["image"], mask, entry["defect"]))
    split.skipped += listing["skipped"]
    if not split.train:
        raise ValueError(f"target {spec.name!r}: no defect-free crop among the training images")
    return split


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


def scoring_geometry(geometry: Geometry) -> Geometry:
    """How test images are cut for a detector trained on data made with ``geometry``: whole
    images resized or letterboxed as in training; crops become tiles (with the same overlap)
    so that every pixel of a test image is scored."""
    if geometry.mode == "crop":
        return Geometry(mode="tile", overlap=geometry.overlap)
    return geometry


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
    geometry = scoring_geometry(geometry or Geometry())
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
        if geometry.mode == "resize":  # scored at size x size (the cut): nothing to stitch
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
