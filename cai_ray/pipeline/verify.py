"""Re-read a synthesis output and check it against its job file and manifest.

Checks: every planned shard is committed (no gaps) and no stray shard exists; each tar is
readable and matches its entry's checksum and counts; keys are well formed, unique, and belong
to the shard's targets; each sample has an image, a binary {0, 255} mask of the image's size and
a JSON label consistent with the mask; every target is accounted for (its samples, failed
samples and skipped inputs add up); totals match the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cai_ray.core.views import WHOLE_IMAGE_MODES
from cai_ray.io import layout, storage
from cai_ray.io.codecs import DecodeError, decode_image
from cai_ray.io.samples import MASK_MEMBER, SampleError, image_member, read_meta, view_index
from cai_ray.io.tar import iter_tar


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_sample(key: str, files: dict[str, bytes], problems: list[str]) -> dict | None:
    try:
        image = decode_image(files[image_member(files)])
        meta = read_meta(files)
        raw_mask = decode_image(files[MASK_MEMBER])
    except SampleError as exc:
        problems.append(f"{key}: {exc}")
        return None
    except (json.JSONDecodeError, DecodeError) as exc:
        problems.append(f"{key}: unreadable member ({exc})")
        return None
    if raw_mask.shape != image.shape[:2]:
        problems.append(
            f"{key}: mask {raw_mask.shape} is not the size of its image {image.shape[:2]}"
        )
    if not np.isin(raw_mask, (0, 255)).all():
        problems.append(f"{key}: mask is not binary (values other than 0 and 255)")
    has_defect = bool((raw_mask >= 128).any())  # decode_mask's rule, without decoding again
    if meta.get("label") not in (0, 1) or bool(meta["label"]) != has_defect:
        problems.append(f"{key}: label {meta.get('label')!r} disagrees with its mask")
    return meta


def verify_output(out: str) -> VerifyReport:
    report = VerifyReport()
    problems = report.problems
    job_url = storage.join(out, layout.JOB_FILE)
    if not storage.exists(job_url):
        problems.append(f"no {layout.JOB_FILE} in {out}: not a cai-ray output")
        return report
    job = layout.read_json(job_url)
    manifest_url = storage.join(out, layout.MANIFEST_FILE)
    manifest = layout.read_json(manifest_url) if storage.exists(manifest_url) else None
    if manifest is None:
        problems.append(f"no {layout.MANIFEST_FILE}: the job did not finish")
    entries = layout.committed_shards(out)
    planned = set(range(job["shards"]))
    gaps = sorted(planned - set(entries))
    if gaps:
        problems.append(
            f"{len(gaps)} shard(s) missing, e.g. {[layout.shard_name(i) for i in gaps[:5]]}"
        )
    stray = sorted(set(entries) - planned)
    if stray:
        problems.append(f"shards outside the plan: {[layout.shard_name(i) for i in stray[:5]]}")

    per_target, per_shard = job["samples_per_target"], job["targets_per_shard"]
    key_pattern = layout.sample_key_pattern(job["key_prefix"])
    geometry = job["config"]["inputs"].get("geometry", {"mode": "resize"})
    one_view = geometry["mode"] in WHOLE_IMAGE_MODES  # else several targets an image
    seen: set[str] = set()
    totals: dict[str, Counter[str]] = {}
    for index in sorted(entries):
        entry, name = entries[index], layout.shard_name(index)
        data = storage.read_bytes(storage.join(out, name))
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: checksum differs from its entry")
        first, last = index * per_shard, min((index + 1) * per_shard, job["targets"])
        count = 0
        counts: dict[str, Counter[str]] = {}
        try:
            for key, files in iter_tar(data):
                count += 1
                match = key_pattern.match(key)
                if key in seen:
                    problems.append(f"{name}: duplicate key {key}")
                seen.add(key)
                if not match or not first <= int(match.group(1)) < last:
                    problems.append(f"{name}: key {key} does not belong to this shard")
                elif one_view and int(match.group(2)) >= per_target:
                    problems.append(f"{name}: key {key} is past {per_target} samples per target")
                meta = _check_sample(key, files, problems)
                if meta is None:
                    continue
                if match and view_index(meta) != int(match.group(2)) // per_target:
                    problems.append(f"{name}: key {key} does not belong to its view {meta['view']}")
                for field_name in ("method", "anomaly_class", "scale"):
                    if field_name in meta:
                        counts.setdefault(field_name, Counter())[meta[field_name]] += 1
                counts.setdefault("label", Counter())[str(meta["label"])] += 1
        except Exception as exc:  # tarfile raises several types for damaged archives
            problems.append(f"{name}: unreadable tar ({exc})")
            continue
        views = entry.get("views", last - first - len(entry["skipped_inputs"]))
        expected = views * per_target
        if count + len(entry["failed_samples"]) != expected:
            problems.append(
                f"{name}: {count} samples + {len(entry['failed_samples'])} failed, expected "
                f"{expected} ({last - first} inputs, {views} targets made of them, "
                f"{len(entry['skipped_inputs'])} skipped)"
            )
        if count != entry["samples"] or {k: dict(v) for k, v in counts.items()} != {
            k: v for k, v in entry["counts"].items() if v
        }:
            problems.append(f"{name}: contents do not match its entry's counts")
        for k, v in counts.items():
            totals.setdefault(k, Counter()).update(v)
        report.shards += 1
        report.samples += count
    if manifest is not None:
        if manifest["samples"] != report.samples:
            problems.append(
                f"manifest says {manifest['samples']} samples, shards hold {report.samples}"
            )
        if manifest["counts"] != {k: dict(sorted(v.items())) for k, v in sorted(totals.items())}:
            problems.append("manifest counts do not match the shards")
    return report
