"""``yolo``: a YOLO segmentation export (Roboflow, Ultralytics), ``images/<name>.jpg`` with
``labels/<name>.txt`` polygons, label names from the export's ``data.yaml`` mapped to classes
(:func:`cai_ray.io.annotations.read_yolo_shapes` reads a label file)."""

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
    listed_images,
    shape_candidates,
)
from cai_ray.io.annotations import read_yolo_shapes, yolo_label_names
from cai_ray.io.codecs import DecodeError, image_size
from cai_ray.io.settings import ConfigError, read_yaml


class YoloSource(SourceBase):
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

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        label_dir = root / self.labels
        names = self._label_names(root)
        image_dir = root / self.images
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {image_dir}")
        for image_path in listed_images(image_dir.iterdir(), root, report):
            relative = image_path.relative_to(root).as_posix()
            label_path = label_dir / f"{image_path.stem}.txt"
            if not label_path.is_file():
                report.skip(relative, "no label file")
                continue
            try:
                size = image_size(image_path.read_bytes())
                shapes = read_yolo_shapes(label_path, names, *size)
            except (OSError, DecodeError) as exc:
                report.skip(relative, f"bad label or image ({exc})")
                continue
            yield from shape_candidates(
                self, self.classes, image_path, relative, shapes, size, report
            )

    def _label_names(self, root: Path) -> list[str]:
        where = root / self.names
        try:
            names = yolo_label_names(read_yaml(where, "label names"), str(where))
        except DecodeError as exc:
            raise ConfigError(str(exc)) from exc
        unknown = sorted(set(self.classes) - set(names))
        if unknown:
            raise ConfigError(f"labels {unknown} are not in {where} ({names})")
        return names
