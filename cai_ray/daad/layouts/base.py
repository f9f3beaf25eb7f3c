"""What every layout shares: the fields of a source, the hook a layout implements (its
candidates: images that may become records), the build report its skips go to, and the helpers
several layouts use (image listing, mask loading, class candidates from annotated shapes).

A layout's reader never crashes on a bad file: it reports the file with a reason and goes on.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.records import Tag, safe_key_part
from cai_ray.io import storage
from cai_ray.io.annotations import Shape, shapes_mask
from cai_ray.io.codecs import DecodeError, decode_mask, image_size
from cai_ray.io.settings import Settings

log = logging.getLogger(__name__)


class SourceBase(Settings):
    """The fields every source has, whatever its layout. A layout's model adds its ``layout``
    name (a ``Literal``), its own fields and :meth:`candidates`."""

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

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        """The images under the data root ``root`` that may become records, in a fixed order;
        files that cannot go to ``report`` with their reason. A missing folder or a mapping
        that names labels the export lacks is an error (the spec is wrong, not a file)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Candidate:
    """An image that may become a record; ``load_mask`` is None when it has no mask file."""

    record_id: str
    image_path: Path
    relative_path: str
    anomaly_class: AnomalyClass
    source: SourceBase
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


def mask_loader(
    path: Path, decode: Callable[[bytes], np.ndarray] = decode_mask
) -> Callable[[], np.ndarray] | None:
    """Reads and decodes the mask file at ``path`` when called; None if there is no file."""
    if not path.is_file():
        return None
    return lambda: decode(path.read_bytes())


def relative_to_root(path: Path, root: Path) -> str:
    """The path from the data root where it lies below it (else as given): a record's source."""
    try:
        return Path(os.path.normpath(path)).relative_to(os.path.normpath(root)).as_posix()
    except ValueError:
        return path.as_posix()


def listed_images(paths: Iterator[Path], root: Path, report: BuildReport) -> list[Path]:
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
            report.skip(storage.printable(relative_to_root(path, root)), reason)
    return images


def class_candidate(
    source: SourceBase,
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


def shape_candidates(
    source: SourceBase,
    classes: dict[str, AnomalyClass],
    image_path: Path,
    relative: str,
    shapes: list[Shape],
    size: tuple[int, int],
    report: BuildReport,
) -> Iterator[Candidate]:
    """One candidate per anomaly class among an image's annotated shapes (``classes`` maps
    their labels): their union, filled at the image's size. Labels without a class are
    background, counted in the report."""
    by_class: dict[AnomalyClass, list[Shape]] = {}
    for shape in shapes:
        if shape.label in classes:
            by_class.setdefault(classes[shape.label], []).append(shape)
        else:
            report.unmapped_labels[shape.label] += 1
    for anomaly_class, chosen in sorted(by_class.items()):
        mask = partial(shapes_mask, chosen, *size)
        yield class_candidate(source, image_path, relative, anomaly_class, mask)


def annotated_size(
    image_path: Path,
    declared: tuple[object, object],
    report: BuildReport,
    where: str,
    missing: str = "image file not found",
) -> tuple[int, int] | None:
    """The annotated image's (height, width) from its header, or ``None`` with the skip
    reported under ``where``: the image is missing (``missing``), unreadable, or of another
    size than the annotation declares (a resized copy: its shapes would land in the wrong
    place)."""
    if not image_path.is_file():
        report.skip(where, missing)
        return None
    try:
        size = image_size(image_path.read_bytes())
    except (OSError, DecodeError) as exc:
        report.skip(where, f"bad image ({exc})")
        return None
    if all(value is not None for value in declared) and tuple(declared) != size:
        height, width = declared
        reason = f"annotated for {height}x{width}, the image is {size[0]}x{size[1]}"
        report.skip(where, f"bad image ({reason})")
        return None
    return size
