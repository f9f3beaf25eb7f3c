"""A trained CAI-guided diffusion model (:mod:`cai_ray.cdm`) as a synthesizer: masks from the
DAAD placed by CAI's rules (the ``cai`` section), painted by the model. torch and diffusers are
imported only when one is checked or built (the ``cdm`` extra)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field

from cai_ray.cdm.checkpoint import EXPORTED_FILES, read_info
from cai_ray.cdm.classes import generated_classes
from cai_ray.cdm.masks import AffineParams
from cai_ray.core.synthesis import Synthesizer
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.shards import PatternBank
from cai_ray.extras import require
from cai_ray.io import storage
from cai_ray.synthesizers.base import BuildContext
from cai_ray.synthesizers.cai import TunedByCAI, daad_patterns


class CDMMethod(TunedByCAI):
    """``synthesizer: {method: cdm, checkpoint: ...}``. Its masks follow CAI's rules, set in the
    ``cai`` section (quotas, match_scale, within_foreground, mask_kernel), from the DAAD's masks."""

    model_config = ConfigDict(frozen=True)
    method: Literal["cdm"] = "cdm"
    needs_daad: ClassVar[bool] = True
    checkpoint: str = Field(description="A folder written by 'cai-ray cdm train' (or s3://).")
    classes: list[AnomalyClass] | None = Field(
        None,
        description="Classes to generate (the paper's CDM-5 is a subset); None: every class the "
        "model learnt. Each needs DAAD masks of its class.",
    )
    scheduler: Literal["ddim", "dpm"] = Field("ddim", description="DDIM or DPM-Solver++.")
    steps: int = Field(50, ge=1, description="Denoising steps per sample.")
    batch_size: int = Field(32, ge=1, description="Samples per network batch.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU if any.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU.")
    label: Literal["condition", "difference"] = Field(
        "condition",
        description="Label mask: the conditioning mask, or the pixels in it that changed "
        "(grey difference > cai.diff_threshold, median filtered).",
    )
    affine: AffineParams = AffineParams()

    def check(self, context: BuildContext) -> None:
        """The cdm extra is installed, the checkpoint exists, knows the classes asked for, the
        DAAD has masks of them, and it makes the job's colour."""
        require("cdm", ("torch", "diffusers"), "synthesizer method 'cdm'")
        info = read_info(self.checkpoint)
        self._mask_sources(context, info["classes"])
        if info["color"] != context.mode:
            raise ValueError(
                f"the CDM at {self.checkpoint} makes {info['color']} images but the job's are "
                f"{context.mode}: set color: {info['color']}"
            )

    def source_files(self) -> list[str]:
        return [storage.join(self.checkpoint, name) for name in EXPORTED_FILES]

    def _mask_sources(
        self, context: BuildContext, learnt: dict[str, int]
    ) -> tuple[PatternBank, np.ndarray | None]:
        """The DAAD records of the classes generated (learnt, asked for and drawn), and their
        class weights; a clear error when none is left."""
        daad = context.daad
        if daad is None:
            raise ValueError("synthesizer 'cdm' needs a DAAD (its masks)")
        classes = generated_classes(learnt, self.classes, self.checkpoint)
        drawn = daad.drawn_classes()
        if drawn is not None:
            classes = [c for c in classes if c in set(map(str, drawn))]
        if not classes:
            raise ValueError(
                f"the CDM at {self.checkpoint} generates none of the DAAD classes drawn "
                f"({sorted(map(str, drawn or []))})"
            )
        return daad_patterns(context, daad, [AnomalyClass(c) for c in classes])

    def for_workers(self) -> CDMMethod:
        return self.model_copy(update={"checkpoint": storage.absolute(self.checkpoint)})

    def build(self, context: BuildContext) -> Synthesizer:
        """The trained CDM on this worker's device, with masks from the DAAD records of the
        classes it generates."""
        require("cdm", ("torch", "diffusers"), "synthesizer method 'cdm'")
        import torch

        from cai_ray.cdm.masks import MaskGenerator
        from cai_ray.cdm.sampler import CDMSynthesizer, make_scheduler
        from cai_ray.cdm.train import autocast_dtype, load_cdm

        unet, schedule, info = load_cdm(self.checkpoint)
        patterns, weights = self._mask_sources(context, info["classes"])
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("synthesizer.device is 'cuda' but this worker sees no GPU")
        use_gpu = self.device != "cpu" and torch.cuda.is_available()
        device = torch.device("cuda" if use_gpu else "cpu")
        cai = self.cai
        return CDMSynthesizer(
            unet,
            make_scheduler(self.scheduler, schedule),
            MaskGenerator(patterns, cai, self.affine, weights),
            image_size=info["image_size"],
            channels=info["channels"],
            steps=self.steps,
            batch_size=self.batch_size,
            device=device,
            dtype=autocast_dtype(self.precision, device),
            label=self.label,
            diff_threshold=cai.diff_threshold,
            median_size=cai.median_size,
            min_mask_pixels=cai.min_mask_pixels,
        )
