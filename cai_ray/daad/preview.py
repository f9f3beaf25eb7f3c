"""A DAAD you can look at: a contact sheet with a row per anomaly class, its patterns cut out
(with their context) and each mask outlined, spread over the class's records and domains."""

from __future__ import annotations

import cv2
import numpy as np

from cai_ray.daad.shards import PatternBank, read_index
from cai_ray.io.codecs import to_mode

LABEL_WIDTH = 120


def _cell(image: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """The pattern fitted into a ``size`` square (aspect kept, grey padding), mask outlined."""
    rgb = to_mode(image, "rgb").copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(mask.shape) / size))
    cv2.drawContours(rgb, contours, -1, (255, 0, 0), thickness)
    height, width = mask.shape
    scale = size / max(height, width)
    fitted = cv2.resize(
        rgb,
        (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    cell = np.full((size, size, 3), 64, np.uint8)
    y, x = (size - fitted.shape[0]) // 2, (size - fitted.shape[1]) // 2
    cell[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
    return cell


def _label(text: str, count: int, size: int) -> np.ndarray:
    cell = np.full((size, LABEL_WIDTH, 3), 32, np.uint8)
    for line, (words, scale) in enumerate(((text, 0.5), (f"{count} records", 0.4))):
        cv2.putText(
            cell, words, (6, 22 + 20 * line), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1
        )
    return cell


def contact_sheet(daad: str, *, per_class: int = 8, cell: int = 128) -> np.ndarray:
    """(rows * cell, LABEL_WIDTH + per_class * cell, 3) uint8: a row per class present, with
    ``per_class`` patterns evenly spaced over its records (records are in source order, so
    the spread crosses the sources)."""
    classes = sorted(read_index(daad)["report"]["by_class"])
    rows = []
    for anomaly_class in classes:
        bank = PatternBank(daad, mode="rgb", include_classes=[anomaly_class], cache_bytes=2**26)
        picks = sorted(set(np.linspace(0, len(bank) - 1, min(per_class, len(bank))).round()))
        cells = [_cell(bank[int(i)].image, bank[int(i)].mask, cell) for i in picks]
        cells += [np.full((cell, cell, 3), 64, np.uint8)] * (per_class - len(cells))
        rows.append(np.concatenate([_label(anomaly_class, len(bank), cell), *cells], axis=1))
    return np.concatenate(rows, axis=0)
