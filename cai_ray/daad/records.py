"""One DAAD record and its form inside a shard.

A record keeps the source image's original bytes (no re-encoding loss), a binary mask PNG and a
JSON label: class, domain, source dataset and path, license tag, the mask's bounding box and its
source's tags (where it has some).
Where it pays, it also keeps its pattern's crop (``crop.png``, ``crop.mask.png``), so that
injection decodes the crop instead of the whole source image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Annotated

import numpy as np
from pydantic import StringConstraints

from cai_ray.core.cai import SourcePattern
from cai_ray.core.duplicates import fingerprint
from cai_ray.core.geometry import mask_bbox
from cai_ray.daad.classes import AnomalyClass
from cai_ray.io.codecs import decode_mask, encode_image

PATTERN_IMAGE = "crop.png"
PATTERN_MASK = "crop.mask.png"
PATTERN_CROP_MAX_SHARE = 0.6
"""A record keeps its pattern crop (mask box plus context, lossless PNG) when the crop has at
most this share of the source image's pixels: there the crop decodes in at most half the time
of the record's image and mask; above it the gain shrinks while the crop's bytes grow to three
times a JPEG source's (docs/BENCHMARKS.md, "A first read made cheap")."""

MAX_KEY_LENGTH = 80
"""Tar member names (key, a region suffix ``-r<n>``, ".", a member name of at most 13
characters: ``crop.mask.png``) must fit ustar's 100 characters."""


Tag = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
"""A record's tag, declared by its source in the DAAD spec (e.g. ``foreign_object``): lower
case letters, digits and underscores. A job may leave tagged records out (``exclude_tags``)."""


def safe_key_part(text: str) -> str:
    """A key fragment without dots or slashes (WebDataset splits member names at the first dot),
    at most :data:`MAX_KEY_LENGTH` long: a longer one (an export's hashed file names) keeps its
    start and ends with a digest of the whole, so it stays unique."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - len(digest) - 1]}_{digest}"


@dataclass(frozen=True)
class RecordLabel:
    record_id: str
    anomaly_class: AnomalyClass
    domain: str
    dataset: str
    path: str
    license: str
    bbox: tuple[int, int, int, int]
    height: int
    width: int
    image_ext: str
    tags: tuple[str, ...] = ()
    """Its source's tags (in the record's JSON only where there are some, so an untagged
    record's bytes are those of a DAAD built before tags existed)."""


@dataclass(frozen=True)
class DaadRecord:
    label: RecordLabel
    image_bytes: bytes
    mask: np.ndarray
    fingerprint: np.ndarray
    """The image's near-duplicate fingerprint (:mod:`cai_ray.core.duplicates`), for the
    records table; not stored in the shard."""
    crop_files: dict[str, bytes] = field(default_factory=dict)
    """The pattern crop's members (:func:`pattern_crop_files`), made while the image is
    decoded anyway."""

    def to_sample(self) -> tuple[str, dict[str, bytes]]:
        label = asdict(self.label)
        label["anomaly_class"] = str(self.label.anomaly_class)
        if self.label.tags:
            label["tags"] = list(self.label.tags)
        else:
            del label["tags"]
        files = {
            self.label.image_ext: self.image_bytes,
            "mask.png": encode_image(self.mask.astype(np.uint8) * 255, "png"),
            "json": json.dumps(label, sort_keys=True).encode(),
        }
        return self.label.record_id, {**files, **self.crop_files}


def pattern_crop_files(image: np.ndarray, mask: np.ndarray, label: RecordLabel) -> dict[str, bytes]:
    """The members that keep a record's pattern crop, as injection cuts it from the decoded
    ``image``; none where the crop has more than :data:`PATTERN_CROP_MAX_SHARE` of it."""
    pattern = SourcePattern.from_full_image(
        image,
        mask,
        anomaly_class=str(label.anomaly_class),
        domain=label.domain,
        record_id=label.record_id,
    )
    if pattern.mask.size > PATTERN_CROP_MAX_SHARE * mask.size:
        return {}
    return {
        PATTERN_IMAGE: encode_image(pattern.image, "png"),
        PATTERN_MASK: encode_image(pattern.mask.astype(np.uint8) * 255, "png"),
    }


def make_record(
    *,
    record_id: str,
    image: np.ndarray,
    image_bytes: bytes,
    image_ext: str,
    mask: np.ndarray,
    anomaly_class: AnomalyClass,
    domain: str,
    dataset: str,
    path: str,
    license: str,
    tags: tuple[str, ...] = (),
) -> DaadRecord:
    """Validate a candidate and build its record from its bytes and its decoded ``image``
    (as the file holds it); ``ValueError`` says why it is unusable."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    box = mask_bbox(mask)
    if box is None:
        raise ValueError("mask is empty")
    if mask.all():
        raise ValueError("mask covers the whole image (an inverted mask, or no defect outlined)")
    label = RecordLabel(
        record_id=record_id,
        anomaly_class=anomaly_class,
        domain=domain,
        dataset=dataset,
        path=path,
        license=license,
        bbox=box,
        height=int(mask.shape[0]),
        width=int(mask.shape[1]),
        image_ext=image_ext,
        tags=tags,
    )
    return DaadRecord(
        label=label,
        image_bytes=image_bytes,
        mask=mask,
        fingerprint=fingerprint(image),
        crop_files=pattern_crop_files(image, mask, label),
    )


def parse_sample(key: str, files: dict[str, bytes]) -> tuple[RecordLabel, bytes, np.ndarray]:
    """Label, original image bytes and mask of a record read back from a shard."""
    raw = json.loads(files["json"])
    label = RecordLabel(
        record_id=raw["record_id"],
        anomaly_class=AnomalyClass(raw["anomaly_class"]),
        domain=raw["domain"],
        dataset=raw["dataset"],
        path=raw["path"],
        license=raw["license"],
        bbox=(int(raw["bbox"][0]), int(raw["bbox"][1]), int(raw["bbox"][2]), int(raw["bbox"][3])),
        height=raw["height"],
        width=raw["width"],
        image_ext=raw["image_ext"],
        tags=tuple(raw.get("tags", ())),
    )
    if label.record_id != key:
        raise ValueError(f"record key {key!r} does not match its label id {label.record_id!r}")
    return label, files[label.image_ext], decode_mask(files["mask.png"])
