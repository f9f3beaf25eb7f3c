"""Our DST Poisson solver against cv2.seamlessClone, by patch size, on a real tile and crack.

Both solve the same equation over the patch (the mask's bounding box) in normal mode; the
timings include everything each call does. cv2 needs a 3-channel image, so it is timed on the
grey target replicated to BGR (what a caller would have to do) and, for reference, ours on both.

    python bench/bench_poisson.py
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from common import SHARED, TILES, report

from cai_ray.core.poisson import fast_rect_length, poisson_blend
from cai_ray.io.codecs import decode_image, decode_mask, resize


def _time(fn, *args, repeats: int = 30) -> float:
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - start) / repeats * 1000


def _cv2_clone(source, target, mask, centre):
    # seamlessClone erodes the mask it is given in place: hand it a copy each time
    return cv2.seamlessClone(source, target, mask.copy(), centre, cv2.NORMAL_CLONE)


def main() -> None:
    target = resize(decode_image(sorted(TILES.glob("*.jpg"))[0].read_bytes(), "grey"), 512)
    crack = sorted((SHARED / "deepcrack" / "train_img").glob("*.jpg"))[7]
    source_full = decode_image(crack.read_bytes(), "grey")
    mask_full = decode_mask((SHARED / "deepcrack" / "train_lab" / f"{crack.stem}.png").read_bytes())
    figures: dict[str, float | int | str] = {}
    for size in (50, 100, 200, 256):
        source = cv2.resize(source_full, (size, size))
        mask = cv2.resize(mask_full.astype(np.uint8) * 255, (size, size)) > 127
        region = np.zeros((size, size), np.uint8)
        region[4:-4, 4:-4] = mask[4:-4, 4:-4] * 255
        region[size // 2, 4:-4] = 255  # keep the bounding box the whole patch
        region[4:-4, size // 2] = 255
        y0 = x0 = 100
        placed = target.copy()
        placed[y0 : y0 + size, x0 : x0 + size] = source
        full_mask = np.zeros_like(target)
        full_mask[y0 : y0 + size, x0 : x0 + size] = region
        centre = (x0 + size // 2, y0 + size // 2)
        bgr_src, bgr_dst = (
            cv2.cvtColor(placed, cv2.COLOR_GRAY2BGR),
            cv2.cvtColor(target, cv2.COLOR_GRAY2BGR),
        )
        cv2_ms = _time(_cv2_clone, bgr_src, bgr_dst, full_mask, centre)
        rect = (slice(y0, y0 + size), slice(x0, x0 + size))
        omega = region > 0
        ours_ms = _time(poisson_blend, placed[rect], target[rect], omega)
        ours_bgr_ms = _time(poisson_blend, bgr_src[rect], bgr_dst[rect], omega)
        wide = fast_rect_length(size)  # how the injector sizes its rectangles
        fast = (slice(y0, y0 + wide), slice(x0, x0 + wide))
        fast_omega = np.zeros((wide, wide), bool)
        fast_omega[:size, :size] = omega
        ours_fast_ms = _time(poisson_blend, placed[fast], target[fast], fast_omega)
        figures[f"cv2_ms_{size}"] = cv2_ms
        figures[f"ours_grey_fast_rect_ms_{size}"] = ours_fast_ms
        figures[f"ours_grey_ms_{size}"] = ours_ms
        figures[f"ours_bgr_ms_{size}"] = ours_bgr_ms
        figures[f"speedup_bgr_{size}"] = cv2_ms / ours_bgr_ms
    report(figures)


if __name__ == "__main__":
    main()
