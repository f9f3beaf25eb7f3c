"""The stages of the synthesis job as plain batch callables: Ray Data runs them in actor pools,
tests call them on a dict of numpy arrays.

One row is one output shard: ``targets`` (JSON list of {index, key, path}) in; then the decoded,
resized targets with their packed foregrounds; then, once the injection actor has made and
committed the shard, its entry. Pixels travel as flat uint8 arrays, which Ray Data moves without
the conversions a Python ``bytes`` column costs; the shard's tar (about 14 MB) never enters the
object store at all.
Keeping a shard in one row keeps shard boundaries (and so the bytes of every shard) independent
of how Ray splits or schedules the work.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from cai_ray import __version__
from cai_ray.baselines.cutpaste import CutPaste
from cai_ray.baselines.draem import Draem
from cai_ray.baselines.nsa import NSA
from cai_ray.config import (
    CAIMethod,
    CDMMethod,
    CutPasteMethod,
    DaadConfig,
    NSAMethod,
    SynthesizerConfig,
)
from cai_ray.core.cai import CAIInjector, CAIParams
from cai_ray.core.foreground import ForegroundMethod, make_foreground_extractor
from cai_ray.core.synthesis import BatchSynthesizer, Failure, PseudoAnomaly, Synthesizer
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.shards import PatternBank
from cai_ray.io import storage
from cai_ray.io.codecs import (
    ColorMode,
    DecodeError,
    ImageFormat,
    decode_image,
    encode_image,
    resize,
)
from cai_ray.io.tar import Sample, build_tar
from cai_ray.pipeline.layout import entry_name, sample_key, shard_name, write_json

Batch = dict[str, np.ndarray]


def _single_row(batch: Batch) -> dict[str, Any]:
    """The row of a one-row batch: each stage works on one shard at a time (batch_size=1)."""
    sizes = {len(column) for column in batch.values()}
    if sizes != {1}:
        raise ValueError(f"stages take one shard per batch (batch_size=1); got {sizes} rows")
    return {name: column[0] for name, column in batch.items()}


def load_target(path: str, size: int, mode: ColorMode) -> np.ndarray:
    """A normal image as the job sees it: decoded in ``mode`` and resized to ``size``."""
    return resize(decode_image(storage.read_bytes(path), mode), size)


class ForegroundStage:
    """Reads a shard's normal images and extracts their foregrounds (model loaded once)."""

    def __init__(
        self,
        *,
        image_size: int,
        mode: ColorMode,
        method: ForegroundMethod,
        model_path: str | None,
        min_fraction: float,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        storage.configure(**(storage_options or {}))
        self.image_size = image_size
        self.mode: ColorMode = mode
        self.min_fraction = min_fraction
        self.extract = make_foreground_extractor(method, model_path=model_path)

    def process_shard(self, targets: list[dict]) -> dict[str, Any]:
        kept: list[dict] = []
        images: list[np.ndarray] = []
        foregrounds: list[np.ndarray] = []
        skipped: list[dict[str, str]] = []
        for target in targets:
            try:
                image = load_target(target["path"], self.image_size, self.mode)
            except (OSError, DecodeError) as exc:
                skipped.append({"path": target["path"], "reason": f"unreadable: {exc}"})
                continue
            try:
                foreground = self.extract(image)
            except cv2.error as exc:  # e.g. GrabCut on a flat image
                skipped.append({"path": target["path"], "reason": f"foreground failed: {exc}"})
                continue
            if foreground.mean() < self.min_fraction or not foreground.any():
                reason = f"foreground below {self.min_fraction:.0%} of the image"
                skipped.append({"path": target["path"], "reason": reason})
                continue
            kept.append(target)
            images.append(image)
            foregrounds.append(foreground)
        empty = np.empty(0, np.uint8)
        return {
            "targets": json.dumps(kept),
            "images": np.stack(images).reshape(-1) if images else empty,
            "foregrounds": np.packbits(np.stack(foregrounds)) if foregrounds else empty,
            "skipped": json.dumps(skipped),
        }

    def __call__(self, batch: Batch) -> Batch:
        row = _single_row(batch)
        result = self.process_shard(json.loads(row["targets"]))
        return {
            "shard": np.array([row["shard"]]),
            "targets": np.array([result["targets"]], dtype=object),
            "images": result["images"][None, :],
            "foregrounds": result["foregrounds"][None, :],
            "skipped": np.array([result["skipped"]], dtype=object),
        }


class TextureFolder:
    """Texture images read on demand from a sorted list of paths, resized to the targets' size
    and mode (DRAEM's anomaly sources); the last few decoded ones are kept."""

    def __init__(self, paths: list[str], size: int, mode: ColorMode, keep: int = 64) -> None:
        if not paths:
            raise ValueError("the texture list is empty")
        self.paths = paths
        self.size = size
        self.mode: ColorMode = mode
        self.keep = keep
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            path = self.paths[index]
            try:
                self._cache[index] = load_target(path, self.size, self.mode)
            except (OSError, DecodeError) as exc:
                raise ValueError(f"texture {path} is unreadable: {exc}") from exc
        return self._cache[index]


def make_synthesizer(
    method: SynthesizerConfig,
    *,
    cai: CAIParams,
    daad: DaadConfig | None,
    image_size: int,
    mode: ColorMode,
) -> Synthesizer:
    """The configured synthesizer with its sources opened (a DAAD, or a texture folder)."""
    if isinstance(method, CAIMethod):
        if daad is None:
            raise ValueError("synthesizer 'cai' needs a DAAD")
        patterns = PatternBank(
            daad.path,
            mode=mode,
            exclude_domains=daad.exclude_domains,
            include_classes=daad.include_classes,
            cache_bytes=daad.cache_mb * 2**20,
        )
        return CAIInjector(patterns, cai)
    if isinstance(method, CDMMethod):
        if daad is None:
            raise ValueError("synthesizer 'cdm' needs a DAAD (its masks)")
        return _open_cdm(method, cai, daad, mode)
    if isinstance(method, CutPasteMethod):
        return CutPaste(method)
    if isinstance(method, NSAMethod):
        return NSA(method)
    return Draem(TextureFolder(method.textures, image_size, mode), method)


def _open_cdm(method: CDMMethod, cai: CAIParams, daad: DaadConfig, mode: ColorMode) -> Synthesizer:
    """The trained CDM on this actor's device, with masks from the DAAD records of the classes
    it generates."""
    import torch

    from cai_ray.cdm.classes import generated_classes
    from cai_ray.cdm.masks import MaskGenerator
    from cai_ray.cdm.sampler import CDMSynthesizer, make_scheduler
    from cai_ray.cdm.train import autocast_dtype, load_cdm

    unet, schedule, info = load_cdm(method.checkpoint)
    classes = generated_classes(info["classes"], method.classes, method.checkpoint)
    if daad.include_classes:
        classes = [c for c in classes if c in set(map(str, daad.include_classes))]
    patterns = PatternBank(
        daad.path,
        mode=mode,
        exclude_domains=daad.exclude_domains,
        include_classes=[AnomalyClass(c) for c in classes],
        cache_bytes=daad.cache_mb * 2**20,
    )
    wanted = method.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("synthesizer.device is 'cuda' but this actor sees no GPU")
    device = torch.device("cuda" if wanted != "cpu" and torch.cuda.is_available() else "cpu")
    return CDMSynthesizer(
        unet,
        make_scheduler(method.scheduler, schedule),
        MaskGenerator(patterns, cai, method.affine),
        image_size=info["image_size"],
        channels=info["channels"],
        steps=method.steps,
        batch_size=method.batch_size,
        device=device,
        dtype=autocast_dtype(method.precision, device),
        label=method.label,
        diff_threshold=cai.diff_threshold,
        median_size=cai.median_size,
        min_mask_pixels=cai.min_mask_pixels,
    )


class InjectionStage:
    """Runs the synthesizer on a shard's targets and commits the shard (sources opened once
    per actor)."""

    def __init__(
        self,
        *,
        synthesizer: SynthesizerConfig,
        cai: CAIParams,
        daad: DaadConfig | None,
        image_size: int,
        mode: ColorMode,
        seed: int,
        key_prefix: str,
        image_format: ImageFormat,
        include_normal: bool,
        out: str,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        storage.configure(**(storage_options or {}))
        self.out = out
        self.synthesizer = make_synthesizer(
            synthesizer, cai=cai, daad=daad, image_size=image_size, mode=mode
        )
        self.image_size = image_size
        self.mode: ColorMode = mode
        self.seed = seed
        self.key_prefix = key_prefix
        self.image_format: ImageFormat = image_format
        self.include_normal = include_normal
        self.anomalies_per_target = self.synthesizer.anomalies_per_target

    def _encode(self, key: str, image: np.ndarray, mask: np.ndarray, meta: dict) -> Sample:
        return key, {
            self.image_format: encode_image(image, self.image_format),
            "mask.png": encode_image(mask, "png"),
            "json": json.dumps(meta, sort_keys=True).encode(),
        }

    def process_shard(
        self,
        index: int,
        targets: list[dict],
        images: np.ndarray,
        foregrounds: np.ndarray,
        skipped: list,
    ) -> dict[str, Any]:
        size = self.image_size
        shape: tuple[int, ...] = (len(targets), size, size) + ((3,) if self.mode == "rgb" else ())
        pixels = images.reshape(shape)
        bits = np.unpackbits(foregrounds, count=len(targets) * size * size)
        masks = bits.astype(bool).reshape(len(targets), size, size)
        samples: list[Sample] = []
        failed: list[dict[str, str]] = []
        counts: dict[str, Counter[str]] = {
            k: Counter() for k in ("method", "anomaly_class", "scale", "label")
        }
        made = self._synthesize_all(targets, pixels, masks)
        for target, image, results in zip(targets, pixels, made, strict=True):
            base = {
                "target": target["key"],
                "seed": self.seed,
                "version": __version__,
            }
            for k, result in enumerate(results):
                key = sample_key(self.key_prefix, target["index"], k)
                if isinstance(result, Failure):
                    failed.append({"key": key, "reason": result.reason})
                    continue
                details = result.details()
                meta = {
                    **base,
                    **details,
                    "method": result.method,
                    "attempts": result.attempts,
                    "sample_index": k,
                    "label": 1,
                }
                samples.append(self._encode(key, result.image, result.mask, meta))
                counts["method"][result.method] += 1
                for name in ("anomaly_class", "scale"):
                    if name in details:
                        counts[name][details[name]] += 1
                counts["label"]["1"] += 1
            if self.include_normal:
                k = self.anomalies_per_target
                meta = {**base, "method": "none", "label": 0, "sample_index": k}
                empty = np.zeros(image.shape[:2], np.uint8)
                samples.append(
                    self._encode(
                        sample_key(self.key_prefix, target["index"], k), image, empty, meta
                    )
                )
                counts["method"]["none"] += 1
                counts["label"]["0"] += 1
        tar = build_tar(samples)
        entry = {
            "shard": shard_name(index),
            "index": index,
            "targets": len(targets) + len(skipped),
            "samples": len(samples),
            "bytes": len(tar),
            "sha256": hashlib.sha256(tar).hexdigest(),
            "counts": {name: dict(sorted(c.items())) for name, c in counts.items()},
            "skipped_inputs": skipped,
            "failed_samples": failed,
        }
        return {"tar": tar, "entry": json.dumps(entry)}

    def _synthesize_all(
        self, targets: list[dict], pixels: np.ndarray, masks: np.ndarray
    ) -> list[Sequence[PseudoAnomaly | Failure]]:
        """Every target's results: in one call for a synthesizer that batches across targets
        (the CDM on a GPU), else target by target, each with the shard's other targets as
        donors (NSA's patch sources)."""
        if isinstance(self.synthesizer, BatchSynthesizer):
            items = [(pixels[i], masks[i], t["key"]) for i, t in enumerate(targets)]
            return list(self.synthesizer.synthesize_many(items, seed=self.seed))
        return [
            self.synthesizer.synthesize(
                pixels[i],
                masks[i],
                seed=self.seed,
                target_key=target["key"],
                donors=[(pixels[j], masks[j]) for j in range(len(targets)) if j != i],
            )
            for i, target in enumerate(targets)
        ]

    def commit(self, index: int, tar: bytes, entry: str) -> None:
        """The tar first, then its entry: a shard counts as done only once both exist. The
        actor that made the tar writes it, so shard bytes never pass through the object store."""
        storage.write_bytes_atomic(storage.join(self.out, shard_name(index)), tar)
        write_json(storage.join(self.out, entry_name(index)), json.loads(entry))

    def __call__(self, batch: Batch) -> Batch:
        row = _single_row(batch)
        index = int(row["shard"])
        result = self.process_shard(
            index,
            json.loads(row["targets"]),
            row["images"],
            row["foregrounds"],
            json.loads(row["skipped"]),
        )
        self.commit(index, result["tar"], result["entry"])
        return {"shard": np.array([index]), "entry": np.array([result["entry"]], dtype=object)}
