"""Sampling anomalies from a trained CDM: masks from :mod:`cai_ray.cdm.masks`, a fast scheduler
(DDIM or DPM-Solver++) run over batches of them, and the result pasted into the full-size target
outside the mask, so pixels outside the anomaly stay the normal image's.

The network works at its own training size; targets of another size are resized to it, and the
painted region is resized back. Every sample's starting noise comes from its own seed (drawn from
``sample_rng(seed, key, k)``), so a sample depends neither on its batch-mates nor on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch

from cai_ray.cdm.classes import class_id
from cai_ray.cdm.masks import GenerationMask, MaskGenerator
from cai_ray.cdm.model import network_input
from cai_ray.core.geometry import region_box
from cai_ray.core.labels import label_mask
from cai_ray.core.synthesis import Donor, Failure, Patched, sample_rng

SchedulerKind = Literal["ddim", "dpm"]
LabelSource = Literal["condition", "difference"]


def make_scheduler(kind: SchedulerKind, training_config: dict[str, Any]) -> Any:
    """A fast sampler built from the noise schedule the model was trained with."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        return DDIMScheduler.from_config(training_config)
    return DPMSolverMultistepScheduler.from_config(training_config, algorithm_type="dpmsolver++")


@torch.no_grad()
def inpaint(
    unet: torch.nn.Module,
    scheduler: Any,
    normal: torch.Tensor,
    mask: torch.Tensor,
    classes: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fill ``mask`` (N, 1, H, W in {0, 1}) of ``normal`` (N, C, H, W in [-1, 1]) with anomalies
    of ``classes`` (N,), starting from ``noise``; returns images in [-1, 1], equal to ``normal``
    outside the mask."""
    scheduler.set_timesteps(steps, device=normal.device)
    sample = noise * scheduler.init_noise_sigma
    autocast = torch.autocast(normal.device.type, dtype=dtype, enabled=dtype != torch.float32)
    for timestep in scheduler.timesteps:
        with autocast:
            model_input = network_input(scheduler.scale_model_input(sample, timestep), normal, mask)
            predicted = unet(model_input, timestep, class_labels=classes).sample
        sample = scheduler.step(predicted.float(), timestep, sample).prev_sample
    return torch.where(mask > 0, sample.clamp(-1, 1), normal)


def _to_network(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W[, C]) uint8 -> (C, size, size) float32 in [-1, 1]."""
    if image.shape[0] != size:
        image = np.asarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    image = image if image.ndim == 3 else image[..., None]
    return image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1


def _from_network(image: np.ndarray, size: int) -> np.ndarray:
    """(C, s, s) float in [-1, 1] -> (size, size[, C]) uint8."""
    pixels = np.clip(np.rint((image.transpose(1, 2, 0) + 1) * 127.5), 0, 255).astype(np.uint8)
    if pixels.shape[0] != size:
        pixels = np.asarray(cv2.resize(pixels, (size, size), interpolation=cv2.INTER_CUBIC))
    return pixels if pixels.ndim == 3 and pixels.shape[2] == 3 else pixels.reshape(size, size)


@dataclass(frozen=True)
class _Job:
    target: int
    slot: int  # the position in the target's results (of its indices)
    region: GenerationMask
    noise_seed: int


class CDMSynthesizer:
    """A trained CDM as a synthesizer: ``masks.count`` anomalies per target, made in batches of
    ``batch_size`` across all the targets it is given at once (a shard, in the synthesis job)."""

    method = "cdm"

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: Any,
        masks: MaskGenerator,
        *,
        image_size: int,
        channels: int,
        steps: int = 50,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        label: LabelSource = "condition",
        diff_threshold: int = 7,
        median_size: int = 7,
        min_mask_pixels: int = 10,
    ) -> None:
        self.unet = unet.to(device).eval()
        self.scheduler = scheduler
        self.masks = masks
        self.image_size = image_size
        self.channels = channels
        self.steps = steps
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.label: LabelSource = label
        self.diff_threshold = diff_threshold
        self.median_size = median_size
        self.min_mask_pixels = min_mask_pixels
        self.anomalies_per_target = masks.count

    def synthesize(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        *,
        seed: int,
        target_key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> list[Patched | Failure]:
        [results] = self.synthesize_many(
            [(target, foreground, target_key)], seed=seed, indices=indices
        )
        return results

    def synthesize_many(
        self,
        targets: Sequence[tuple[np.ndarray, np.ndarray, str]],
        *,
        seed: int,
        indices: Sequence[int] | None = None,
    ) -> list[list[Patched | Failure]]:
        """Every target's anomalies (those at ``indices``; None: all), sample ``k`` of target
        ``key`` drawn from ``sample_rng(seed, key, k)`` whatever else is in its batch."""
        if indices is None:
            indices = range(self.masks.count)
        results: list[list[Patched | Failure | None]] = []
        jobs: list[_Job] = []
        for position, (target, foreground, key) in enumerate(targets):
            channels = 1 if target.ndim == 2 else target.shape[2]
            if channels != self.channels:
                raise ValueError(
                    f"the CDM was trained on {self.channels}-channel images; "
                    f"target {key} has {channels}: set the job's color to match"
                )
            rngs = [sample_rng(seed, key, k) for k in indices]
            drawn = self.masks.draw(foreground, rngs, indices)
            results.append([r if isinstance(r, Failure) else None for r in drawn])
            for slot, (region, rng) in enumerate(zip(drawn, rngs, strict=True)):
                if isinstance(region, GenerationMask):
                    jobs.append(_Job(position, slot, region, int(rng.integers(2**63))))
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            painted = self._paint([targets[job.target][0] for job in batch], batch)
            for job, image in zip(batch, painted, strict=True):
                results[job.target][job.slot] = self._finish(
                    targets[job.target][0], image, job.region
                )
        return [[r for r in row if r is not None] for row in results]

    def _paint(self, normals: list[np.ndarray], batch: list[_Job]) -> list[np.ndarray]:
        size = self.image_size
        full = normals[0].shape[0]
        normal = torch.from_numpy(np.stack([_to_network(image, size) for image in normals]))
        masks = [job.region.mask.astype(np.uint8) for job in batch]
        small = [cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) > 0 for m in masks]
        mask = torch.from_numpy(np.stack(small)[:, None].astype(np.float32))
        noise = torch.stack(
            [
                torch.randn(
                    (self.channels, size, size),
                    generator=torch.Generator().manual_seed(job.noise_seed),
                )
                for job in batch
            ]
        )
        classes = torch.tensor([class_id(job.region.anomaly_class) for job in batch])
        device = self.device
        out = inpaint(
            self.unet,
            self.scheduler,
            normal.to(device),
            mask.to(device),
            classes.to(device),
            noise.to(device),
            self.steps,
            self.dtype,
        )
        return [_from_network(image, full) for image in out.float().cpu().numpy()]

    def _finish(
        self, normal: np.ndarray, painted: np.ndarray, region: GenerationMask
    ) -> Patched | Failure:
        keep = region.mask[..., None] if normal.ndim == 3 else region.mask
        image = np.where(keep, painted, normal)
        if self.label == "condition":
            mask = region.mask.astype(np.uint8) * 255
        else:
            changed = label_mask(
                image,
                normal,
                rule="published",
                threshold=self.diff_threshold,
                median_size=self.median_size,
            )
            mask = np.where(region.mask, changed, 0).astype(np.uint8)
        if int(np.count_nonzero(mask)) < self.min_mask_pixels:
            return Failure("label mask below min_mask_pixels", region.attempts)
        info = {
            **region.details(),
            "blend_box": region_box(region.mask),
            "steps": self.steps,
            "label_source": self.label,
        }
        return Patched(image, mask, self.method, region.attempts, info)
