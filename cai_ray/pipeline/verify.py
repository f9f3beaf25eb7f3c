"""Re-read a synthesis output and check it against its job file and manifest.

Checks: every planned shard is committed (no gaps, no tar without its entry nor entry without
its tar) and no stray shard exists; each tar is readable and matches its entry's size, checksum
and counts; keys are well formed, unique, and belong to the shard's targets; each sample has an
image, a binary {0, 255} mask of the image's size and a JSON label consistent with the mask;
every input of a shard's range is accounted for, from the keys of its samples and failed
samples and from its skipped inputs, not from the entry's own counts (kept or skipped, never
both, never neither; each kept target with exactly its samples' worth of keys; under tile or
crop every view of an image kept or skipped); totals match the manifest. The shards found
damaged are listed, and :func:`repair_output` removes them so that a run of the job rewrites
them (a run trusts one listing of the output and reads no tar).

At scale: shards are checked by a pool of threads (reading a tar from an object store waits on
the network) and their findings taken in shard order, so the report is the same whatever the
thread count; each shard's keys are checked within the shard (a key must name a target of its
own shard's range, so keys unique in each shard are unique in the output) against that shard's
rows of the input list, so memory holds a few shards, not every key or input; problems reach
the caller as they are found.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cai_ray import faults
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
from cai_ray.pipeline.lease import holding
from cai_ray.pipeline.progress import Progress

VERIFY_WORKERS = min(16, (os.cpu_count() or 1) + 4)
"""Shards checked at once by default: Python's default for I/O-bound threads, at most 16 (each
holds one shard's tar)."""


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    """Every problem, where no ``on_problem`` took them as they were found."""
    count: int = 0
    """How many problems were found."""
    damaged: list[int] = field(default_factory=list)
    """The planned shards found damaged, in order: a tar or entry unreadable, missing beside
    the other, or not matching; what :func:`repair_output` removes."""
    on_problem: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.count

    def add(self, problem: str) -> None:
        self.count += 1
        if self.on_problem is not None:
            self.on_problem(problem)
        else:
            self.problems.append(problem)


def _check_sample(name: str, key: str, files: dict[str, bytes], problems: list[str]) -> dict | None:
    where = f"{name}: sample {key}"
    try:
        image = decode_image(files[image_member(files)])
        meta = read_meta(files)
        raw_mask = decode_image(files[MASK_MEMBER])
    except SampleError as exc:
        problems.append(f"{where}: {exc}")
        return None
    except (json.JSONDecodeError, DecodeError) as exc:
        problems.append(f"{where}: unreadable member ({exc})")
        return None
    if raw_mask.shape != image.shape[:2]:
        problems.append(
            f"{where}: mask {raw_mask.shape} is not the size of its image {image.shape[:2]}"
        )
    if not np.isin(raw_mask, (0, 255)).all():
        problems.append(f"{where}: mask is not binary (values other than 0 and 255)")
    has_defect = bool((raw_mask >= 128).any())  # decode_mask's rule, without decoding again
    if meta.get("label") not in (0, 1) or bool(meta["label"]) != has_defect:
        problems.append(f"{where}: label {meta.get('label')!r} disagrees with its mask")
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
    rows: dict[int, str] | None,
    problems: list[str],
) -> None:
    """The sample's JSON names the input its key's index does; its view's image size kept."""
    if rows is not None and target in rows and "target" in meta:
        path = rows[target]
        if path != meta["target"] and not path.endswith("/" + meta["target"]):
            problems.append(
                f"{name}: key {key} is input {target} ({path}) but its json names {meta['target']}"
            )
    view = meta.get("view")
    if isinstance(view, dict) and "image_size" in view:
        found.image_sizes.setdefault(
            target, (int(view["image_size"][0]), int(view["image_size"][1]))
        )


class _InputRows:
    """A shard's rows of the job's input list, each thread reading with its own reader (the
    list's row groups hold a shard's rows); an output begun before ``inputs.parquet`` has its
    ``inputs.txt`` read whole. None where the output records no list of ``count`` inputs."""

    def __init__(self, out: str, count: int) -> None:
        self.url = storage.join(out, layout.INPUT_LIST_FILE)
        self.listed = storage.exists(self.url) and inputs.count_rows(self.url) == count
        self.text: list[str] | None = None
        if not self.listed:
            paths = inputs.recorded_paths(out)
            self.text = paths if paths is not None and len(paths) == count else None
        self._local = threading.local()

    def rows(self, start: int, stop: int) -> dict[int, str] | None:
        if self.text is not None:
            return dict(zip(range(start, stop), self.text[start:stop], strict=True))
        if not self.listed:
            return None
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = inputs.ListReader(self.url)
        return {start + i: path for i, (path, _) in enumerate(reader.rows(start, stop))}


def _names(indices: list[int], rows: dict[int, str] | None, most: int = 5) -> str:
    shown = [
        f"{i} ({rows[i].rsplit('/', 1)[-1]})" if rows and i in rows else str(i)
        for i in indices[:most]
    ]
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return ", ".join(shown) + more


def _inputs(indices: list[int], rows: dict[int, str] | None) -> str:
    """'input 4 (b.jpg) is' or 'inputs 4 (b.jpg), 5 (c.jpg) are'."""
    if len(indices) == 1:
        return f"input {_names(indices, rows)} is"
    return f"inputs {_names(indices, rows)} are"


def _check_inputs(
    name: str,
    span: range,
    entry: dict[str, Any],
    found: _ShardInputs,
    rows: dict[int, str] | None,
    job: dict[str, Any],
    geometry: Geometry,
    problems: list[str],
) -> None:
    """Every input of the shard's range ``span`` (``rows``: their paths) kept or skipped, each
    kept target complete."""
    index_of = {path: i for i, path in (rows or {}).items()}
    per_target = job["samples_per_target"]
    where = f"its range [{span.start}, {span.stop})"
    if "targets" in entry and entry["targets"] != len(span):
        problems.append(
            f"{name}: its entry accounts for {entry['targets']} inputs, {where} holds {len(span)}"
        )
    for skip in entry["skipped_inputs"]:
        target = index_of.get(skip["path"])
        if target is None:
            if rows is not None:
                problems.append(f"{name}: skipped input {skip['path']} is not one of {where}")
            continue
        if "view" in skip:
            found.skipped_views.setdefault(target, set()).add(int(skip["view"]))
        else:
            found.skipped_whole.add(target)
    accounted = set(found.samples) | set(found.skipped_views) | found.skipped_whole
    outside = sorted(accounted - set(span))
    if outside:
        problems.append(f"{name}: {_inputs(outside, rows)} outside {where}")
    if rows is not None:  # skips are named by path: without the list they cannot be placed
        missing = sorted(set(span) - accounted)
        if missing:
            problems.append(
                f"{name}: {_inputs(missing, rows)} neither kept nor skipped (in {where}, "
                "no sample, failed sample or skip names it)"
            )
    both = sorted(found.skipped_whole & (set(found.samples) | set(found.skipped_views)))
    if both:
        problems.append(f"{name}: {_inputs(both, rows)} skipped and also kept")
    views_made = 0
    for target, views in sorted(found.samples.items()):
        views_made += len(views)
        for view, made in sorted(views.items()):
            wanted = set(range(view * per_target, (view + 1) * per_target))
            if made != wanted:
                problems.append(
                    f"{name}: input {_names([target], rows)} view {view} has sample indices "
                    f"{sorted(made)}, expected {sorted(wanted)}"
                )
        skipped = found.skipped_views.get(target, set())
        if skipped & set(views):
            problems.append(
                f"{name}: input {_names([target], rows)} views {sorted(skipped & set(views))} "
                "are skipped and also kept"
            )
        if not geometry.one_view_per_image and target in found.image_sizes:
            height, width = found.image_sizes[target]
            size = job["config"]["image_size"]
            count = len(plan_views(height, width, size, geometry, np.random.default_rng(0)))
            unaccounted = sorted(set(range(count)) - set(views) - skipped)
            if unaccounted:
                problems.append(
                    f"{name}: input {_names([target], rows)}: views {unaccounted} of its "
                    f"{count} are neither kept nor skipped"
                )
            beyond = sorted(v for v in set(views) | skipped if v >= count)
            if beyond:
                problems.append(
                    f"{name}: input {_names([target], rows)}: views {beyond} lie past its {count}"
                )
    if "views" in entry and entry["views"] != views_made:
        problems.append(
            f"{name}: its entry counts {entry['views']} targets, its samples and failed samples "
            f"come from {views_made}"
        )


@dataclass
class _Shard:
    """One shard's findings, in the order they were met."""

    problems: list[str] = field(default_factory=list)
    samples: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    read: bool = False
    """Whether its entry and tar could be read through (a shard that counts)."""
    unreachable: bool = False
    """Its files could not be fetched (the store gave up, no permission): its problems say
    nothing of its bytes, so it is not damaged and ``--repair`` leaves it alone."""


def _check_shard(out: str, index: int, job: dict, rows: _InputRows) -> _Shard:
    """Everything :func:`verify_output` checks of one shard, from its entry, its tar and its
    rows of the input list alone."""
    result = _Shard()
    problems = result.problems
    name = layout.shard_name(index)
    try:
        entry = layout.read_json(storage.join(out, layout.entry_name(index)))
        data = storage.read_bytes(storage.join(out, name))
    except (FileNotFoundError, ValueError) as exc:  # gone since listed, or not JSON
        problems.append(f"{name}: unreadable entry or tar ({exc})")
        return result
    except OSError as exc:  # the store, not the shard: no verdict on its bytes
        problems.append(f"{name}: could not be read, not checked ({exc})")
        result.unreachable = True
        return result
    if len(data) != entry["bytes"]:
        problems.append(
            f"{name}: {len(data)} bytes, its entry says {entry['bytes']} (truncated or replaced)"
        )
    elif hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problems.append(f"{name}: checksum differs from its entry (bytes changed in place)")
    per_target, per_shard = job["samples_per_target"], job["targets_per_shard"]
    key_pattern = layout.sample_key_pattern(job["key_prefix"])
    geometry = Geometry(**job["config"]["inputs"].get("geometry", {}))
    one_view = geometry.one_view_per_image  # else several targets an image
    first, last = index * per_shard, min((index + 1) * per_shard, job["targets"])
    shard_rows = rows.rows(first, max(first, last))
    seen: set[str] = set()
    count = 0
    counts = result.counts
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
            meta = _check_sample(name, key, files, problems)
            if meta is None:
                continue
            if match:
                _check_meta(name, key, int(match.group(1)), meta, found, shard_rows, problems)
            if match and view_index(meta) != int(match.group(2)) // per_target:
                problems.append(f"{name}: key {key} does not belong to its view {meta['view']}")
            for field_name in ("method", *COUNTED_DETAILS):
                if field_name in meta:
                    counts.setdefault(field_name, Counter())[meta[field_name]] += 1
            counts.setdefault("label", Counter())[str(meta["label"])] += 1
    except Exception as exc:  # tarfile raises several types for damaged archives
        problems.append(f"{name}: unreadable tar ({exc})")
        return result
    for failure in entry["failed_samples"]:
        match = key_pattern.match(failure["key"])
        if match is None:
            problems.append(f"{name}: failed sample key {failure['key']} is malformed")
            continue
        found.add_sample(int(match.group(1)), int(match.group(2)), per_target)
    span = range(first, last)
    _check_inputs(name, span, entry, found, shard_rows, job, geometry, problems)
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
    result.samples, result.read = count, True
    return result


def verify_output(
    out: str,
    *,
    workers: int | None = None,
    on_problem: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> VerifyReport:
    """Check an output (see the module's docstring); ``workers`` shards at once. Each problem
    goes to ``on_problem`` as it is found (else into the report's list), in the same order
    whatever ``workers``: the output's own, then shard by shard, then the manifest's totals."""
    workers = workers or VERIFY_WORKERS
    report = VerifyReport(on_problem=on_problem)
    job_url = storage.join(out, layout.JOB_FILE)
    if not storage.exists(job_url):
        report.add(f"no {layout.JOB_FILE} in {out}: not a cai-ray output")
        return report
    job = layout.read_json(job_url)
    manifest_url = storage.join(out, layout.MANIFEST_FILE)
    manifest = None
    if not storage.exists(manifest_url):
        report.add(f"no {layout.MANIFEST_FILE}: the job did not finish")
    else:
        try:
            manifest = layout.read_json(manifest_url)
        except ValueError as exc:
            report.add(f"{layout.MANIFEST_FILE} is unreadable ({exc})")
    if manifest is not None and not manifest.get("complete"):
        report.add(
            f"{layout.MANIFEST_FILE} covers {len(manifest.get('shards', []))} of "
            f"{job['shards']} shards: the job did not finish"
        )
        manifest = None  # its totals are those of the shards it covers
    tars, entries = layout.shard_files(out)
    committed = tars & entries
    planned = range(job["shards"])
    present = tars | entries
    gaps = [i for i in planned if i not in present]
    if gaps:
        report.add(f"{len(gaps)} shard(s) missing, e.g. {[layout.shard_name(i) for i in gaps[:5]]}")
    stray = sorted(i for i in present if not 0 <= i < job["shards"])
    if stray:
        report.add(f"shards outside the plan: {[layout.shard_name(i) for i in stray[:5]]}")
    for index in sorted(i for i in tars ^ entries if i in planned):
        tar, entry = layout.shard_name(index), layout.entry_name(index)
        report.add(
            f"{tar}: its entry {entry} is missing (the shard is not committed)"
            if index in tars
            else f"{entry}: its tar {tar} is missing"
        )
        report.damaged.append(index)
    rows = _InputRows(out, job["targets"])
    totals: dict[str, Counter[str]] = {}
    progress = Progress(len(committed), enabled=show_progress, desc="verify")
    checked = sorted(committed)
    try:
        for index, shard in zip(
            checked,
            storage.ordered_map(
                lambda index: _check_shard(out, index, job, rows),
                checked,
                workers=workers,
                depth=2 * workers,
            ),
            strict=True,
        ):
            faults.fault_point(faults.VERIFYING)
            for problem in shard.problems:
                report.add(problem)
            if shard.problems and index in planned and not shard.unreachable:
                report.damaged.append(index)
            progress.update(shard.samples)
            if not shard.read:
                continue
            for k, v in shard.counts.items():
                totals.setdefault(k, Counter()).update(v)
            report.shards += 1
            report.samples += shard.samples
    finally:
        progress.close()
    report.damaged.sort()
    if manifest is not None:
        if manifest["samples"] != report.samples:
            report.add(f"manifest says {manifest['samples']} samples, shards hold {report.samples}")
        if manifest["counts"] != {k: dict(sorted(v.items())) for k, v in sorted(totals.items())}:
            report.add("manifest counts do not match the shards")
    return report


def repair_output(out: str, **verify_options: Any) -> VerifyReport:
    """Verify ``out`` (:func:`verify_output`, which takes ``verify_options``) and remove what a
    run of its job then rewrites: the manifest, which counts the damaged shards (the run sums it
    again from the entries), then each damaged shard's entry and its tar (uncommitted first: a
    repair stopped halfway leaves an orphan tar, which a run rewrites too). Nothing else is
    touched: no shard verify found whole, none outside the plan, no file that is not the job's.
    Verifying and removing hold the output's lease: a job running on it refuses the repair, and
    none starts during it. Returns the verify report; its ``damaged`` shards are gone."""
    if not storage.exists(storage.join(out, layout.JOB_FILE)):
        return verify_output(out, **verify_options)  # not an output: nothing to hold
    with holding(out, "cai-ray verify --repair", layout.LEASE_TIMEOUT_S, layout.LEASE_HEARTBEAT_S):
        report = verify_output(out, **verify_options)
        if report.damaged:
            storage.remove(storage.join(out, layout.MANIFEST_FILE))
        for index in report.damaged:
            storage.remove(storage.join(out, layout.entry_name(index)))
            storage.remove(storage.join(out, layout.shard_name(index)))
    return report
