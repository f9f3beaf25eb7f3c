"""``mvtec``: the MVTec AD layout, ``test/<defect>/<n>.png`` with
``ground_truth/<defect>/<n>_mask.png``, and a defect-to-class mapping (``good`` is no defect;
a defect folder without a mapping is a reported skip of its images)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.layouts.base import BuildReport, Candidate, SourceBase, listed_images, mask_loader
from cai_ray.daad.records import safe_key_part


class MvtecSource(SourceBase):
    layout: Literal["mvtec"]
    root: str = Field(description="One MVTec AD category folder, relative to the data root.")
    classes: dict[str, AnomalyClass] = Field(description="Defect folder name -> anomaly class.")

    def candidates(self, root: Path, report: BuildReport) -> Iterator[Candidate]:
        category = root / self.root
        test_dir = category / "test"
        if not test_dir.is_dir():
            raise FileNotFoundError(f"not an MVTec AD category (no test/ folder): {category}")
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and p.name != "good"):
            images = listed_images(defect_dir.iterdir(), root, report)
            if defect_dir.name not in self.classes:
                for image_path in images:
                    report.skip(
                        image_path.relative_to(root).as_posix(),
                        f"no class mapping for defect {defect_dir.name!r}",
                    )
                continue
            truth = category / "ground_truth" / defect_dir.name
            for image_path in images:
                relative = image_path.relative_to(root).as_posix()
                yield Candidate(
                    record_id=safe_key_part(f"{self.domain}-{Path(relative).with_suffix('')}"),
                    image_path=image_path,
                    relative_path=relative,
                    anomaly_class=self.classes[defect_dir.name],
                    source=self,
                    load_mask=mask_loader(truth / f"{image_path.stem}_mask.png"),
                )
