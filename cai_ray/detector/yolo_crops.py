"""A YOLO segmentation export cut into square crops on a grid, for a ``yolo_crops`` target: a
crop with no defect near it is a normal image, one with enough defect pixels a test anomaly
(its polygons the mask). The crops are written on first use, with a listing (``crops.json``)
that names the spec and data root they were cut from, and cut again when those change.

A frame whose label file is missing or has a bad line is a reported skip (the line named: a
polygon left out would leave a defect in a "normal" crop); nothing here crashes on one file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cai_ray.detector.target_specs import YoloCropsTarget
from cai_ray.io import storage
from cai_ray.io.annotations import Shape, read_yolo_shapes, shapes_mask, yolo_label_names
from cai_ray.io.codecs import DecodeError, decode_image
from cai_ray.io.png import encode_png
from cai_ray.io.settings import read_yaml


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
    """The frame and, per defect label, the (H, W) bool union of its polygons."""
    image = decode_image(image_path.read_bytes(), "rgb")
    height, width = image.shape[:2]
    shapes: dict[str, list[Shape]] = {name: [] for name in defects}
    for shape in read_yolo_shapes(label_path, names, height, width):
        if shape.label in shapes:
            shapes[shape.label].append(shape)
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
            for image_path in storage.image_files(root / folder.images):
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


def cut_crops(spec: YoloCropsTarget, root: Path) -> dict:
    """The listing of the crops of ``spec`` (``train``: paths; ``test``: image, defect and mask
    path; ``skipped``: frames with the reason; all relative to ``spec.crops``), cut on first
    use and kept in ``spec.crops`` with a ``crops.json`` that names the spec and data root it
    was cut from (a changed spec cuts again)."""
    out = Path(spec.crops)
    made_from = {"spec": spec.model_dump(mode="json"), "data_root": str(root.resolve())}
    index = out / "crops.json"
    listing = json.loads(index.read_text()) if index.is_file() else None
    if listing is None or listing.get("made_from") != made_from:
        for stale in _listed_files(listing, out):
            stale.unlink(missing_ok=True)
        listing = {"made_from": made_from, **_write_crops(spec, root, out)}
        storage.write_bytes_atomic(str(index), json.dumps(listing, indent=1).encode())
    return listing
