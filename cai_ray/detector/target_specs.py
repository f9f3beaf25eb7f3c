"""What a target dataset for the detector benchmark is, as its spec file says (``layout:``
``mvtec``, ``folder`` or ``yolo_crops``): the spec models and their loader. Reading the files
they name is :mod:`cai_ray.detector.target_splits`' job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cai_ray.io.settings import Settings, read_yaml, validate_settings


class AnomalousFolder(Settings):
    defect: str = Field(description="Defect type name, reported per image.")
    images: str = Field(description="Folder of defective images, relative to the data root.")
    image_glob: str = "*"
    masks: str | None = Field(None, description="Folder of masks; defaults to the image folder.")
    mask_name: str = Field("{stem}.png", description="Mask file name from the image's {stem}.")


class FolderTarget(Settings):
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


class MvtecTarget(Settings):
    layout: Literal["mvtec"]
    name: str
    root: str = Field(description="One MVTec AD category folder, relative to the data root.")


class YoloFolder(Settings):
    images: str = Field(description="Folder of images, relative to the data root.")
    labels: str = Field(description="Folder of YOLO polygon .txt files, relative to the root.")


class YoloCropsTarget(Settings):
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


class _SpecFile(Settings):
    target: TargetSpec


def load_target_spec(path: str | Path) -> AnyTarget:
    raw = {"target": read_yaml(path, "target spec")}
    return validate_settings(raw, _SpecFile, "target spec", str(path)).target
