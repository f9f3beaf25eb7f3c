"""A preview sheet of a synthesis output: one row per sample, normal | pseudo-anomaly | overlay."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cai_ray.config import SynthConfig
from cai_ray.io import layout, storage
from cai_ray.io.codecs import ColorMode, load_views, to_mode
from cai_ray.io.png import encode_png
from cai_ray.io.samples import decode_sample, read_meta, view_index
from cai_ray.io.tar import iter_tar


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image in RGB with the mask tinted red and outlined."""
    rgb = to_mode(image, "rgb").copy()
    tint = rgb.astype(np.float32)
    tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([255, 0, 0], np.float32)
    result = tint.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(result, contours, -1, (255, 0, 0), 1)
    return result


@dataclass(frozen=True)
class PreviewSample:
    target: str
    anomaly_class: str
    files: dict[str, bytes]
    meta: dict


def _candidates(out: str, wanted_targets: int, max_shards: int) -> list[PreviewSample]:
    """Pseudo-anomalies from the first committed shards, until ``wanted_targets`` targets have
    some (at most ``max_shards`` shards are read, so a huge output stays cheap)."""
    found: list[PreviewSample] = []
    targets: set[str] = set()
    for index in sorted(layout.committed_indices(out))[:max_shards]:
        data = storage.read_bytes(storage.join(out, layout.shard_name(index)))
        for _, files in iter_tar(data):
            meta = read_meta(files)
            if meta["label"] == 1:
                kind = meta.get("anomaly_class") or meta["method"]  # baselines have no class
                found.append(PreviewSample(meta["target"], kind, files, meta))
                targets.add(meta["target"])
        if len(targets) >= wanted_targets:
            break
    return found


def pick_varied(candidates: list[PreviewSample], count: int) -> list[PreviewSample]:
    """``count`` candidates, each preferring a target, then a class, then a scale not shown yet
    (in output order among equals), so the sheet shows the variety of the output."""
    pool = list(candidates)
    chosen: list[PreviewSample] = []
    shown: tuple[set, set, set] = (set(), set(), set())

    def traits(candidate: PreviewSample) -> tuple[str, str, str]:
        return candidate.target, candidate.anomaly_class, str(candidate.meta.get("scale"))

    while pool and len(chosen) < count:
        best = min(
            range(len(pool)),
            key=lambda i: (*(t in s for t, s in zip(traits(pool[i]), shown, strict=True)), i),
        )
        pick = pool.pop(best)
        chosen.append(pick)
        for trait, seen in zip(traits(pick), shown, strict=True):
            seen.add(trait)
    return chosen


def _caption(cell: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(cell, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(cell, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return cell


def write_preview(out: str, config: SynthConfig, mode: ColorMode) -> None:
    """``preview.png``: ``output.preview_samples`` pseudo-anomalies of different targets and
    classes, a row each (normal | pseudo-anomaly, captioned with class and scale | mask
    overlay)."""
    job = layout.read_json(storage.join(out, layout.JOB_FILE))
    count, geometry = config.output.preview_samples, config.inputs.geometry
    rows: list[np.ndarray] = []
    for pick in pick_varied(_candidates(out, count, max_shards=max(4, count)), count):
        files = pick.files
        image, mask = decode_sample(files, mode)
        views = load_views(
            storage.join(job["inputs_root"], pick.target),
            config.image_size,
            mode,
            geometry,
            seed=config.seed,
            key=pick.target,
            max_pixels=config.inputs.max_pixels,
        )
        normal = views[view_index(pick.meta)][1]
        caption = f"{pick.anomaly_class} {pick.meta.get('scale') or ''}".strip()
        cells = [to_mode(normal, "rgb"), _caption(to_mode(image, "rgb").copy(), caption)]
        rows.append(np.concatenate([*cells, overlay(image, mask)], axis=1))
    if rows:
        storage.write_bytes_atomic(
            storage.join(out, layout.PREVIEW_FILE), encode_png(np.concatenate(rows, axis=0))
        )
