"""Re-read a synthesis output and check it against its job file and manifest.

Checks: every planned shard is committed (no gaps) and no stray shard exists; each tar is
readable and matches its entry's checksum and counts; keys are well formed, unique, and belong
to the shard's targets; each sample has an image, a binary {0, 255} mask of the image's size and
a JSON label consistent with the mask; every input of a shard's range is accounted for, from the
keys of its samples and failed samples and from its skipped inputs, not from the entry's own
counts (kept or skipped, never both, never neither; each kept target with exactly its samples'
worth of keys; under tile or crop every view of an image kept or skipped); totals match the
manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cai_ray.core.views import Geometry, plan_views
from cai_ray.io import inputs, layout, storage
from cai_ray.io.codecs import DecodeError, decode_image
from cai_ray.io.samples import (
    COUNTED_DETAILS,
    MASK_MEMBER,
    SampleError,
    image_member,
    read_meta,
    view_index,
)
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


@dataclass
class _ShardInputs:
    """What a shard's tar and its entry's failure and skip lists say of its inputs, by input
    index: which of its targets (views) made which sample indices, the image's size where a
    sample records it, and which inputs or views were skipped."""

    samples: dict[int, dict[int, set[int]]] = field(default_factory=dict)
    image_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    skipped_views: dict[int, set[int]] = field(default_factory=dict)
    skipped_whole: set[int] = field(default_factory=set)

    def add_sample(self, target: int, sample: int, per_target: int) -> None:
        views = self.samples.setdefault(target, {})
        views.setdefault(sample // per_target, set()).add(sample)


def _check_meta(
    name: str,
    key: str,
    target: int,
    meta: dict,
    found: _ShardInputs,
    inputs: list[str] | None,
    problems: list[str],
) -> None:
    """The sample's JSON names the input its key's index does; its view's image size kept."""
    if inputs is not None and 0 <= target < len(inputs) and "target" in meta:
        path = inputs[target]
        if path != meta["target"] and not path.endswith("/" + meta["target"]):
            problems.append(
                f"{name}: key {key} is input {target} ({path}) but its json names {meta['target']}"
            )
    view = meta.get("view")
    if isinstance(view, dict) and "image_size" in view:
        found.image_sizes.setdefault(
            target, (int(view["image_size"][0]), int(view["image_size"][1]))
        )


def _inputs_list(out: str, count: int) -> list[str] | None:
    """The job's input paths by index, or None where they are not recorded or not ``count``
    (a text list with a line break in a path)."""
    paths = inputs.recorded_paths(out)
    return paths if paths is not None and len(paths) == count else None


def _names(indices: list[int], inputs: list[str] | None, most: int = 5) -> str:
    shown = [
        f"{i} ({inputs[i].rsplit('/', 1)[-1]})" if inputs and 0 <= i < len(inputs) else str(i)
        for i in indices[:most]
    ]
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return ", ".join(shown) + more


def _inputs(indices: list[int], inputs: list[str] | None) -> str:
    """'input 4 (b.jpg) is' or 'inputs 4 (b.jpg), 5 (c.jpg) are'."""
    if len(indices) == 1:
        return f"input {_names(indices, inputs)} is"
    return f"inputs {_names(indices, inputs)} are"


def _check_inputs(
    name: str,
    span: range,
    entry: dict[str, Any],
    found: _ShardInputs,
    inputs: list[str] | None,
    index_of: dict[str, int],
    job: dict[str, Any],
    geometry: Geometry,
    problems: list[str],
) -> None:
    """Every input of the shard's range ``span`` kept or skipped, each kept target complete
    (``index_of``: each of ``inputs`` by path)."""
    per_target = job["samples_per_target"]
    where = f"its range [{span.start}, {span.stop})"
    if "targets" in entry and entry["targets"] != len(span):
        problems.append(
            f"{name}: its entry accounts for {entry['targets']} inputs, {where} holds {len(span)}"
        )
    for skip in entry["skipped_inputs"]:
        target = index_of.get(skip["path"])
        if target is None:
            if inputs is not None:
                problems.append(f"{name}: skipped input {skip['path']} is not one of the job's")
            continue
        if "view" in skip:
            found.skipped_views.setdefault(target, set()).add(int(skip["view"]))
        else:
            found.skipped_whole.add(target)
    accounted = set(found.samples) | set(found.skipped_views) | found.skipped_whole
    outside = sorted(accounted - set(span))
    if outside:
        problems.append(f"{name}: {_inputs(outside, inputs)} outside {where}")
    if inputs is not None:  # skips are named by path: without the list they cannot be placed
        missing = sorted(set(span) - accounted)
        if missing:
            problems.append(
                f"{name}: {_inputs(missing, inputs)} neither kept nor skipped (in {where}, "
                "no sample, failed sample or skip names it)"
            )
    both = sorted(found.skipped_whole & (set(found.samples) | set(found.skipped_views)))
    if both:
        problems.append(f"{name}: {_inputs(both, inputs)} skipped and also kept")
    views_made = 0
    for target, views in sorted(found.samples.items()):
        views_made += len(views)
        for view, made in sorted(views.items()):
            wanted = set(range(view * per_target, (view + 1) * per_target))
            if made != wanted:
                problems.append(
                    f"{name}: input {_names([target], inputs)} view {view} has sample indices "
                    f"{sorted(made)}, expected {sorted(wanted)}"
                )
        skipped = found.skipped_views.get(target, set())
        if skipped & set(views):
            problems.append(
                f"{name}: input {_names([target], inputs)} views {sorted(skipped & set(views))} "
                "are skipped and also kept"
            )
        if not geometry.one_view_per_image and target in found.image_sizes:
            height, width = found.image_sizes[target]
            size = job["config"]["image_size"]
            count = len(plan_views(height, width, size, geometry, np.random.default_rng(0)))
            unaccounted = sorted(set(range(count)) - set(views) - skipped)
            if unaccounted:
                problems.append(
                    f"{name}: input {_names([target], inputs)}: views {unaccounted} of its "
                    f"{count} are neither kept nor skipped"
                )
            beyond = sorted(v for v in set(views) | skipped if v >= count)
            if beyond:
                problems.append(
                    f"{name}: input {_names([target], inputs)}: views {beyond} lie past its {count}"
                )
    if "views" in entry and entry["views"] != views_made:
        problems.append(
            f"{name}: its entry counts {entry['views']} targets, its samples and failed samples "
            f"come from {views_made}"
        )


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
    geometry = Geometry(**job["config"]["inputs"].get("geometry", {}))
    one_view = geometry.one_view_per_image  # else several targets an image
    seen: set[str] = set()
    totals: dict[str, Counter[str]] = {}
    inputs = _inputs_list(out, job["targets"])
    index_of = {path: i for i, path in enumerate(inputs or [])}
    for index in sorted(entries):
        entry, name = entries[index], layout.shard_name(index)
        data = storage.read_bytes(storage.join(out, name))
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: checksum differs from its entry")
        first, last = index * per_shard, min((index + 1) * per_shard, job["targets"])
        count = 0
        counts: dict[str, Counter[str]] = {}
        found = _ShardInputs()
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
                if match:
                    found.add_sample(int(match.group(1)), int(match.group(2)), per_target)
                meta = _check_sample(key, files, problems)
                if meta is None:
                    continue
                if match:
                    _check_meta(name, key, int(match.group(1)), meta, found, inputs, problems)
                if match and view_index(meta) != int(match.group(2)) // per_target:
                    problems.append(f"{name}: key {key} does not belong to its view {meta['view']}")
                for field_name in ("method", *COUNTED_DETAILS):
                    if field_name in meta:
                        counts.setdefault(field_name, Counter())[meta[field_name]] += 1
                counts.setdefault("label", Counter())[str(meta["label"])] += 1
        except Exception as exc:  # tarfile raises several types for damaged archives
            problems.append(f"{name}: unreadable tar ({exc})")
            continue
        for failure in entry["failed_samples"]:
            match = key_pattern.match(failure["key"])
            if match is None:
                problems.append(f"{name}: failed sample key {failure['key']} is malformed")
                continue
            found.add_sample(int(match.group(1)), int(match.group(2)), per_target)
        span = range(first, last)
        _check_inputs(name, span, entry, found, inputs, index_of, job, geometry, problems)
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
