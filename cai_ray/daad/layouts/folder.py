"""``folder``: images in one folder, masks matched by name (``mask_name`` template, e.g.
``"{stem}.png"``) in the same or another folder, or read from MATLAB files (``mask_mat``); one
anomaly class per source, or masks of class values (``mask_classes``), one record per class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.layouts.base import (
    BuildReport,
    Candidate,
    SourceBase,
    class_candidate,
    listed_images,
    mask_loader,
)
from cai_ray.daad.records import safe_key_part
from cai_ray.io.codecs import DecodeError, decode_class_mask, decode_mask, decode_mat_mask
from cai_ray.io.settings import Settings


class MatMask(Settings):
    """A mask inside a MATLAB file: ``field`` is a dotted path, ``value`` marks the defect."""

    field: str
    value: int


class FolderSource(SourceBase):
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

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        image_dir = root / self.images
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {image_dir}")
        mask_dir = root / (self.masks or self.images)
        decode: Callable[[bytes], np.ndarray] = decode_mask
        if self.mask_mat is not None:
            decode = partial(
                decode_mat_mask,
                field_path=self.mask_mat.field,
                foreground_value=self.mask_mat.value,
            )
        for image_path in listed_images(image_dir.glob(self.image_glob), root, report):
            mask_path = mask_dir / self.mask_name.format(stem=image_path.stem, name=image_path.name)
            relative = image_path.relative_to(root).as_posix()
            if self.mask_classes is not None:
                yield from self._class_value_candidates(image_path, mask_path, relative, report)
                continue
            assert self.anomaly_class is not None
            yield Candidate(
                record_id=safe_key_part(f"{self.domain}-{Path(relative).with_suffix('')}"),
                image_path=image_path,
                relative_path=relative,
                anomaly_class=self.anomaly_class,
                source=self,
                load_mask=mask_loader(mask_path, decode),
            )

    def _class_value_candidates(
        self, image_path: Path, mask_path: Path, relative: str, report: BuildReport
    ) -> Iterator[Candidate]:
        """One candidate per mapped class value present in the mask; unmapped values are
        skips."""
        assert self.mask_classes is not None
        if not mask_path.is_file():
            report.skip(relative, "no mask file")
            return
        try:
            values = decode_class_mask(mask_path.read_bytes())
        except (OSError, DecodeError) as exc:
            report.skip(relative, f"bad mask ({exc})")
            return
        for value in sorted(int(v) for v in np.unique(values) if v):
            if value not in self.mask_classes:
                report.skip(relative, f"mask value {value} has no class mapping")
                continue
            mask = partial(np.equal, values, value)
            yield class_candidate(self, image_path, relative, self.mask_classes[value], mask)
