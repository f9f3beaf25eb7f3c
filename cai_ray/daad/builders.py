"""Builders that turn dataset layouts into DAAD shards.

Layouts:

* ``folder``: images in one folder, masks matched by name (``mask_name`` template, e.g.
  ``"{stem}.png"``) in the same or another folder, or read from MATLAB files (``mask_mat``); one
  anomaly class and domain per entry.
* ``mvtec``: the MVTec AD layout, ``test/<defect>/<n>.png`` with
  ``ground_truth/<defect>/<n>_mask.png``, and a defect-to-class mapping.
* ``yolo``, ``labelme``, ``coco``: polygon (and COCO run-length) exports of labelling tools,
  label names mapped to classes, filled at each image's size (:mod:`cai_ray.io.annotations`).

Nothing here crashes on a bad file: unreadable images or masks, empty masks, size mismatches and
images without masks are skipped and counted with a reason in the build report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cai_ray.core.duplicates import FINGERPRINT_BYTES
from cai_ray.core.geometry import mask_bbox
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.records import (
    PATTERN_IMAGE,
    PATTERN_MASK,
    DaadRecord,
    Tag,
    make_record,
    pattern_crop_files,
    safe_key_part,
)
from cai_ray.io import storage
from cai_ray.io.annotations import (
    Shape,
    parse_coco,
    parse_labelme,
    parse_yolo_polygons,
    shapes_mask,
    yolo_label_names,
    yolo_to_pixels,
)
from cai_ray.io.codecs import (
    DecodeError,
    decode_class_mask,
    decode_image,
    decode_mask,
    decode_mat_mask,
    image_size,
)
from cai_ray.io.settings import ConfigError, load_settings, read_yaml
from cai_ray.io.tar import build_tar, member_spans, sample_spans

log = logging.getLogger(__name__)

INDEX_NAME = "daad.json"
RECORDS_NAME = "records.parquet"
FORMAT_VERSION = 5
"""2: a records table with each record's byte range, for lazy reads; 3: with each record's
source path, image size and near-duplicate fingerprint (read by ``daad stats``); 4: records may
keep their pattern crop, whose byte range the table gives (``pattern_start``, ``pattern_end``;
-1 where a record has none); 5: each record's tags (``tags``, a list; its source's, from the
spec). Sampling reads 2 and newer; an older one's records have no tags."""


def _records_table(rows: list[dict]) -> bytes:
    """One row per record: what sampling needs without opening a shard (class, domain, mask
    box), where the record and its pattern crop lie (shard number, byte ranges) and what finds
    duplicates (source path, image size, fingerprint). Sampling reads about 60 bytes a record
    of it, so an actor can index millions of records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "record_id": pa.array([r["record_id"] for r in rows], pa.string()),
        "anomaly_class": pa.array([r["anomaly_class"] for r in rows], pa.string()),
        "domain": pa.array([r["domain"] for r in rows], pa.string()),
        "shard": pa.array([r["shard"] for r in rows], pa.int32()),
        "start": pa.array([r["start"] for r in rows], pa.int64()),
        "end": pa.array([r["end"] for r in rows], pa.int64()),
        "pattern_start": pa.array([r["pattern"][0] for r in rows], pa.int64()),
        "pattern_end": pa.array([r["pattern"][1] for r in rows], pa.int64()),
        "tags": pa.array([list(r["tags"]) for r in rows], pa.list_(pa.string())),
    }
    for axis, name in enumerate(("y0", "x0", "y1", "x1")):
        columns[name] = pa.array([r["bbox"][axis] for r in rows], pa.int32())
    columns["path"] = pa.array([r["path"] for r in rows], pa.string())
    columns["height"] = pa.array([r["height"] for r in rows], pa.int32())
    columns["width"] = pa.array([r["width"] for r in rows], pa.int32())
    columns["fingerprint"] = pa.array(
        [r["fingerprint"].tobytes() for r in rows], pa.binary(FINGERPRINT_BYTES)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class MatMask(BaseModel):
    """A mask inside a MATLAB file: ``field`` is a dotted path, ``value`` marks the defect."""

    model_config = ConfigDict(extra="forbid")
    field: str
    value: int


class _SourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: str = Field(description="Where the defects come from; used to exclude leakage.")
    dataset: str | None = Field(None, description="Source dataset name; defaults to the domain.")
    license: str = Field(description="License or terms tag, kept on every record.")
    regions: Literal["whole", "split"] = Field(
        "whole",
        description="'split': one record per connected defect region (8-connected), so source-"
        "target matching sees each defect at its own scale, not the box around several; "
        "'whole': one record per mask (a crack whose annotation has gaps stays one crack).",
    )
    min_region_pixels: int = Field(
        20, ge=1, description="With 'split', smaller regions (specks) are dropped and counted."
    )
    join_gap: int = Field(
        0,
        ge=0,
        multiple_of=2,
        description="With 'split', regions at most this many pixels apart (even: each reaches "
        "out half of it) are one record (a "
        "crack whose annotation has gaps stays one crack; two specks at the ends of a tile "
        "are two, not one 'large' pattern that is nearly all empty box).",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        description="Tags every record of this source carries, e.g. [foreign_object] for "
        "objects lying on a surface rather than defects of it; a job may leave tagged records "
        "out (daad.exclude_tags).",
    )


class FolderSource(_SourceBase):
    layout: Literal["folder"]
    anomaly_class: AnomalyClass | None = Field(None, description="The class of every defect.")
    mask_classes: dict[int, AnomalyClass] | None = Field(
        None,
        description="Masks hold class values instead (e.g. NEU-Seg: 1 inclusion, 2 patches, "
        "3 scratches): one record per class present in an image, its pixels of that value.",
    )
    images: str = Field(description="Folder of images, relative to the data root.")
    image_glob: str = "*"
    masks: str | None = Field(None, description="Folder of masks; defaults to the image folder.")
    mask_name: str = Field("{stem}.png", description="Mask file name from the image's {stem}.")
    mask_mat: MatMask | None = None

    @model_validator(mode="after")
    def _one_class_rule(self) -> FolderSource:
        if (self.anomaly_class is None) == (self.mask_classes is None):
            raise ValueError("give either anomaly_class or mask_classes")
        if self.mask_classes is not None and 0 in self.mask_classes:
            raise ValueError("mask value 0 is the background; map values from 1")
        return self


class MvtecSource(_SourceBase):
    layout: Literal["mvtec"]
    root: str = Field(description="One MVTec AD category folder, relative to the data root.")
    classes: dict[str, AnomalyClass] = Field(description="Defect folder name -> anomaly class.")


class YoloSource(_SourceBase):
    """A YOLO segmentation export (Roboflow, Ultralytics): ``images/<name>.jpg`` with
    ``labels/<name>.txt`` polygons; label names come from the export's ``data.yaml``."""

    layout: Literal["yolo"]
    images: str = Field(description="Folder of images, relative to the data root.")
    labels: str = Field(description="Folder of label .txt files, relative to the data root.")
    names: str = Field(description="The export's data.yaml (its 'names' list), from the root.")
    classes: dict[str, AnomalyClass] = Field(
        description="Label name -> anomaly class; labels not listed (the background, e.g. "
        "'cotton' or 'conveyor belt') are not defects."
    )


class LabelmeSource(_SourceBase):
    """labelme JSON files, one per image: polygons, rectangles and circles are regions; points
    and lines enclose nothing and are noted. The image is the file's ``imagePath``, relative to
    the JSON file (labelme's own rule), or looked up by name in ``images``."""

    layout: Literal["labelme"]
    annotations: str = Field(description="Folder of labelme .json files, from the data root.")
    annotation_glob: str = "*.json"
    images: str | None = Field(
        None,
        description="Folder holding the images (by imagePath's file name); default: "
        "imagePath relative to each JSON file.",
    )
    classes: dict[str, AnomalyClass] = Field(
        description="Label -> anomaly class; labels not listed are background, counted."
    )


class CocoSource(_SourceBase):
    """A COCO instances file (CVAT, Label Studio, Roboflow, detectron2 exports): polygons or
    run-length masks per annotation, category names mapped to anomaly classes."""

    layout: Literal["coco"]
    annotations: str = Field(description="The instances .json file, from the data root.")
    images: str = Field(description="Folder that the images' file_name is relative to.")
    classes: dict[str, AnomalyClass] = Field(
        description="Category name -> anomaly class; categories not listed are background."
    )


Source = Annotated[
    FolderSource | MvtecSource | YoloSource | LabelmeSource | CocoSource,
    Field(discriminator="layout"),
]


class DaadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sources: list[Source] = Field(min_length=1)
    records_per_shard: int = Field(256, ge=1)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DaadSpec:
        return load_settings(path, cls, "DAAD spec")


@dataclass(frozen=True)
class Candidate:
    """An image that may become a record; ``load_mask`` is None when it has no mask file."""

    record_id: str
    image_path: Path
    relative_path: str
    anomaly_class: AnomalyClass
    source: _SourceBase
    load_mask: Callable[[], np.ndarray] | None


@dataclass
class BuildReport:
    records: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_domain: Counter[str] = field(default_factory=Counter)
    by_tag: Counter[str] = field(default_factory=Counter)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dropped_regions: int = 0
    unmapped_labels: Counter[str] = field(default_factory=Counter)

    def skip(self, path: str, reason: str) -> None:
        log.info("skipped %s: %s", path, reason)
        self.skipped.append({"path": path, "reason": reason})

    def to_dict(self) -> dict:
        reasons = Counter(item["reason"].split(" (")[0] for item in self.skipped)
        return {
            "records": self.records,
            "by_class": dict(sorted(self.by_class.items())),
            "by_domain": dict(sorted(self.by_domain.items())),
            "by_tag": dict(sorted(self.by_tag.items())),
            "skipped_count": len(self.skipped),
            "dropped_regions": self.dropped_regions,
            "unmapped_labels": dict(sorted(self.unmapped_labels.items())),
            "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped": self.skipped,
        }


def _mask_loader(path: Path, mat: MatMask | None) -> Callable[[], np.ndarray] | None:
    if not path.is_file():
        return None
    if mat is None:
        return lambda: decode_mask(path.read_bytes())
    return lambda: decode_mat_mask(
        path.read_bytes(), field_path=mat.field, foreground_value=mat.value
    )


def _listed_images(paths: Iterator[Path], root: Path, report: BuildReport) -> list[Path]:
    """The image files among ``paths`` (sorted); the rest, but folders, are reported skips (a
    file name that is not an image's, a broken link, a name that is not valid UTF-8)."""
    images = []
    for path in sorted(paths):
        if path.is_dir():
            continue
        reason = storage.unusable_file(str(path))
        if reason is None:
            images.append(path)
        else:
            report.skip(storage.printable(_relative(path, root)), reason)
    return images


def _class_candidate(
    source: _SourceBase,
    image_path: Path,
    relative: str,
    anomaly_class: AnomalyClass,
    load_mask: Callable[[], np.ndarray],
) -> Candidate:
    """One of several records an image gives, one per anomaly class: the class names it."""
    return Candidate(
        record_id=safe_key_part(
            f"{source.domain}-{Path(relative).with_suffix('')}-{anomaly_class}"
        ),
        image_path=image_path,
        relative_path=relative,
        anomaly_class=anomaly_class,
        source=source,
        load_mask=load_mask,
    )


def _class_value_candidates(
    source: FolderSource, image_path: Path, mask_path: Path, relative: str, report: BuildReport
) -> Iterator[Candidate]:
    """One candidate per mapped class value present in the mask; unmapped values are skips."""
    assert source.mask_classes is not None
    if not mask_path.is_file():
        report.skip(relative, "no mask file")
        return
    try:
        values = decode_class_mask(mask_path.read_bytes())
    except (OSError, DecodeError) as exc:
        report.skip(relative, f"bad mask ({exc})")
        return
    for value in sorted(int(v) for v in np.unique(values) if v):
        if value not in source.mask_classes:
            report.skip(relative, f"mask value {value} has no class mapping")
            continue
        mask = partial(np.equal, values, value)
        yield _class_candidate(source, image_path, relative, source.mask_classes[value], mask)


def _folder_candidates(
    source: FolderSource, root: Path, report: BuildReport
) -> Iterator[Candidate]:
    image_dir = root / source.images
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    mask_dir = root / (source.masks or source.images)
    for image_path in _listed_images(image_dir.glob(source.image_glob), root, report):
        mask_path = mask_dir / source.mask_name.format(stem=image_path.stem, name=image_path.name)
        relative = image_path.relative_to(root).as_posix()
        if source.mask_classes is not None:
            yield from _class_value_candidates(source, image_path, mask_path, relative, report)
            continue
        assert source.anomaly_class is not None
        yield Candidate(
            record_id=safe_key_part(f"{source.domain}-{Path(relative).with_suffix('')}"),
            image_path=image_path,
            relative_path=relative,
            anomaly_class=source.anomaly_class,
            source=source,
            load_mask=_mask_loader(mask_path, source.mask_mat),
        )


def _mvtec_candidates(source: MvtecSource, root: Path, report: BuildReport) -> Iterator[Candidate]:
    category = root / source.root
    test_dir = category / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"not an MVTec AD category (no test/ folder): {category}")
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and p.name != "good"):
        images = _listed_images(defect_dir.iterdir(), root, report)
        if defect_dir.name not in source.classes:
            for image_path in images:
                report.skip(
                    image_path.relative_to(root).as_posix(),
                    f"no class mapping for defect {defect_dir.name!r}",
                )
            continue
        for image_path in images:
            relative = image_path.relative_to(root).as_posix()
            mask_path = category / "ground_truth" / defect_dir.name / f"{image_path.stem}_mask.png"
            yield Candidate(
                record_id=safe_key_part(f"{source.domain}-{Path(relative).with_suffix('')}"),
                image_path=image_path,
                relative_path=relative,
                anomaly_class=source.classes[defect_dir.name],
                source=source,
                load_mask=_mask_loader(mask_path, None),
            )


def split_regions(
    mask: np.ndarray, min_pixels: int, join_gap: int = 0
) -> tuple[list[np.ndarray], int]:
    """The 8-connected regions of ``mask`` with at least ``min_pixels`` pixels, in label order,
    and how many smaller ones were dropped; regions at most ``join_gap`` (even) pixels apart
    count as one, grouped where discs of radius ``join_gap / 2`` around them touch."""
    binary = mask.astype(np.uint8)
    grouping: np.ndarray = binary
    if join_gap > 0:  # discs of radius join_gap / 2 (even) close gaps up to join_gap
        side = join_gap + 1
        grouping = cv2.dilate(binary, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    count, labels = cv2.connectedComponents(grouping, connectivity=8)
    groups = [(labels == k) & (binary > 0) for k in range(1, count)]
    kept = [group for group in groups if np.count_nonzero(group) >= min_pixels]
    return kept, len(groups) - len(kept)


def _to_records(candidate: Candidate, report: BuildReport) -> list[DaadRecord]:
    """The candidate's record, or with ``regions: split`` one per region (``<id>-r<n>``)."""
    record, image = _to_record(candidate)
    if candidate.source.regions == "whole":
        return [record]
    source = candidate.source
    regions, dropped = split_regions(record.mask, source.min_region_pixels, source.join_gap)
    report.dropped_regions += dropped
    if not regions:
        raise ValueError(f"no region of {candidate.source.min_region_pixels}+ pixels")
    made = []
    for number, region in enumerate(regions, start=1):
        box = mask_bbox(region)
        assert box is not None
        record_id = record.label.record_id + (f"-r{number}" if len(regions) > 1 else "")
        label = replace(record.label, record_id=record_id, bbox=box)
        crop = pattern_crop_files(image, region, label)
        made.append(replace(record, mask=region, label=label, crop_files=crop))
    return made


def _to_record(candidate: Candidate) -> tuple[DaadRecord, np.ndarray]:
    """The candidate's record, and its image decoded (which its regions are cut from)."""
    if candidate.load_mask is None:
        raise ValueError("no mask file")
    try:
        image_bytes = candidate.image_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"unreadable image file ({exc})") from exc
    try:
        mask = candidate.load_mask()
    except DecodeError as exc:
        raise ValueError(f"bad mask: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"unreadable mask file ({exc})") from exc
    ext = candidate.image_path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    source = candidate.source
    image = decode_image(image_bytes)
    record = make_record(
        record_id=candidate.record_id,
        image=image,
        image_bytes=image_bytes,
        image_ext=ext,
        mask=mask,
        anomaly_class=candidate.anomaly_class,
        domain=source.domain,
        dataset=source.dataset or source.domain,
        path=candidate.relative_path,
        license=source.license,
        tags=tuple(dict.fromkeys(source.tags)),
    )
    return record, image


def _label_names(source: YoloSource, root: Path) -> list[str]:
    where = root / source.names
    try:
        names = yolo_label_names(read_yaml(where, "label names"), str(where))
    except DecodeError as exc:
        raise ConfigError(str(exc)) from exc
    unknown = sorted(set(source.classes) - set(names))
    if unknown:
        raise ConfigError(f"labels {unknown} are not in {where} ({names})")
    return names


def _shape_candidates(
    source: YoloSource | LabelmeSource | CocoSource,
    image_path: Path,
    relative: str,
    shapes: list[Shape],
    size: tuple[int, int],
    report: BuildReport,
) -> Iterator[Candidate]:
    """One candidate per anomaly class among an image's shapes: their union, filled at the
    image's size. Labels without a class are background, counted in the report."""
    by_class: dict[AnomalyClass, list[Shape]] = {}
    for shape in shapes:
        if shape.label in source.classes:
            by_class.setdefault(source.classes[shape.label], []).append(shape)
        else:
            report.unmapped_labels[shape.label] += 1
    for anomaly_class, chosen in sorted(by_class.items()):
        mask = partial(shapes_mask, chosen, *size)
        yield _class_candidate(source, image_path, relative, anomaly_class, mask)


def _images_in(folder: Path, root: Path, report: BuildReport) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return _listed_images(folder.iterdir(), root, report)


def _yolo_candidates(source: YoloSource, root: Path, report: BuildReport) -> Iterator[Candidate]:
    label_dir = root / source.labels
    names = _label_names(source, root)
    for image_path in _images_in(root / source.images, root, report):
        relative = image_path.relative_to(root).as_posix()
        label_path = label_dir / f"{image_path.stem}.txt"
        if not label_path.is_file():
            report.skip(relative, "no label file")
            continue
        try:
            polygons = parse_yolo_polygons(label_path.read_text())
            size = image_size(image_path.read_bytes())
        except (OSError, DecodeError) as exc:
            report.skip(relative, f"bad label or image ({exc})")
            continue
        shapes = []
        for label, polygon in polygons:
            if 0 <= label < len(names):
                shapes.append(Shape(label=names[label], polygon=yolo_to_pixels(polygon, *size)))
            else:
                report.skip(relative, f"label index {label} is not in the names list")
        yield from _shape_candidates(source, image_path, relative, shapes, size, report)


def _checked_size(image_path: Path, declared: tuple[object, object]) -> tuple[int, int]:
    """The image's (height, width) from its header; an annotation made for another size (a
    resized copy) would land in the wrong place, so a disagreement is an error."""
    size = image_size(image_path.read_bytes())
    if all(value is not None for value in declared) and tuple(declared) != size:
        height, width = declared
        raise DecodeError(f"annotated for {height}x{width}, the image is {size[0]}x{size[1]}")
    return size


def _labelme_candidates(
    source: LabelmeSource, root: Path, report: BuildReport
) -> Iterator[Candidate]:
    folder = root / source.annotations
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {folder}")
    for json_path in sorted(folder.glob(source.annotation_glob)):
        where = json_path.relative_to(root).as_posix()
        try:
            header, shapes, notes = parse_labelme(json_path.read_text())
        except (OSError, UnicodeDecodeError, DecodeError) as exc:
            report.skip(where, f"bad labelme file ({exc})")
            continue
        for note in notes:
            report.skip(where, note)
        image_ref = Path(header["imagePath"].replace("\\", "/"))
        if source.images is not None:
            image_path = root / source.images / image_ref.name
        else:
            image_path = Path(os.path.normpath(json_path.parent / image_ref))
        if not image_path.is_file():
            report.skip(where, f"image file not found ({image_path})")
            continue
        try:
            size = _checked_size(image_path, (header["imageHeight"], header["imageWidth"]))
        except (OSError, DecodeError) as exc:
            report.skip(where, f"bad image ({exc})")
            continue
        relative = _relative(image_path, root)
        yield from _shape_candidates(source, image_path, relative, shapes, size, report)


def _relative(path: Path, root: Path) -> str:
    """The path from the data root where it lies below it (else as given): a record's source."""
    try:
        return Path(os.path.normpath(path)).relative_to(os.path.normpath(root)).as_posix()
    except ValueError:
        return path.as_posix()


def _coco_candidates(source: CocoSource, root: Path, report: BuildReport) -> Iterator[Candidate]:
    path = root / source.annotations
    try:
        coco = parse_coco(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from exc
    except (UnicodeDecodeError, DecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(source.classes) - coco.categories)
    if unknown:
        raise ConfigError(f"categories {unknown} are not in {path} ({sorted(coco.categories)})")
    for note in coco.notes:
        report.skip(source.annotations, note)
    for image_id in sorted(coco.shapes, key=lambda i: coco.images[i]["file_name"]):
        image = coco.images[image_id]
        image_path = root / source.images / image["file_name"]
        relative = _relative(image_path, root)
        if not image_path.is_file():
            report.skip(relative, "image file not found")
            continue
        try:
            size = _checked_size(image_path, (image["height"], image["width"]))
        except (OSError, DecodeError) as exc:
            report.skip(relative, f"bad image ({exc})")
            continue
        shapes = coco.shapes[image_id]
        yield from _shape_candidates(source, image_path, relative, shapes, size, report)


def iter_candidates(spec: DaadSpec, data_root: Path, report: BuildReport) -> Iterator[Candidate]:
    for source in spec.sources:
        if isinstance(source, FolderSource):
            yield from _folder_candidates(source, data_root, report)
        elif isinstance(source, YoloSource):
            yield from _yolo_candidates(source, data_root, report)
        elif isinstance(source, LabelmeSource):
            yield from _labelme_candidates(source, data_root, report)
        elif isinstance(source, CocoSource):
            yield from _coco_candidates(source, data_root, report)
        else:
            yield from _mvtec_candidates(source, data_root, report)


def _pattern_spans(shard: bytes) -> dict[str, tuple[int, int]]:
    """Record key -> the byte range of its two pattern members (adjacent: their names sort
    together), for records that keep a pattern crop."""
    spans: dict[str, tuple[int, int]] = {}
    members = member_spans(shard)
    for (first, start, _), (second, _, end) in zip(members, members[1:], strict=False):
        key, _, ext = first.partition(".")
        if ext == PATTERN_MASK:
            assert second == f"{key}.{PATTERN_IMAGE}", f"{first} is not followed by its image"
            spans[key] = (start, end)
    return spans


def build_daad(spec: DaadSpec, data_root: str | Path, out: str) -> dict:
    """Build DAAD shards under ``out`` and return the index (which embeds the build report)."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    report = BuildReport()
    seen: set[str] = set()
    shards: list[dict] = []
    pending: list[DaadRecord] = []
    rows: list[dict] = []

    def flush() -> None:
        name = f"daad-{len(shards):06d}.tar"
        data = build_tar(record.to_sample() for record in pending)
        patterns = _pattern_spans(data)
        for record, (key, start, end) in zip(pending, sample_spans(data), strict=True):
            assert key == record.label.record_id
            rows.append(
                {
                    "record_id": key,
                    "anomaly_class": str(record.label.anomaly_class),
                    "domain": record.label.domain,
                    "shard": len(shards),
                    "start": start,
                    "end": end,
                    "pattern": patterns.get(key, (-1, -1)),
                    "bbox": record.label.bbox,
                    "path": record.label.path,
                    "height": record.label.height,
                    "width": record.label.width,
                    "fingerprint": record.fingerprint,
                    "tags": record.label.tags,
                }
            )
        storage.write_bytes_atomic(storage.join(out, name), data)
        digest = hashlib.sha256(data).hexdigest()
        shards.append({"name": name, "records": len(pending), "sha256": digest})
        pending.clear()

    storage.makedirs(out)
    for candidate in iter_candidates(spec, root, report):
        if candidate.record_id in seen:
            report.skip(candidate.relative_path, f"duplicate record id {candidate.record_id}")
            continue
        try:
            records = _to_records(candidate, report)
        except (ValueError, DecodeError) as exc:
            report.skip(candidate.relative_path, str(exc))
            continue
        seen.add(candidate.record_id)
        for record in records:
            report.records += 1
            report.by_class[str(record.label.anomaly_class)] += 1
            report.by_domain[record.label.domain] += 1
            report.by_tag.update(record.label.tags)
            pending.append(record)
            if len(pending) >= spec.records_per_shard:
                flush()
    if pending:
        flush()
    if report.records == 0:
        raise ValueError(f"no usable records in {root} for spec {spec.name!r}")
    storage.write_bytes_atomic(storage.join(out, RECORDS_NAME), _records_table(rows))
    index = {
        "format_version": FORMAT_VERSION,
        "records_table": RECORDS_NAME,
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "shards": shards,
        "report": report.to_dict(),
    }
    storage.write_bytes_atomic(storage.join(out, INDEX_NAME), json.dumps(index, indent=2).encode())
    return index
