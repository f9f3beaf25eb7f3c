"""``coco``: a COCO instances file (CVAT, Label Studio, Roboflow, detectron2 exports), polygons
or run-length masks per annotation, category names mapped to classes
(:func:`cai_ray.io.annotations.parse_coco` reads the file)."""

from __future__ import annotations

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
from cai_ray.io.annotations import parse_coco
from cai_ray.io.codecs import DecodeError
from cai_ray.io.settings import ConfigError


class CocoSource(SourceBase):
    """A COCO instances file (CVAT, Label Studio, Roboflow, detectron2 exports): polygons or
    run-length masks per annotation, category names mapped to anomaly classes."""

    layout: Literal["coco"]
    annotations: str = Field(description="The instances .json file, from the data root.")
    images: str = Field(description="Folder that the images' file_name is relative to.")
    classes: dict[str, AnomalyClass] = Field(
        description="Category name -> anomaly class; categories not listed are background."
    )

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        path = root / self.annotations
        try:
            coco = parse_coco(path.read_text())
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"COCO annotation file not found: {path}") from exc
        except (UnicodeDecodeError, DecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        unknown = sorted(set(self.classes) - coco.categories)
        if unknown:
            raise ConfigError(f"categories {unknown} are not in {path} ({sorted(coco.categories)})")
        for note in coco.notes:
            report.skip(self.annotations, note)
        for image_id in sorted(coco.shapes, key=lambda i: coco.images[i]["file_name"]):
            image = coco.images[image_id]
            image_path = root / self.images / image["file_name"]
            relative = relative_to_root(image_path, root)
            size = annotated_size(image_path, (image["height"], image["width"]), report, relative)
            if size is None:
                continue
            shapes = coco.shapes[image_id]
            yield from shape_candidates(
                self, self.classes, image_path, relative, shapes, size, report
            )
