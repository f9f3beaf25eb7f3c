"""A target dataset for the detector benchmark: normal training images, and test images with
their ground-truth masks (normal test images have none), from an MVTec AD category or folders.

Bad files never crash the loader: a test image whose mask is missing, unreadable, empty or of
another size is skipped and counted with the reason, like the DAAD builders do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cai_ray.io import storage
from cai_ray.io.codecs import (
    ColorMode,
    DecodeError,
    decode_image,
    decode_mask,
    resize,
    resize_mask,
)
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


TargetSpec = Annotated[FolderTarget | MvtecTarget, Field(discriminator="layout")]


class _SpecFile(_Spec):
    target: TargetSpec


def load_target_spec(path: str | Path) -> FolderTarget | MvtecTarget:
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


def load_target_split(spec: FolderTarget | MvtecTarget, data_root: str | Path) -> TargetSplit:
    """The file lists of a target dataset (nothing decoded yet)."""
    root = Path(data_root)
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


def load_test_set(
    split: TargetSplit, size: int, mode: ColorMode
) -> tuple[np.ndarray, np.ndarray, list[TestImage]]:
    """Decoded test images (N, size, size[, 3]) uint8 and masks (N, size, size) bool, with the
    items kept; unusable ones are added to ``split.skipped`` with the reason."""
    images, masks, kept = [], [], []
    for item in split.test:
        try:
            image = decode_image(item.path.read_bytes(), mode)
            mask = (
                np.zeros(image.shape[:2], bool)
                if item.mask is None
                else decode_mask(item.mask.read_bytes())
            )
        except (OSError, DecodeError) as exc:
            split.skipped.append({"path": str(item.path), "reason": f"unreadable: {exc}"})
            continue
        if mask.shape != image.shape[:2]:
            reason = f"mask {mask.shape} and image {image.shape[:2]} differ in size"
            split.skipped.append({"path": str(item.path), "reason": reason})
            continue
        if item.mask is not None and not mask.any():
            split.skipped.append({"path": str(item.path), "reason": "mask is empty"})
            continue
        resized = resize_mask(mask, size)
        if item.mask is not None and not resized.any():
            reason = f"defect smaller than a pixel at {size}x{size}"
            split.skipped.append({"path": str(item.path), "reason": reason})
            continue
        images.append(resize(image, size))
        masks.append(resized)
        kept.append(item)
    if not kept:
        raise ValueError(f"target {split.name!r}: no usable test images")
    return np.stack(images), np.stack(masks), kept
