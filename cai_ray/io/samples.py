"""One sample of a synthesis output as it lies in a shard: the image (``png`` or ``jpg``), its
label mask (``mask.png``, uint8 {0, 255}) and its metadata (``json``). Written by the injection
stage; read back by verify, the preview, the benchmark report and both training loops."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cai_ray.io.codecs import ColorMode, ImageFormat, decode_image, decode_mask, encode_image

IMAGE_MEMBERS: tuple[ImageFormat, ...] = ("png", "jpg")
MASK_MEMBER = "mask.png"
META_MEMBER = "json"
COUNTED_DETAILS = ("component", "anomaly_class", "scale")
"""The fields of a sample's json that shard entries and the manifest count, besides its
``method`` and ``label`` (where a sample has them)."""


class SampleError(ValueError):
    """A sample without exactly one image, a mask and its metadata."""


def encode_sample(
    image: np.ndarray, mask: np.ndarray, meta: dict[str, Any], image_format: ImageFormat
) -> dict[str, bytes]:
    """The members of one sample; the metadata with sorted keys, so bytes are reproducible."""
    return {
        image_format: encode_image(image, image_format),
        MASK_MEMBER: encode_image(mask, "png"),
        META_MEMBER: json.dumps(meta, sort_keys=True).encode(),
    }


def image_member(files: dict[str, bytes]) -> str:
    """The member that holds the sample's image."""
    found = [name for name in IMAGE_MEMBERS if name in files]
    if len(found) != 1 or MASK_MEMBER not in files or META_MEMBER not in files:
        raise SampleError(f"expected one image and mask.png + json, got {sorted(files)}")
    return found[0]


def read_meta(files: dict[str, bytes]) -> dict[str, Any]:
    return dict(json.loads(files[META_MEMBER]))


def view_index(meta: dict[str, Any]) -> int:
    """Which of its input image's targets a sample was made from (0 where an image makes one
    target: ``inputs.geometry`` resize or letterbox)."""
    return int(meta.get("view", {}).get("index", 0))


def decode_sample(
    files: dict[str, bytes], mode: ColorMode | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(image in ``mode``, bool mask) of one sample; :func:`read_meta` reads its metadata."""
    image = decode_image(files[image_member(files)], mode)
    return image, decode_mask(files[MASK_MEMBER])
