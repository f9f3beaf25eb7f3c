"""The stages of the synthesis job as plain batch callables: Ray Data runs them in actor pools,
tests call them on a dict of numpy arrays.

One row is one output shard: its index in (its targets, {index, key, path}, read from the job's
input list, :class:`cai_ray.io.inputs.ShardList`); then the decoded,
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
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from cai_ray import faults
from cai_ray.core.foreground import (
    ForegroundMethod,
    foreground_in_placed,
    make_foreground_extractor,
)
from cai_ray.core.synthesis import BatchSynthesizer, Failure, PseudoAnomaly
from cai_ray.core.views import Geometry
from cai_ray.daad.settings import DaadConfig
from cai_ray.io import storage
from cai_ray.io.codecs import (
    DEFAULT_MAX_PIXELS,
    ColorMode,
    DecodeError,
    ImageFormat,
    load_views,
)
from cai_ray.io.inputs import ListReader, ShardList
from cai_ray.io.layout import JOB_FILE, entry_name, read_json, sample_key, shard_name, write_json
from cai_ray.io.samples import COUNTED_DETAILS, encode_sample
from cai_ray.io.tar import Sample, build_tar
from cai_ray.pipeline.deaths import WORKER_DIED, TargetGuard
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.version import SAMPLES_VERSION

Batch = dict[str, np.ndarray]


def _single_row(batch: Batch) -> dict[str, Any]:
    """The row of a one-row batch: each stage works on one shard at a time (batch_size=1)."""
    sizes = {len(column) for column in batch.values()}
    if sizes != {1}:
        raise ValueError(f"stages take one shard per batch (batch_size=1); got {sizes} rows")
    return {name: column[0] for name, column in batch.items()}


def seed_key(target: dict) -> str:
    """The key that seeds a target's samples: the input's key, with the view's index where
    the geometry cuts several targets from one image."""
    view = target.get("view")
    if view is None or Geometry(mode=view["mode"]).one_view_per_image:
        return str(target["key"])
    return f"{target['key']}#{view['index']}"


def _outside_padding(
    result: PseudoAnomaly | Failure, target: np.ndarray, placed: list[int], label_floor: int
) -> PseudoAnomaly | Failure:
    """A padded target's padding (letterbox, or a side shorter than a crop) as it was and
    unlabelled, whatever a synthesizer did near its edge: only the image is a target. CAI never
    touches it (the padding is not foreground); a baseline's patch may reach over it. A label
    left with fewer than ``label_floor`` pixels is given up, as the synthesizer gives up one
    drawn too small."""
    y0, x0, y1, x1 = placed
    if isinstance(result, Failure) or (y0, x0, y1, x1) == (0, 0, *target.shape[:2]):
        return result
    image, mask = target.copy(), np.zeros_like(result.mask)
    image[y0:y1, x0:x1] = result.image[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] = result.mask[y0:y1, x0:x1]
    if not mask.any():
        return Failure("the anomaly lay on the padding only", result.attempts)
    if np.count_nonzero(mask) < label_floor:
        reason = f"the anomaly's label off the padding is below {label_floor} pixels"
        return Failure(reason, result.attempts)
    # every PseudoAnomaly is a frozen dataclass; the Protocol cannot say so to mypy
    return replace(result, image=image, mask=mask)  # type: ignore[type-var]


class ForegroundStage:
    """Reads a shard's normal images, cuts them into targets (``geometry``) and extracts the
    targets' foregrounds (model loaded once)."""

    def __init__(
        self,
        *,
        image_size: int,
        mode: ColorMode,
        method: ForegroundMethod,
        model_path: str | None,
        min_fraction: float,
        geometry: Geometry | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        shards: ShardList | None = None,
        storage_options: dict[str, Any] | None = None,
        ledger: Any = None,
        memory_limit_mb: int | None = None,
    ) -> None:
        storage.configure(**(storage_options or {}))
        self.shards = shards
        self.reader = ListReader(shards.url) if shards is not None else None
        self.image_size = image_size
        self.mode: ColorMode = mode
        self.min_fraction = min_fraction
        self.geometry = geometry or Geometry()
        self.max_pixels = max_pixels
        self.seed = seed
        self.extract = make_foreground_extractor(method, model_path=model_path)
        self.guard = TargetGuard(ledger, "foreground", memory_limit_mb)

    def process_shard(
        self, targets: list[dict], given_up: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The shard's targets and foregrounds; an input in ``given_up`` (its key: the reason,
        :mod:`cai_ray.pipeline.deaths`) is skipped with that reason, not read."""
        kept: list[dict] = []
        images: list[np.ndarray] = []
        foregrounds: list[np.ndarray] = []
        skipped: list[dict[str, Any]] = []
        geometry = self.geometry
        for target in targets:
            if given_up and target["key"] in given_up:
                skipped.append({"path": target["path"], "reason": given_up[target["key"]]})
                continue
            self.guard.start([target["key"]])
            try:
                views = load_views(
                    target["path"],
                    self.image_size,
                    self.mode,
                    geometry,
                    seed=self.seed,
                    key=target["key"],
                    max_pixels=self.max_pixels,
                    listed_bytes=target.get("listed_bytes"),
                )
            except storage.StorageError:
                raise  # the store gave up, not the input: the job fails and a rerun resumes
            except (OSError, DecodeError) as exc:
                skipped.append({"path": target["path"], "reason": f"unreadable: {exc}"})
                continue
            for view, image, region in views:
                where = {} if geometry.one_view_per_image else {"view": view.index}
                try:
                    foreground = foreground_in_placed(self.extract, image, view.placed)
                except cv2.error as exc:  # e.g. GrabCut on a flat image
                    reason = f"foreground failed: {exc}"
                    skipped.append({"path": target["path"], **where, "reason": reason})
                    continue
                if foreground.sum() < self.min_fraction * region.sum() or not foreground.any():
                    reason = f"foreground below {self.min_fraction:.0%} of the image"
                    skipped.append({"path": target["path"], **where, "reason": reason})
                    continue
                recorded = {"view": view.details(geometry.mode)} if geometry.records_view else {}
                kept.append({**target, **recorded})
                images.append(image)
                foregrounds.append(foreground)
        self.guard.start([])
        empty = np.empty(0, np.uint8)
        return {
            "targets": json.dumps(kept),
            "images": np.stack(images).reshape(-1) if images else empty,
            "foregrounds": np.packbits(np.stack(foregrounds)) if foregrounds else empty,
            "skipped": json.dumps(skipped),
        }

    def shard_targets(self, shard: int) -> list[dict]:
        """The shard's targets, {index, key, path}, from its rows of the input list."""
        if self.shards is None or self.reader is None:
            raise ValueError("this stage was made without the job's shards (ShardList)")
        start, stop = self.shards.rows(shard)
        return self.reader.targets(start, stop, self.shards.root)

    def __call__(self, batch: Batch) -> Batch:
        row = _single_row(batch)
        given_up = self.guard.begin(int(row["shard"]))
        started = storage.retries_made()
        result = self.process_shard(self.shard_targets(int(row["shard"])), given_up)
        self.guard.finish()
        return {
            "shard": np.array([row["shard"]]),
            "targets": np.array([result["targets"]], dtype=object),
            "images": result["images"][None, :],
            "foregrounds": result["foregrounds"][None, :],
            "skipped": np.array([result["skipped"]], dtype=object),
            "storage_retries": np.array([storage.retries_made() - started]),
        }


class InjectionStage:
    """Runs the synthesizer on a shard's targets and commits the shard (sources opened once
    per actor)."""

    def __init__(
        self,
        *,
        synthesizer: MethodSettings,
        daad: DaadConfig | None,
        image_size: int,
        mode: ColorMode,
        seed: int,
        key_prefix: str,
        image_format: ImageFormat,
        include_normal: bool,
        out: str,
        storage_options: dict[str, Any] | None = None,
        ledger: Any = None,
        memory_limit_mb: int | None = None,
    ) -> None:
        storage.configure(**(storage_options or {}))
        self.out = out
        self.context = BuildContext(daad, image_size, mode)
        self.synthesizer = synthesizer.build(self.context)
        self.image_size = image_size
        self.mode: ColorMode = mode
        self.seed = seed
        self.key_prefix = key_prefix
        self.image_format: ImageFormat = image_format
        self.include_normal = include_normal
        self.anomalies_per_target = self.synthesizer.anomalies_per_target
        self.settings = synthesizer
        self.guard = TargetGuard(ledger, "injection", memory_limit_mb)

    def _floor(self, result: PseudoAnomaly | Failure) -> int:
        """The label floor of the synthesizer (a mixture's component) that made ``result``."""
        if isinstance(result, Failure):
            return 0  # kept as it is
        return self.settings.label_floor(result.details())

    def _encode(self, key: str, image: np.ndarray, mask: np.ndarray, meta: dict) -> Sample:
        return key, encode_sample(image, mask, meta, self.image_format)

    def process_shard(
        self,
        index: int,
        targets: list[dict],
        images: np.ndarray,
        foregrounds: np.ndarray,
        skipped: list,
        given_up: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The shard's samples, its tar and entry; a target in ``given_up`` (its seed key: the
        reason, :mod:`cai_ray.pipeline.deaths`) is not synthesised, its samples failed with
        that reason."""
        size = self.image_size
        shape: tuple[int, ...] = (len(targets), size, size) + ((3,) if self.mode == "rgb" else ())
        pixels = images.reshape(shape)
        bits = np.unpackbits(foregrounds, count=len(targets) * size * size)
        masks = bits.astype(bool).reshape(len(targets), size, size)
        samples: list[Sample] = []
        failed: list[dict[str, str]] = []
        counts: dict[str, Counter[str]] = {
            k: Counter() for k in ("method", *COUNTED_DETAILS, "label")
        }
        self.context.damaged.clear()  # per shard: what this shard's draws met
        made = self._synthesize_all(targets, pixels, masks, given_up or {})
        per_target = self.anomalies_per_target + int(self.include_normal)
        for target, image, results in zip(targets, pixels, made, strict=True):
            base = {
                "target": target["key"],
                "seed": self.seed,
                "samples_version": SAMPLES_VERSION,
            }
            first = 0  # a view's samples follow the samples of the image's earlier views
            if "view" in target:
                base["view"] = target["view"]
                first = target["view"]["index"] * per_target
                placed = target["view"]["placed"]
                results = [_outside_padding(r, image, placed, self._floor(r)) for r in results]
            for k, result in enumerate(results):
                key = sample_key(self.key_prefix, target["index"], first + k)
                if isinstance(result, Failure):
                    failed.append({"key": key, "reason": result.reason, "cause": result.counted_as})
                    continue
                details = result.details()
                meta = {
                    **base,
                    **details,
                    "method": result.method,
                    "attempts": result.attempts,
                    "sample_index": first + k,
                    "label": 1,
                }
                samples.append(self._encode(key, result.image, result.mask, meta))
                counts["method"][result.method] += 1
                for name in COUNTED_DETAILS:
                    if name in details:
                        counts[name][details[name]] += 1
                counts["label"]["1"] += 1
            if self.include_normal:
                k = first + self.anomalies_per_target
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
            "targets": len({t["path"] for t in targets} | {skip["path"] for skip in skipped}),
            "views": len(targets),
            "samples": len(samples),
            "bytes": len(tar),
            "sha256": hashlib.sha256(tar).hexdigest(),
            "counts": {name: dict(sorted(c.items())) for name, c in counts.items()},
            "skipped_inputs": skipped,
            "failed_samples": failed,
            "damaged_sources": dict(sorted(self.context.damaged.items())),
        }
        return {"tar": tar, "entry": json.dumps(entry)}

    def _synthesize_all(
        self,
        targets: list[dict],
        pixels: np.ndarray,
        masks: np.ndarray,
        given_up: dict[str, str],
    ) -> list[Sequence[PseudoAnomaly | Failure]]:
        """Every target's results: in one call for a synthesizer that batches across targets
        (the CDM on a GPU), else target by target, each with the shard's other targets as
        donors (NSA's patch sources; a target given up still lends its pixels, so the others'
        samples stay the same). A target given up gets failures with its reason."""
        keys = [seed_key(target) for target in targets]
        todo = [i for i, key in enumerate(keys) if key not in given_up]
        made: dict[int, Sequence[PseudoAnomaly | Failure]] = {}
        if isinstance(self.synthesizer, BatchSynthesizer):
            self.guard.start([keys[i] for i in todo])
            items = [(pixels[i], masks[i], keys[i]) for i in todo]
            if items:
                results = self.synthesizer.synthesize_many(items, seed=self.seed)
                made = dict(zip(todo, results, strict=True))
        else:
            for i in todo:
                self.guard.start([keys[i]])
                made[i] = self.synthesizer.synthesize(
                    pixels[i],
                    masks[i],
                    seed=self.seed,
                    target_key=keys[i],
                    donors=[(pixels[j], masks[j]) for j in range(len(targets)) if j != i],
                )
        self.guard.start([])
        return [
            made[i]
            if i in made
            else [Failure(given_up[key], 0, WORKER_DIED)] * self.anomalies_per_target
            for i, key in enumerate(keys)
        ]

    def commit(self, index: int, tar: bytes, entry: str, retried: int) -> str:
        """The tar first, then its entry: a shard counts as done only once both exist. The
        actor that made the tar writes it, so shard bytes never pass through the object store.
        The entry written (and returned) records ``storage_retries``: ``retried``, the
        object-store requests retried for the shard before (reading its inputs), plus those of
        uploading its tar; those of uploading the entry itself cannot be in it."""
        started = storage.retries_made()
        storage.write_bytes_atomic(storage.join(self.out, shard_name(index)), tar)
        fault = None
        if faults.armed(faults.LAST_SHARD):  # a test hook: the job's last shard, by its job file
            last = read_json(storage.join(self.out, JOB_FILE))["shards"] - 1
            fault = faults.LAST_SHARD if index == last else None
        written = {
            **json.loads(entry),
            "storage_retries": retried + storage.retries_made() - started,
        }
        write_json(storage.join(self.out, entry_name(index)), written, fault=fault)
        return json.dumps(written)

    def __call__(self, batch: Batch) -> Batch:
        row = _single_row(batch)
        index = int(row["shard"])
        given_up = self.guard.begin(index)
        started = storage.retries_made()
        result = self.process_shard(
            index,
            json.loads(row["targets"]),
            row["images"],
            row["foregrounds"],
            json.loads(row["skipped"]),
            given_up,
        )
        before_commit = int(row["storage_retries"]) + storage.retries_made() - started
        entry = self.commit(index, result["tar"], result["entry"], before_commit)
        self.guard.finish()
        return {
            "shard": np.array([index]),
            "entry": np.array([entry], dtype=object),
            # the shard's retries in all, the entry's upload's too: the driver's report counts them
            "storage_retries": np.array(
                [int(row["storage_retries"]) + storage.retries_made() - started]
            ),
        }
