"""Building a DAAD from a spec: each source's layout lists its candidates
(:mod:`cai_ray.daad.layouts`, one file per layout), each candidate becomes one record or, with
``regions: split``, one per defect region, and the writer (:mod:`cai_ray.daad.writer`) puts
them in shards.

Nothing here crashes on a bad file: unreadable images or masks, empty masks, size mismatches and
images without masks are skipped and counted with a reason in the build report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from cai_ray.core.geometry import mask_bbox
from cai_ray.daad.layouts.base import BuildReport, Candidate
from cai_ray.daad.layouts.registry import Source
from cai_ray.daad.records import DaadRecord, make_record, pattern_crop_files
from cai_ray.daad.writer import DaadWriter
from cai_ray.io.codecs import DecodeError, decode_image
from cai_ray.io.settings import Settings, load_settings


class DaadSpec(Settings):
    name: str
    sources: list[Source] = Field(min_length=1)
    records_per_shard: int = Field(256, ge=1)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DaadSpec:
        return load_settings(path, cls, "DAAD spec")


def split_regions(
    mask: np.ndarray, min_pixels: int, join_gap: int = 0
) -> tuple[list[np.ndarray], int]:
    """The 8-connected regions of ``mask`` with at least ``min_pixels`` pixels, in label order,
    and how many smaller ones were dropped; regions at most ``join_gap`` (even) pixels apart
    count as one, grouped where discs of radius ``join_gap / 2`` around them touch."""
    binary = mask.astype(np.uint8)
    grouping: np.ndarray = binary
    if join_gap > 0:  # discs of radius join_gap / 2 (even) close gaps up to join_gap
        side = join_gap + 1
        grouping = cv2.dilate(binary, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    count, labels = cv2.connectedComponents(grouping, connectivity=8)
    groups = [(labels == k) & (binary > 0) for k in range(1, count)]
    kept = [group for group in groups if np.count_nonzero(group) >= min_pixels]
    return kept, len(groups) - len(kept)


def _to_records(candidate: Candidate, report: BuildReport) -> list[DaadRecord]:
    """The candidate's record, or with ``regions: split`` one per region (``<id>-r<n>``)."""
    record, image = _to_record(candidate)
    if candidate.source.regions == "whole":
        return [record]
    source = candidate.source
    regions, dropped = split_regions(record.mask, source.min_region_pixels, source.join_gap)
    report.dropped_regions += dropped
    if not regions:
        raise ValueError(f"no region of {candidate.source.min_region_pixels}+ pixels")
    made = []
    for number, region in enumerate(regions, start=1):
        box = mask_bbox(region)
        assert box is not None
        record_id = record.label.record_id + (f"-r{number}" if len(regions) > 1 else "")
        label = replace(record.label, record_id=record_id, bbox=box)
        crop = pattern_crop_files(image, region, label)
        made.append(replace(record, mask=region, label=label, crop_files=crop))
    return made


def _to_record(candidate: Candidate) -> tuple[DaadRecord, np.ndarray]:
    """The candidate's record, and its image decoded (which its regions are cut from)."""
    if candidate.load_mask is None:
        raise ValueError("no mask file")
    try:
        image_bytes = candidate.image_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"unreadable image file ({exc})") from exc
    try:
        mask = candidate.load_mask()
    except DecodeError as exc:
        raise ValueError(f"bad mask: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"unreadable mask file ({exc})") from exc
    ext = candidate.image_path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    source = candidate.source
    image = decode_image(image_bytes)
    record = make_record(
        record_id=candidate.record_id,
        image=image,
        image_bytes=image_bytes,
        image_ext=ext,
        mask=mask,
        anomaly_class=candidate.anomaly_class,
        domain=source.domain,
        dataset=source.dataset or source.domain,
        path=candidate.relative_path,
        license=source.license,
        tags=tuple(dict.fromkeys(source.tags)),
    )
    return record, image


def build_daad(spec: DaadSpec, data_root: str | Path, out: str) -> dict:
    """Build DAAD shards under ``out`` and return the index (which embeds the build report)."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    report = BuildReport()
    seen: set[str] = set()
    writer = DaadWriter(out, spec.records_per_shard)
    for source in spec.sources:
        for candidate in source.candidates(root, report):
            if candidate.record_id in seen:
                report.skip(candidate.relative_path, f"duplicate record id {candidate.record_id}")
                continue
            try:
                records = _to_records(candidate, report)
            except (ValueError, DecodeError) as exc:
                report.skip(candidate.relative_path, str(exc))
                continue
            seen.add(candidate.record_id)
            for record in records:
                report.records += 1
                report.by_class[str(record.label.anomaly_class)] += 1
                report.by_domain[record.label.domain] += 1
                report.by_tag.update(record.label.tags)
                writer.add(record)
    if report.records == 0:
        raise ValueError(f"no usable records in {root} for spec {spec.name!r}")
    return writer.finish(spec.name, spec.model_dump(mode="json"), report.to_dict())
