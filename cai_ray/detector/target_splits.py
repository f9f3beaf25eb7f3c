"""A target dataset's files: normal training images, and test images with their ground-truth
masks (normal test images have none), listed from an MVTec AD category, folders, or the crops
of a YOLO export (:mod:`cai_ray.detector.yolo_crops` cuts them on first use). Nothing is decoded
here.

Bad files never crash the loader: a test image whose mask file is missing is skipped and
counted with the reason, like the DAAD builders do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cai_ray.detector.target_specs import AnyTarget, FolderTarget, MvtecTarget, YoloCropsTarget
from cai_ray.detector.yolo_crops import cut_crops
from cai_ray.io.storage import image_files


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


def _with_masks(
    images: list[Path], mask_for: dict[Path, Path], defect: str, split: TargetSplit
) -> None:
    for image in images:
        mask = mask_for[image]
        if not mask.is_file():
            split.skipped.append({"path": str(image), "reason": f"no mask file {mask.name}"})
            continue
        split.test.append(TestImage(image, mask, defect))


def load_target_split(spec: AnyTarget, data_root: str | Path) -> TargetSplit:
    """The file lists of a target dataset (nothing decoded yet; YOLO crops are cut and written
    on first use)."""
    root = Path(data_root)
    if isinstance(spec, YoloCropsTarget):
        return _crops_split(spec, root)
    if isinstance(spec, MvtecTarget):
        return _mvtec_split(spec, root)
    return _folder_split(spec, root)


def _mvtec_split(spec: MvtecTarget, root: Path) -> TargetSplit:
    category = root / spec.root
    split = TargetSplit(spec.name, image_files(category / "train" / "good"), [])
    for defect_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir()):
        images = image_files(defect_dir)
        if defect_dir.name == "good":
            split.test += [TestImage(p, None, "good") for p in images]
            continue
        truth = category / "ground_truth" / defect_dir.name
        _with_masks(
            images, {p: truth / f"{p.stem}_mask.png" for p in images}, defect_dir.name, split
        )
    return split


def _folder_split(spec: FolderTarget, root: Path) -> TargetSplit:
    normal = image_files(root / spec.normal, spec.normal_glob)
    every = spec.holdout_every
    held = [p for i, p in enumerate(normal) if every and i % every == every - 1]
    split = TargetSplit(spec.name, [p for p in normal if p not in set(held)], [])
    split.test += [TestImage(p, None, "good") for p in held]
    if spec.test_normal:
        split.test += [TestImage(p, None, "good") for p in image_files(root / spec.test_normal)]
    for folder in spec.anomalous:
        images = image_files(root / folder.images, folder.image_glob)
        mask_dir = root / (folder.masks or folder.images)
        mask_for = {p: mask_dir / folder.mask_name.format(stem=p.stem) for p in images}
        _with_masks(images, mask_for, folder.defect, split)
    if not split.train:
        raise ValueError(f"target {spec.name!r}: no normal training images in {root / spec.normal}")
    return split


def _crops_split(spec: YoloCropsTarget, root: Path) -> TargetSplit:
    """The split of the crops :func:`~cai_ray.detector.yolo_crops.cut_crops` lists (cutting
    them first where they are missing or were cut from another spec)."""
    out = Path(spec.crops)
    listing = cut_crops(spec, root)
    split = TargetSplit(spec.name, [out / p for p in listing["train"]], [])
    for entry in listing["test"]:
        mask = None if entry["mask"] is None else out / entry["mask"]
        split.test.append(TestImage(out / entry["image"], mask, entry["defect"]))
    split.skipped += listing["skipped"]
    if not split.train:
        raise ValueError(f"target {spec.name!r}: no defect-free crop among the training images")
    return split
