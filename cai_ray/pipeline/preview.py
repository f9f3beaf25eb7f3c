"""A preview sheet of a synthesis output: one row per sample, normal | pseudo-anomaly | overlay."""

from __future__ import annotations

import json

import cv2
import numpy as np

from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, decode_image, decode_mask, encode_png, to_mode
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline import layout
from cai_ray.pipeline.stages import load_target


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image in RGB with the mask tinted red and outlined."""
    rgb = to_mode(image, "rgb").copy()
    tint = rgb.astype(np.float32)
    tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([255, 0, 0], np.float32)
    result = tint.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(result, contours, -1, (255, 0, 0), 1)
    return result


def write_preview(out: str, image_size: int, mode: ColorMode, count: int) -> None:
    """Take the first ``count`` pseudo-anomalies of the output and write ``preview.png``."""
    rows: list[np.ndarray] = []
    for index in sorted(layout.committed_shards(out)):
        data = storage.read_bytes(storage.join(out, layout.shard_name(index)))
        for _, files in iter_tar(data):
            meta = json.loads(files["json"])
            if meta["label"] != 1:
                continue
            image = decode_image(files.get("png") or files["jpg"], mode)
            mask = decode_mask(files["mask.png"])
            normal = load_target(meta["target"], image_size, mode)
            cells = [to_mode(normal, "rgb"), to_mode(image, "rgb"), overlay(image, mask)]
            rows.append(np.concatenate(cells, axis=1))
            if len(rows) >= count:
                break
        if len(rows) >= count:
            break
    if rows:
        storage.write_bytes_atomic(
            storage.join(out, layout.PREVIEW_FILE), encode_png(np.concatenate(rows, axis=0))
        )
