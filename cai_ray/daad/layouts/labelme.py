"""``labelme``: labelme JSON files, one per image; polygons, rectangles and circles are regions,
label names mapped to classes (:func:`cai_ray.io.annotations.parse_labelme` reads a file)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.layouts.base import (
    BuildReport,
    Candidate,
    SourceBase,
    annotated_size,
    relative_to_root,
    shape_candidates,
)
from cai_ray.io.annotations import parse_labelme
from cai_ray.io.codecs import DecodeError


class LabelmeSource(SourceBase):
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

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        folder = root / self.annotations
        if not folder.is_dir():
            raise FileNotFoundError(f"annotation folder not found: {folder}")
        for json_path in sorted(folder.glob(self.annotation_glob)):
            where = json_path.relative_to(root).as_posix()
            try:
                header, shapes, notes = parse_labelme(json_path.read_text())
            except (OSError, UnicodeDecodeError, DecodeError) as exc:
                report.skip(where, f"bad labelme file ({exc})")
                continue
            for note in notes:
                report.skip(where, note)
            image_ref = Path(header["imagePath"].replace("\\", "/"))
            if self.images is not None:
                image_path = root / self.images / image_ref.name
            else:
                image_path = Path(os.path.normpath(json_path.parent / image_ref))
            declared = (header["imageHeight"], header["imageWidth"])
            missing = f"image file not found ({image_path})"
            size = annotated_size(image_path, declared, report, where, missing)
            if size is None:
                continue
            relative = relative_to_root(image_path, root)
            yield from shape_candidates(
                self, self.classes, image_path, relative, shapes, size, report
            )
