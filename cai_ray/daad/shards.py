"""Reading DAAD shards back: records, source patterns for injection, and statistics."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator

import numpy as np

from cai_ray.core.cai import SourcePattern
from cai_ray.core.geometry import Scale, bbox_longest_side, scale_classes
from cai_ray.daad.builders import INDEX_NAME
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.records import RecordLabel, parse_sample
from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, decode_image
from cai_ray.io.tar import iter_tar

log = logging.getLogger(__name__)


def read_index(daad: str) -> dict:
    url = storage.join(daad, INDEX_NAME)
    if not storage.exists(url):
        raise FileNotFoundError(
            f"not a DAAD (no {INDEX_NAME}): {daad}; build one with 'cai-ray daad build'"
        )
    return json.loads(storage.read_bytes(url))


def iter_records(daad: str) -> Iterator[tuple[RecordLabel, bytes, np.ndarray]]:
    for shard in read_index(daad)["shards"]:
        for key, files in iter_tar(storage.read_bytes(storage.join(daad, shard["name"]))):
            yield parse_sample(key, files)


def load_patterns(
    daad: str,
    *,
    mode: ColorMode,
    exclude_domains: list[str] = [],  # noqa: B006 - read only
    include_classes: list[AnomalyClass] | None = None,
) -> list[SourcePattern]:
    """Every usable source pattern of a DAAD, decoded in the targets' colour mode.

    Records from ``exclude_domains`` are never used: the dataset being evaluated must not be a
    source (leakage).
    """
    excluded = set(exclude_domains)
    wanted = set(include_classes) if include_classes else None
    patterns: list[SourcePattern] = []
    dropped: Counter[str] = Counter()
    for label, image_bytes, mask in iter_records(daad):
        if label.domain in excluded:
            dropped[label.domain] += 1
            continue
        if wanted is not None and label.anomaly_class not in wanted:
            continue
        image = decode_image(image_bytes, mode)
        patterns.append(
            SourcePattern.from_full_image(
                image,
                mask,
                anomaly_class=str(label.anomaly_class),
                domain=label.domain,
                record_id=label.record_id,
            )
        )
    if dropped:
        log.info("excluded DAAD domains (leakage guard): %s", dict(dropped))
    if not patterns:
        raise ValueError(
            f"no source patterns left in {daad} after excluding domains {sorted(excluded)} "
            f"and keeping classes {sorted(wanted) if wanted else 'all'}"
        )
    return patterns


def daad_stats(daad: str, *, reference_size: int = 256) -> dict:
    """Counts per class, domain and source scale.

    Source scale is a pattern's class against a ``reference_size`` square target whose whole
    image is foreground: what it can make on a default target (trivial patterns are never used).
    """
    by_class: Counter[str] = Counter()
    by_domain: Counter[str] = Counter()
    by_scale: Counter[str] = Counter()
    by_class_scale: Counter[str] = Counter()
    total = 0
    for label, _, _ in iter_records(daad):
        total += 1
        ratio = bbox_longest_side(label.bbox) / reference_size
        scale = Scale(int(scale_classes(np.array([ratio]))[0])).label
        by_class[str(label.anomaly_class)] += 1
        by_domain[label.domain] += 1
        by_scale[scale] += 1
        by_class_scale[f"{label.anomaly_class}/{scale}"] += 1
    return {
        "records": total,
        "reference_size": reference_size,
        "by_class": dict(sorted(by_class.items())),
        "by_domain": dict(sorted(by_domain.items())),
        "by_source_scale": dict(sorted(by_scale.items())),
        "by_class_and_scale": dict(sorted(by_class_scale.items())),
    }
