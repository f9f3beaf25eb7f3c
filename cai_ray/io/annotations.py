"""Polygon and run-length annotations as users export them, turned into masks.

Three exports cover most labelling tools: YOLO segmentation text files (Roboflow, Ultralytics),
labelme JSON (one file per image) and COCO instance JSON (one file per split, polygons or
run-length masks). Parsing is strict: a malformed YOLO or labelme file raises
:class:`DecodeError` with the line or shape at fault, which callers (the DAAD layouts, the
detector's YOLO crops) count as a skip of its image with that reason; a COCO file, which holds a
whole split, notes a bad annotation and keeps the rest. The other way,
:func:`mask_rle` writes a mask as COCO run lengths (``cai-ray export --format coco``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cai_ray.io.codecs import DecodeError

Polygon = np.ndarray
"""(K, 2) float points (x, y) in pixels, x to the right and y down."""


@dataclass(frozen=True)
class Shape:
    """One annotated region: ``label`` names its class in the export, ``polygon`` (pixels) or
    ``mask`` (a full-image bool array, from a run-length encoding) says where it is."""

    label: str
    polygon: Polygon | None = None
    mask: np.ndarray | None = None


def parse_yolo_polygons(text: str, label_count: int | None = None) -> list[tuple[int, np.ndarray]]:
    """The (label index, polygon) pairs of a YOLO segmentation label file: one
    ``label x1 y1 x2 y2 ...`` line per polygon, coordinates normalised to [0, 1]; with
    ``label_count``, a label index must be below it (an index into the export's names)."""
    polygons = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, coordinates = int(fields[0]), np.array(fields[1:], np.float64)
        except ValueError as exc:
            raise DecodeError(f"line {number} is not 'label x y x y ...': {exc}") from exc
        if coordinates.size < 6 or coordinates.size % 2:
            raise DecodeError(f"line {number} has {coordinates.size} coordinates, not 3+ points")
        if coordinates.min() < -0.01 or coordinates.max() > 1.01:
            raise DecodeError(f"line {number} has coordinates outside [0, 1]")
        if label_count is not None and not 0 <= label < label_count:
            raise DecodeError(
                f"line {number} has label index {label}, not in the names list ({label_count})"
            )
        polygons.append((label, coordinates.reshape(-1, 2).clip(0, 1)))
    return polygons


def read_yolo_shapes(path: Path, names: Sequence[str], height: int, width: int) -> list[Shape]:
    """The shapes of a YOLO segmentation label file for an image of ``height x width``: each
    line's polygon in pixels, labelled with its name in ``names`` (the export's
    :func:`yolo_label_names`); an empty file has none.

    A file with one bad line is unusable as a whole (a :class:`DecodeError` naming the line,
    which callers count as a skip of its image): the other lines would leave that line's
    defect unlabelled, a defect inside a mask-free area. A missing file is a
    :class:`FileNotFoundError`."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not a text file ({exc})") from exc
    return [
        Shape(label=names[label], polygon=yolo_to_pixels(polygon, height, width))
        for label, polygon in parse_yolo_polygons(text, len(names))
    ]


def yolo_label_names(data_yaml: object, where: str) -> list[str]:
    """The label names of a YOLO export's parsed ``data.yaml``: its ``names`` list, or the
    ``{index: name}`` mapping Ultralytics also writes."""
    names = data_yaml.get("names") if isinstance(data_yaml, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list):
        raise DecodeError(f"{where} has no 'names' list")
    return [str(name) for name in names]


def yolo_to_pixels(polygon: np.ndarray, height: int, width: int) -> Polygon:
    """A normalised YOLO polygon in pixels (0 and 1 are the first and last pixel centres)."""
    return polygon * np.array([width - 1, height - 1], np.float64)


def _points(raw: object, where: str) -> Polygon:
    try:
        points = np.asarray(raw, np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{where}: points are not numbers in (x, y) pairs") from exc
    if not np.isfinite(points).all():
        raise DecodeError(f"{where}: points are not finite")
    return points


def _labelme_polygon(shape: dict, where: str) -> Polygon | None:
    """The region a labelme shape encloses, or None for a shape without area (point, line)."""
    kind = shape.get("shape_type") or "polygon"
    points = _points(shape.get("points"), where)
    if kind == "polygon":
        if len(points) < 3:
            raise DecodeError(f"{where}: a polygon needs 3+ points, not {len(points)}")
        return points
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if kind == "circle" and len(points) == 2:
        centre, rim = points
        radius = float(np.hypot(*(rim - centre)))
        angles = np.linspace(0, 2 * np.pi, max(16, int(radius * 2)), endpoint=False)
        return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if kind in ("point", "line", "linestrip", "points"):
        return None
    raise DecodeError(f"{where}: shape_type {kind!r} with {len(points)} points is not read")


def parse_labelme(text: str) -> tuple[dict, list[Shape], list[str]]:
    """A labelme JSON file: its header (``imagePath``, ``imageHeight``, ``imageWidth``), its
    shapes with area, and a note per shape left out (points and lines enclose nothing)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("shapes"), list):
        raise DecodeError("not a labelme file (no 'shapes' list)")
    if not isinstance(raw.get("imagePath"), str) or not raw["imagePath"]:
        raise DecodeError("not a labelme file (no 'imagePath')")
    shapes, notes = [], []
    for number, shape in enumerate(raw["shapes"]):
        where = f"shape {number}"
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise DecodeError(f"{where} has no label")
        polygon = _labelme_polygon(shape, f"{where} ({shape['label']})")
        if polygon is None:
            notes.append(f"{shape.get('shape_type')} shape {shape['label']!r} has no area")
        else:
            shapes.append(Shape(label=shape["label"], polygon=polygon))
    header = {key: raw.get(key) for key in ("imagePath", "imageHeight", "imageWidth")}
    return header, shapes, notes


def rle_counts_from_string(text: str) -> list[int]:
    """COCO's compressed run lengths: 6-bit characters from '0', 5 bits of value each, a
    continuation bit, sign extension, and counts after the second stored as differences."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise DecodeError("compressed RLE ends inside a number")
            char = ord(text[position]) - 48
            if not 0 <= char < 64:
                raise DecodeError(f"compressed RLE has a bad character {text[position]!r}")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_counts_to_string(counts: list[int]) -> str:
    """The inverse of :func:`rle_counts_from_string`: COCO's compressed run lengths, as
    pycocotools writes them (``counts`` as str)."""
    chars = []
    for number, count in enumerate(counts):
        value = count - counts[number - 2] if number > 2 else count
        more = True
        while more:
            char = value & 0x1F
            value >>= 5  # arithmetic: a negative difference ends in its sign bits
            more = value != -1 if char & 0x10 else value != 0
            chars.append(chr((char | 0x20 if more else char) + 48))
    return "".join(chars)


def mask_rle(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as a COCO run-length segmentation, ``{"size": [h, w], "counts":
    str}``: runs column by column, the first one background (zero long where the first pixel
    is set), compressed as pycocotools' ``encode`` does."""
    flat = np.asarray(mask, bool).T.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_counts_to_string(runs)}


def mask_box(mask: np.ndarray) -> list[int]:
    """COCO's ``bbox`` of a non-empty mask: ``[x, y, width, height]`` in whole pixels."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(columns[0]), int(rows[0])
    return [x, y, int(columns[-1]) - x + 1, int(rows[-1]) - y + 1]


def rle_mask(segmentation: dict, height: int, width: int) -> np.ndarray:
    """A COCO run-length mask (``{"size": [h, w], "counts": ...}``; runs alternate background
    and foreground, column by column) as an (H, W) bool array."""
    size = segmentation.get("size")
    if list(size or []) != [height, width]:
        raise DecodeError(f"RLE size {size} is not the image's {[height, width]}")
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        runs = rle_counts_from_string(counts)
    elif isinstance(counts, list) and all(isinstance(c, int) for c in counts):
        runs = counts
    else:
        raise DecodeError("RLE counts are neither a string nor a list of integers")
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise DecodeError(f"RLE runs cover {sum(runs)} pixels, not {height * width}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()


@dataclass(frozen=True)
class CocoAnnotations:
    """A COCO instances file: images by id (``file_name``, ``height``, ``width``), each image's
    shapes (labelled with their category's name), the category names, and a note per
    annotation that could not be read."""

    images: dict[int, dict]
    shapes: dict[int, list[Shape]]
    categories: set[str]
    notes: list[str]


def parse_coco(text: str) -> CocoAnnotations:
    """Parse a COCO instances file; one bad annotation is a note and never loses the rest."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON ({exc})") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DecodeError("not a COCO file (needs 'images', 'annotations', 'categories' lists)")
    try:
        names = {int(c["id"]): str(c["name"]) for c in raw["categories"]}
        images = {int(i["id"]): i for i in raw["images"]}
        for image in images.values():
            image["height"], image["width"] = int(image["height"]), int(image["width"])
            image["file_name"] = str(image["file_name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"a category or image entry lacks id, name or size ({exc})") from exc
    shapes: dict[int, list[Shape]] = {}
    notes: list[str] = []
    for number, annotation in enumerate(raw["annotations"]):
        where = f"annotation {annotation.get('id', number)}"
        try:
            image = images[int(annotation["image_id"])]
            label = names[int(annotation["category_id"])]
            made = _coco_shapes(annotation.get("segmentation"), label, image, where)
        except (KeyError, TypeError, ValueError) as exc:
            notes.append(f"{where}: unknown image or category, or a bad field ({exc})")
            continue
        except DecodeError as exc:
            notes.append(str(exc))
            continue
        shapes.setdefault(int(annotation["image_id"]), []).extend(made)
    return CocoAnnotations(images, shapes, set(names.values()), notes)


def _coco_shapes(segmentation: object, label: str, image: dict, where: str) -> list[Shape]:
    if isinstance(segmentation, dict):
        try:
            mask = rle_mask(segmentation, image["height"], image["width"])
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from exc
        return [Shape(label=label, mask=mask)]
    if not isinstance(segmentation, list) or not segmentation:
        raise DecodeError(f"{where}: no segmentation (a box alone is not a mask)")
    shapes = []
    for flat in segmentation:
        points = _points(flat, where)
        if len(points) < 3:
            raise DecodeError(f"{where}: a polygon needs 3+ points, not {len(points)}")
        shapes.append(Shape(label=label, polygon=points))
    return shapes


def shapes_mask(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    """The union of shapes at ``height x width``: polygons filled (vertices rounded to pixel
    centres) and run-length masks or'ed in. (H, W) bool."""
    mask = np.zeros((height, width), np.uint8)
    polygons = [np.rint(s.polygon).astype(np.int32) for s in shapes if s.polygon is not None]
    for polygon in polygons:
        cv2.fillPoly(mask, [polygon], 1)
    filled = mask.astype(bool)
    for shape in shapes:
        if shape.mask is not None:
            filled |= shape.mask
    return filled
