"""The synthesis job: normal images -> foreground actor pool -> injection actor pool (CAI or a
baseline) -> committed WebDataset shards, then the manifest and a preview sheet.

Resumable: a shard is done once its entry file exists next to it, and a re-run over the same
output skips done shards. Deterministic: shard contents depend only on the config and the inputs.
A re-run refuses an output whose job changed since it was started (:func:`job_identity`): the
version of the code that shapes samples, the config, the input list, an input's size or
modification time, the DAAD's contents, or a synthesizer's files; the error names what changed.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import os
import posixpath
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING

import numpy as np

from cai_ray import faults
from cai_ray.config import IDENTITY_NAMES, SynthConfig, sample_shaping
from cai_ray.core.foreground import make_foreground_extractor
from cai_ray.daad.shards import content_digest, prepare_daad
from cai_ray.daad.writer import INDEX_NAME
from cai_ray.io import inputs, layout, storage
from cai_ray.io.codecs import ColorMode, DecodeError, decode_image, is_grey_content
from cai_ray.io.inputs import LeftOut
from cai_ray.io.layout import OutputMismatchError
from cai_ray.pipeline import deaths
from cai_ray.pipeline.console import (
    JobError,
    quiet_ray_data,
    ray_logging_level,
    ray_output,
    worker_error,
    worker_exception,
)
from cai_ray.pipeline.lease import holding
from cai_ray.pipeline.progress import Progress
from cai_ray.pipeline.resources import (
    StagePlan,
    actor_options,
    plan_stages,
    restart_bound,
    shard_blocks,
)
from cai_ray.pipeline.stages import ForegroundStage, InjectionStage
from cai_ray.synthesizers.base import BuildContext
from cai_ray.version import SAMPLES_VERSION, __version__

if TYPE_CHECKING:
    import ray

log = logging.getLogger(__name__)

MANIFEST_INTERVAL_S = 60.0
"""How often a run writes the manifest of what has committed so far (what a resume merges)."""

OUT_OF_SPACE = f"{storage.OutOfSpaceError.__module__}.{storage.OutOfSpaceError.__qualname__}"
"""A worker's :class:`~cai_ray.io.storage.OutOfSpaceError` as Ray's text of it names its type."""

RESUME_HINT = "free space and rerun the job to resume"
"""What the error of a job stopped by a full disk tells the user to do."""


@dataclass(frozen=True)
class JobPlan:
    inputs: str
    """The input list the plan was made from (:mod:`cai_ray.io.inputs`): row i is target i."""
    count: int
    """How many targets (input images) the job has."""
    mode: ColorMode
    identity: dict
    """What the samples depend on, by part (:func:`job_identity`)."""
    targets_per_shard: int
    inputs_root: str
    """The inputs' common folder (a local path or object URL): target keys are relative to it."""
    unlisted: LeftOut
    """Files the input folders and globs held but that are not images (with the reason): all
    counted, the first :data:`~cai_ray.io.inputs.LEFT_OUT_NAMED` named."""
    duplicates: int = 0
    """Inputs named more than once by the sources (each kept once)."""
    list_kept: bool = False
    """The list is the one the output keeps (read back, not listed again)."""

    @property
    def fingerprint(self) -> str:
        return _digest(self.identity)

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.targets_per_shard)

    def shard_range(self, index: int) -> tuple[int, int]:
        """The rows of the input list that shard ``index`` takes."""
        start = index * self.targets_per_shard
        return start, min(start + self.targets_per_shard, self.count)


def _resolve_mode(config: SynthConfig, paths: list[str], probes: int = 20) -> ColorMode:
    """The configured colour mode, or for ``auto`` that of the first readable input. A store
    that gave up is the store's error, not an unreadable input."""
    if config.color != "auto":
        return config.color
    for path in paths[:probes]:
        try:
            image = decode_image(storage.read_bytes(path))
        except storage.StorageError:
            raise
        except (OSError, DecodeError):
            continue
        return "grey" if is_grey_content(image) else "rgb"
    raise ValueError(f"none of the first {probes} inputs is a readable image; set color explicitly")


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _identity_config(config: SynthConfig) -> dict:
    return sample_shaping(config.model_dump(mode="json"))


def _input_digests(url: str, count: int, common: str, per_shard: int) -> tuple[str, list[str]]:
    """In one pass over the list: the digest of the targets' keys in order, and each shard's
    digest of its inputs' change stamps (as :func:`_digest` gives them for the whole lists,
    without holding them)."""
    keys = hashlib.sha256(b"[")
    shards: list[str] = []
    separator = b""
    chunk = per_shard * max(1, inputs.BATCH_ROWS // per_shard)
    for paths, stamps in inputs.iter_chunks(url, chunk, count):
        text = ", ".join(map(encode_basestring_ascii, inputs.target_keys(paths, common)))
        keys.update(separator + text.encode())
        separator = b", "
        shards += [
            _digest(stamps[start : start + per_shard])[:16]
            for start in range(0, len(stamps), per_shard)
        ]
    keys.update(b"]")
    return keys.hexdigest(), shards


def job_identity(config: SynthConfig, keys: str, per_shard_stamps: list[str]) -> dict:
    """What the samples depend on, part by part, so that a refused resume can say which part
    changed: the code that shapes them (:data:`cai_ray.SAMPLES_VERSION`, not the release: a
    release that writes the same bytes resumes), the settings that shape them
    (:func:`cai_ray.config.sample_shaping`), the input list (``keys``: the digest of the
    targets' keys in order), each shard's inputs' change stamps (size and modification time, as
    rsync compares them), the DAAD's contents and the synthesizer's and the foreground model's
    files (their stamps)."""
    model_files = list(config.synthesizer.source_files())
    if config.foreground.model_path is not None:
        model_files.append(config.foreground.model_path)
    return {
        "samples_version": SAMPLES_VERSION,
        "config": _digest(_identity_config(config)),
        "inputs": keys,
        "input_stamps": per_shard_stamps,
        "daad": content_digest(config.daad.path) if config.daad is not None else None,
        "files": _digest(list(zip(model_files, storage.stamps(model_files), strict=True))),
    }


def list_inputs(config: SynthConfig, folder: str) -> tuple[str, inputs.Listing]:
    """Write the job's input list into the local ``folder`` (sorted, each input once, at most
    ``inputs.limit``); return its path and what the listing found."""
    url = os.path.join(folder, layout.INPUT_LIST_FILE)
    listing = inputs.write_list(config.inputs.paths, url, limit=config.inputs.limit)
    if listing.duplicates:
        log.info("%d inputs named more than once, each taken once", listing.duplicates)
    return url, listing


def reuse_output_list(
    config: SynthConfig, folder: str
) -> tuple[str, inputs.Listing, str | None] | None:
    """The input list the output keeps, copied into the local ``folder``, when the job that
    started the output named the same sources (``inputs.paths`` and ``inputs.limit``): a
    resume reads that list back instead of listing millions of objects again. Returns its
    path, what it holds and the inputs' root ``job.json`` recorded (the plan checks the list
    still has it); ``None`` when there is no such output or its job named other sources (then
    the inputs are listed)."""
    out = config.output.path
    job_url = storage.join(out, layout.JOB_FILE)
    list_url = storage.join(out, layout.INPUT_LIST_FILE)
    if not (storage.exists(job_url) and storage.exists(list_url)):
        return None
    previous = layout.read_json(job_url)
    started = previous.get("config", {}).get("inputs", {})
    if (started.get("paths"), started.get("limit")) != (config.inputs.paths, config.inputs.limit):
        return None
    url = os.path.join(folder, layout.INPUT_LIST_FILE)
    storage.get_file(list_url, url)
    count = int(previous["targets"])
    if inputs.count_rows(url) != count:
        log.info("the input list %s kept is not the one the job started with: listing", list_url)
        return None
    unlisted = LeftOut()
    for skip in previous.get("unlisted_inputs", []):
        unlisted.append(skip)
    unlisted.total = int(previous.get("left_out_inputs", unlisted.total))
    listing = inputs.Listing(
        count=count,
        unlisted=unlisted,
        duplicates=int(previous.get("duplicate_inputs", 0)),
    )
    log.info(
        "resuming over the input list %s keeps (%d inputs); inputs added or changed since "
        "are seen only with --relist",
        list_url,
        listing.count,
    )
    return url, listing, previous.get("inputs_root")


def plan_job(config: SynthConfig, folder: str, *, relist: bool = False) -> JobPlan:
    """List the inputs into ``folder`` (or, unless ``relist``, reuse the list an output of
    this job keeps: :func:`reuse_output_list`) and plan from that list in one streaming pass:
    a target's index is its row, its key (which seeds its samples) its path relative to the
    inputs' common folder (so moving the dataset elsewhere does not change the samples), and
    the job's identity digests the list as it streams by. The driver's memory does not grow
    with the number of targets (only a short digest per shard)."""
    kept = None if relist else reuse_output_list(config, folder)
    url, listing = (kept[0], kept[1]) if kept else list_inputs(config, folder)
    faults.fault_point(faults.PLANNING)
    count = listing.count
    first, last = inputs.location_bounds(url, count)
    common = posixpath.commonpath([first, last]) if count > 1 else posixpath.dirname(first)
    probes = [path for path, _ in inputs.ListReader(url).rows(0, 20)]
    root = inputs.root_url(common, probes[0])
    if kept and root != kept[2]:  # a resume from moved inputs rewrote the kept list
        log.info("the input list the output keeps names moved inputs: listing the sources")
        return plan_job(config, folder, relist=True)
    per_shard = config.output.targets_per_shard
    keys, stamps = _input_digests(url, count, common, per_shard)
    identity = job_identity(config, keys, stamps)
    mode = _resolve_mode(config, probes)
    return JobPlan(
        url,
        count,
        mode,
        identity,
        per_shard,
        root,
        listing.unlisted,
        listing.duplicates,
        list_kept=kept is not None,
    )


def _what_changed(config: SynthConfig, plan: JobPlan, previous: dict) -> str:
    """The parts of the job that differ from the one that started the output, in words."""
    before = previous.get("identity")
    if not isinstance(before, dict):
        return "it was started by an older cai-ray"
    now = plan.identity
    changes = []
    samples_before = before.get("samples_version", 1)
    if samples_before != now["samples_version"]:
        started_by = previous.get("version", "an older version")
        changes.append(
            f"cai-ray {__version__} writes other bytes for the same job than cai-ray "
            f"{started_by}, which started it (samples version {samples_before} -> "
            f"{now['samples_version']}): finish it with cai-ray {started_by}, or start this "
            "job in a new output path"
        )
    if before.get("config") != now["config"]:
        keys = _differing_keys(sample_shaping(previous.get("config", {})), _identity_config(config))
        named = [_SETTING_NAMES.get(key, key) for key in keys]
        changes.append(f"config differs: {', '.join(named) or 'settings'}")
    if before.get("inputs") != now["inputs"]:
        changes.append("the input list differs (images added, removed or renamed)")
    elif before.get("input_stamps") != now["input_stamps"]:
        shards = [
            index
            for index, (old, new) in enumerate(
                zip(before.get("input_stamps", []), now["input_stamps"], strict=False)
            )
            if old != new
        ]
        changed, keys = _changed_inputs(plan, shards, config.output.path)
        changes.append(
            f"{changed} input changed (size or modification time): {', '.join(keys)}"
            if changed == 1
            else f"{changed} inputs changed (size or modification time): "
            f"{', '.join(keys)}{' ...' if changed > len(keys) else ''}"
        )
    if before.get("daad") != now["daad"]:
        where = config.daad.path if config.daad is not None else "(none)"
        changes.append(f"the DAAD at {where} changed (rebuilt or replaced)")
    if before.get("files") != now["files"]:
        changes.append("the synthesizer's files changed (its model or textures)")
    return "; ".join(changes) or "its fingerprint differs"


_SETTING_NAMES = {f"{path.rpartition('.')[0]}.{old}": path for path, old in IDENTITY_NAMES.items()}
"""A renamed setting's name today, from the name a job's identity keeps for it."""


def _differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _recorded_stamps(out: str, size: int) -> Iterator[list[str]]:
    """The stamps the output recorded, ``size`` rows at a time (an output begun before the
    list was Parquet keeps them one a line in ``input_stamps.txt``, read once)."""
    listed = storage.join(out, layout.INPUT_LIST_FILE)
    if storage.exists(listed):
        for _, stamps in inputs.iter_chunks(listed, size):
            yield stamps
        return
    url = storage.join(out, layout.INPUT_STAMPS_FILE)
    recorded = storage.read_bytes(url).decode().split("\n") if storage.exists(url) else []
    for start in range(0, len(recorded), size):
        yield recorded[start : start + size]


def _changed_inputs(
    plan: JobPlan, shards: list[int], out: str, most: int = 5
) -> tuple[int, list[str]]:
    """How many inputs of the given shards have other stamps than the output recorded, and
    the keys of the first ``most`` of them: one pass over both lists, whatever their length."""
    wanted = set(shards)
    per_shard = plan.targets_per_shard
    size = per_shard * max(1, inputs.BATCH_ROWS // per_shard)
    recorded_chunks = _recorded_stamps(out, size)
    common = inputs.location(plan.inputs_root)
    changed = 0
    keys: list[str] = []
    for first, (paths, stamps) in zip(
        itertools.count(0, size), inputs.iter_chunks(plan.inputs, size, plan.count), strict=False
    ):
        recorded = next(recorded_chunks, [])
        if not wanted.intersection(
            range(first // per_shard, -(-(first + len(paths)) // per_shard))
        ):
            continue
        for offset, stamp in enumerate(stamps):
            if (first + offset) // per_shard not in wanted:
                continue
            if offset >= len(recorded) or recorded[offset] != stamp:
                changed += 1
                if len(keys) < most:
                    keys.append(inputs.target_keys([paths[offset]], common)[0])
    return changed, keys


def _claim_output(config: SynthConfig, plan: JobPlan) -> tuple[dict, set[int]]:
    """Write the job file and the input list, or check an existing job file matches (then a
    list made afresh replaces the kept one: the same inputs, maybe moved); return the job
    file's contents and the indices of the shards already committed (one listing, no entry
    read)."""
    out = config.output.path
    job_url = storage.join(out, layout.JOB_FILE)
    list_url = storage.join(out, layout.INPUT_LIST_FILE)
    if storage.exists(job_url):
        previous = layout.read_json(job_url)
        if previous.get("fingerprint") != plan.fingerprint:
            changed = _what_changed(config, plan, previous)
            raise OutputMismatchError(
                f"{out} holds the output of a different job ({changed}); resuming would mix two "
                "jobs' samples: choose another output path, or delete that folder to start again"
            )
        # not the lease's: this run holds it, and its heartbeat may be writing it right now
        removed = storage.remove_stale_temporaries(
            out, lambda name: name != layout.OWNER_FILE and layout.is_ours(name)
        )
        if removed:
            log.info("removed %d partial file(s) an interrupted run left in %s", removed, out)
        if not plan.list_kept:
            storage.put_file_atomic(plan.inputs, list_url)
        faults.fault_point(faults.LISTING_OUTPUT)
        return previous, layout.committed_indices(out)
    storage.makedirs(out)
    storage.put_file_atomic(plan.inputs, list_url)
    job = {
        "fingerprint": plan.fingerprint,
        "identity": plan.identity,
        "version": __version__,
        "samples_version": SAMPLES_VERSION,
        "mode": plan.mode,
        "targets": plan.count,
        "inputs_root": plan.inputs_root,
        "unlisted_inputs": list(plan.unlisted),
        "left_out_inputs": plan.unlisted.total,
        "duplicate_inputs": plan.duplicates,
        "targets_per_shard": plan.targets_per_shard,
        "shards": plan.num_shards,
        "samples_per_target": config.samples_per_target,
        "key_prefix": config.output.samples_key_prefix,
        "config": config.model_dump(mode="json"),
    }
    layout.write_json(job_url, job)
    return job, set()


def _init_ray(config: SynthConfig, verbose: bool) -> tuple[float, float]:
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=ray_logging_level(verbose))
        else:
            ray.init(
                address="local",  # never attach to a cluster an earlier 'ray start' left behind
                num_cpus=config.resources.num_cpus,
                include_dashboard=False,
                logging_level=ray_logging_level(verbose),
            )
    quiet_ray_data(verbose)
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    local = [
        path
        for path in (
            *config.inputs.paths,
            *([config.daad.path] if config.daad else []),
            config.output.path,
        )
        if storage.is_local(path)
    ]
    if nodes > 1 and local:
        log.warning(
            "%d nodes, but %s are local paths: every node must see them at the same place "
            "(a shared filesystem); otherwise use s3:// locations",
            nodes,
            ", ".join(local),
        )
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0)), float(resources.get("GPU", 0))


def _stage_graph(
    config: SynthConfig, plan: JobPlan, stages: StagePlan, ledger: object = None
) -> list[tuple[type, int, float, float, dict]]:
    """The job's stages in order, each an actor pool taking one shard per batch:
    (class, actors, CPUs each, GPUs each, constructor kwargs). The shards are ranges of the
    input list beside the output. With the run's ledger (on Ray: :mod:`.deaths`), the stages
    give up targets their workers keep dying on, and watch their memory."""
    list_url = storage.join(config.output.path, layout.INPUT_LIST_FILE)
    shards = inputs.ShardList(list_url, plan.inputs_root, plan.targets_per_shard, plan.count)
    guard = (
        {"ledger": ledger, "memory_limit_mb": config.resources.actor_memory_mb} if ledger else {}
    )
    return [
        (
            ForegroundStage,
            stages.foreground_actors,
            stages.foreground_cpus,
            0.0,
            {
                "image_size": config.image_size,
                "mode": plan.mode,
                "method": config.foreground.method,
                "model_path": config.foreground.model_path,
                "min_fraction": config.foreground.min_fraction,
                "geometry": config.inputs.geometry,
                "max_pixels": config.inputs.max_pixels,
                "seed": config.seed,
                "shards": shards,
                "storage_options": config.storage.model_dump(),
                **guard,
            },
        ),
        (
            InjectionStage,
            stages.injection_actors,
            stages.injection_cpus,
            stages.injection_gpus,
            {
                "synthesizer": config.method_settings,
                "daad": config.daad,
                "image_size": config.image_size,
                "mode": plan.mode,
                "seed": config.seed,
                "key_prefix": config.output.samples_key_prefix,
                "image_format": config.output.image_format,
                "include_normal": config.output.include_normal,
                "out": config.output.path,
                "storage_options": config.storage.model_dump(),
                **guard,
            },
        ),
    ]


def _run_locally(
    config: SynthConfig,
    plan: JobPlan,
    todo: list[int],
    manifest: ManifestWriter,
    show_progress: bool,
) -> int:
    """The stages of :func:`_run_pipeline`, one shard at a time in this process; returns the
    object-store requests they retried."""
    graph = _stage_graph(config, plan, StagePlan(1, 1.0, 1, 1.0))
    stages = [stage(**kwargs) for stage, _, _, _, kwargs in graph]
    progress = Progress(len(todo), enabled=show_progress)
    retried = 0
    try:
        for index in todo:
            batch = {"shard": np.array([index])}
            for stage in stages:
                batch = stage(batch)
            entry = json.loads(batch["entry"][0])
            manifest.add(index, entry)
            retried += int(batch["storage_retries"][0])
            progress.update(entry["samples"])
    finally:
        progress.close()
    return retried


def shard_dataset(todo: list[int], blocks: int) -> ray.data.Dataset:
    """The shards to make as a Ray Data dataset of ``blocks`` blocks, a row a shard (a shard's
    targets are read from the list by the foreground stage)."""
    import ray

    return ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=blocks)


def _run_pipeline(
    config: SynthConfig,
    plan: JobPlan,
    todo: list[int],
    stages: StagePlan,
    manifest: ManifestWriter,
    show_progress: bool,
    verbose: bool,
) -> int:
    """Run the stages in Ray actor pools; returns the object-store requests they retried."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = shard_dataset(todo, shard_blocks(len(todo), stages))
    resources = config.resources
    ledger = deaths.start_ledger(resources.worker_deaths_per_target, resources.actor_memory_mb)
    for stage, actors, cpus, gpus, kwargs in _stage_graph(config, plan, stages, ledger):
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts only this way, and warns that
            # the way goes in 2.64 without naming another: the user can do nothing about it
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = dataset.map_batches(
                stage,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus,
                num_gpus=gpus,
                fn_constructor_kwargs=kwargs,
                **actor_options(resources, plan.targets_per_shard),
            )
    retried = 0
    with ray_output(verbose):
        progress = Progress(len(todo), enabled=show_progress)
        try:
            for row in dataset.iter_rows():
                entry = json.loads(row["entry"])
                manifest.add(int(row["shard"]), entry)
                retried += int(row["storage_retries"])
                progress.update(entry["samples"])
        except ray.exceptions.RayError as exc:
            raised = worker_exception(exc)
            if raised is not None and raised[0] == OUT_OF_SPACE:  # reported as the driver's own
                raise storage.OutOfSpaceError(raised[1]) from exc
            restarts = restart_bound(resources, plan.targets_per_shard)
            died = deaths.job_error(exc, ledger, restarts)
            raise JobError(died or worker_error(exc)) from exc
        finally:
            progress.close()
            deaths.close_ledger(ledger)
    log.info("done: %s (up to %d samples per target)", progress.status(), config.samples_per_target)
    return retried


@dataclass
class Tally:
    """What the manifest sums over shard entries, folded one entry at a time in any order (as
    a run's shards come back): totals, and the skip, failure and damage lists of the shards
    that have any (the entries themselves are not kept)."""

    names: dict[int, str] = field(default_factory=dict)
    views: int = 0
    samples: int = 0
    bytes: int = 0
    storage_retries: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    listed: dict[int, tuple[list, list, dict]] = field(default_factory=dict)

    def add(self, index: int, entry: dict) -> None:
        self.names[index] = entry["shard"]
        self.views += entry.get("views", 0)
        self.samples += entry["samples"]
        self.bytes += entry["bytes"]
        self.storage_retries += entry.get("storage_retries", 0)  # entries before it lack it
        for name, counts in entry["counts"].items():
            self.counts.setdefault(name, Counter()).update(counts)
        lists = (entry["skipped_inputs"], entry["failed_samples"], entry.get("damaged_sources", {}))
        if any(lists):
            self.listed[index] = lists


def covered_shards(job: dict, manifest: dict) -> set[int]:
    """The shards a manifest of this job covers; ``ValueError`` (why) where it cannot be merged
    with more shards: another job's, or not as :func:`summarize` writes it."""
    if manifest.get("fingerprint") != job["fingerprint"]:
        raise ValueError("it is another job's")
    matches = [layout.SHARD_PATTERN.match(name) for name in manifest["shards"]]
    if not all(match and match.group(2) == "tar" for match in matches):
        raise ValueError("it names a shard that is not one")
    unlisted = job.get("unlisted_inputs", [])
    if manifest["skipped_inputs"][: len(unlisted)] != unlisted:
        raise ValueError("its skipped inputs do not begin with the job's unlisted ones")
    pattern = layout.sample_key_pattern(job["key_prefix"])
    if not all(pattern.match(failure["key"]) for failure in manifest["failed_samples"]):
        raise ValueError("a failed sample's key is malformed")
    lacks = [
        n for n in ("views", "samples", "bytes", "counts", "damaged_sources") if n not in manifest
    ]
    if lacks:
        raise ValueError(f"it lacks {', '.join(lacks)}")
    return {int(match.group(1)) for match in matches if match}


def summarize(job: dict, tally: Tally, previous: dict | None = None) -> dict:
    """The manifest: totals and counts over every committed shard, skips and failures listed
    in shard order. ``previous``, a manifest of this job (:func:`covered_shards`) over other
    shards than ``tally``'s, is merged in as its entries would be: the bytes equal those of a
    manifest summed from every entry at once. Its lists are in shard order already, and the
    input list is sorted by path, so skips interleave by path (the caller merges only skips
    that all lie under the inputs' current folder: :meth:`ManifestWriter.add`), failures by
    their key's shard; a damaged record's reason comes from its bytes alone, so shards agree
    on it."""
    base = previous or {}
    unlisted: list[dict] = list(job.get("unlisted_inputs", []))
    totals = {name: Counter(counts) for name, counts in base.get("counts", {}).items()}
    for name, counts in tally.counts.items():
        totals.setdefault(name, Counter()).update(counts)
    skipped: list[dict] = []
    failed: list[dict] = []
    damaged: dict[str, str] = dict(base.get("damaged_sources", {}))
    for index in sorted(tally.listed):
        shard_skipped, shard_failed, shard_damaged = tally.listed[index]
        skipped += shard_skipped
        failed += shard_failed
        damaged.update(shard_damaged)
    per_shard, pattern = job["targets_per_shard"], layout.sample_key_pattern(job["key_prefix"])

    def shard_of(failure: dict) -> int:
        match = pattern.match(failure["key"])
        return int(match.group(1)) // per_shard if match else -1

    skipped = list(heapq.merge(base.get("skipped_inputs", [])[len(unlisted) :], skipped, key=_path))
    failed = list(heapq.merge(base.get("failed_samples", []), failed, key=shard_of))
    names = {**{_shard_index(name): name for name in base.get("shards", [])}, **tally.names}
    return {
        "version": __version__,
        "samples_version": SAMPLES_VERSION,
        "fingerprint": job["fingerprint"],
        "targets": job["targets"],
        "views": base.get("views", 0) + tally.views,
        "shards": [names[i] for i in sorted(names)],
        "complete": len(names) == job["shards"],
        "samples": base.get("samples", 0) + tally.samples,
        "bytes": base.get("bytes", 0) + tally.bytes,
        "counts": {name: dict(sorted(c.items())) for name, c in sorted(totals.items()) if c},
        "skipped_inputs": unlisted + skipped,
        "left_out_inputs": job.get("left_out_inputs", len(unlisted)),
        "failed_samples": failed,
        "failed_by_cause": dict(
            sorted(Counter(f.get("cause", f["reason"]) for f in failed).items())
        ),
        "damaged_sources": dict(sorted(damaged.items())),
        "storage_retries": base.get("storage_retries", 0) + tally.storage_retries,
    }


def _path(skip: dict) -> str:
    return skip["path"]


def _shard_index(name: str) -> int:
    match = layout.SHARD_PATTERN.match(name)
    assert match is not None  # covered_shards checked it
    return int(match.group(1))


def _under(root: str) -> Callable[[dict], bool]:
    """Whether a skip record's path lies under the inputs' folder ``root``: then its place in
    path order is its place in the input list, so in shard order."""
    inside = inputs.location(root).rstrip("/") + "/"
    return lambda skip: inputs.location(skip["path"]).startswith(inside)


def _previous_manifest(
    out: str, job: dict, committed: set[int], root: str
) -> tuple[dict | None, set[int]]:
    """The output's manifest and the shards it covers, where it can be merged with the shards
    committed since: of this job, readable, covering only ``committed`` shards, its skips under
    the inputs' current folder ``root`` (inputs moved since it was written: their order by path
    is not their order by shard). Otherwise (None, no shard), saying why: the manifest is then
    summed from every entry."""
    url = storage.join(out, layout.MANIFEST_FILE)
    if not storage.exists(url):
        return None, set()
    try:
        manifest = layout.read_json(url)
        covered = covered_shards(job, manifest)
        if not covered <= committed:
            raise ValueError(f"it covers {len(covered - committed)} shard(s) no longer committed")
        skipped = manifest["skipped_inputs"][len(job.get("unlisted_inputs", [])) :]
        if not all(map(_under(root), skipped)):
            raise ValueError(f"it names skipped inputs outside {root} (moved since)")
        summarize(job, Tally(), manifest)  # merges: every field of the kind it should be
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.info("the manifest in %s is not merged (%s): summing every shard's entry", out, exc)
        raise _Unmerged from exc
    return manifest, covered


class _Unmerged(Exception):
    """The output's manifest cannot be merged: it is summed from every entry instead."""


class ManifestWriter:
    """The manifest of an output as its shards commit: the previous manifest merged with the
    entries it lacks (read once) and those of the shards this run makes (as they come back,
    no read), written at most every :data:`MANIFEST_INTERVAL_S` seconds during the run, so a
    resume after a crash merges it rather than reading every entry again. A manifest that
    cannot be merged is replaced at once by one summed from every entry (left in place, a
    later resume could trust it again once its shards are remade)."""

    def __init__(self, out: str, job: dict, committed: set[int], root: str) -> None:
        self.out, self.job, self.under = out, job, _under(root)
        try:
            self.previous, covered = _previous_manifest(out, job, committed, root)
            rejected = False
        except _Unmerged:
            self.previous, covered, rejected = None, set(), True
        self.tally = Tally()
        missing = sorted(committed - covered)
        if missing:
            lacking = "the manifest lacks" if self.previous else "(no manifest to merge)"
            log.info("reading %d committed shards' entries %s", len(missing), lacking)
        for index, entry in layout.read_entries(out, missing):
            self.add_entry(index, entry)
        if rejected:
            self.write()
        self.written = time.monotonic()

    def add_entry(self, index: int, entry: dict) -> None:
        """Fold one shard's entry in; where it skipped an input outside the inputs' current
        folder, the previous manifest is no longer merged but its shards' entries read."""
        if self.previous is not None and not all(map(self.under, entry["skipped_inputs"])):
            log.info("a shard skipped inputs outside the inputs' folder: reading every entry")
            shards = [_shard_index(name) for name in self.previous["shards"]]
            self.previous = None
            for covered, covered_entry in layout.read_entries(self.out, shards):
                self.tally.add(covered, covered_entry)
        self.tally.add(index, entry)

    def add(self, index: int, entry: dict) -> None:
        self.add_entry(index, entry)
        if time.monotonic() - self.written < MANIFEST_INTERVAL_S:
            return
        try:
            self.write()
        except OSError as exc:  # a resume merely reads more entries: the job goes on
            log.warning("could not write the manifest so far (%s); trying again later", exc)
            self.written = time.monotonic()

    def write(self, fault: str | None = None) -> dict:
        manifest = summarize(self.job, self.tally, self.previous)
        url = storage.join(self.out, layout.MANIFEST_FILE)
        layout.write_json(url, manifest, fault=fault)
        self.written = time.monotonic()
        return manifest

    def close(self) -> dict:
        """The final manifest, written; summed from every entry afresh where the shards
        committed now are not those it covers (shards removed or added by another writer)."""
        covered = set(self.tally.names)
        if self.previous is not None:
            covered |= {_shard_index(name) for name in self.previous["shards"]}
        committed = layout.committed_indices(self.out)
        if committed != covered:
            log.info("%s changed during the run: summing every shard's entry", self.out)
            self.previous, self.tally = None, Tally()
            for index, entry in layout.read_entries(self.out, sorted(committed)):
                self.tally.add(index, entry)
        return self.write(fault=faults.MERGING_MANIFEST)  # the final merge, not one so far


def _check_sources(config: SynthConfig, mode: ColorMode) -> None:
    """Fail before any Ray worker starts when a source or model is missing (a clear error
    here beats a failed actor later)."""
    context = BuildContext(config.daad, config.image_size, mode)
    config.method_settings.check(context)
    if config.foreground.method == "rembg":
        make_foreground_extractor("rembg", model_path=config.foreground.model_path)


def _with_absolute_paths(config: SynthConfig) -> SynthConfig:
    """The config the workers get: local paths resolved here, in the driver's directory."""
    resolved = config.model_copy(deep=True)
    if resolved.daad is not None:
        resolved.daad.path = storage.absolute(resolved.daad.path)
    resolved.synthesizer = resolved.synthesizer.for_workers()
    resolved.output.path = storage.absolute(config.output.path)
    if config.foreground.model_path is not None:
        resolved.foreground.model_path = storage.absolute(config.foreground.model_path)
    return resolved


def _probe(config: SynthConfig, plan: JobPlan, count: int) -> dict:
    """Make the samples of the first ``count`` inputs in this process, as the job's stages
    would, and write nothing: what an input gives (targets cut from it, samples, bytes)."""
    graph = _stage_graph(config, plan, StagePlan(1, 1.0, 1, 1.0))
    (foreground, *_, fg_kwargs), (injection, *_, inj_kwargs) = graph
    probed = min(count, plan.count)
    shards = inputs.ShardList(plan.inputs, plan.inputs_root, probed, plan.count)
    prepared = foreground(**{**fg_kwargs, "shards": shards})({"shard": np.array([0])})
    entry = json.loads(
        injection(**inj_kwargs).process_shard(
            0,
            json.loads(prepared["targets"][0]),
            prepared["images"][0],
            prepared["foregrounds"][0],
            json.loads(prepared["skipped"][0]),
        )["entry"]
    )
    figures = {k: entry[k] for k in ("views", "samples", "bytes", "skipped_inputs")}
    return {"inputs": probed, **figures}


def dry_run(config: SynthConfig, probes: int = 2, *, relist: bool = False) -> dict:
    """The job's plan without running it, for a look before paying for it: targets, shards,
    samples expected and bytes (from ``probes`` inputs made in this process, nothing written),
    and what a run over the output would do: start it, resume it (how many shards it would
    skip, from one listing of the output) or refuse it (why). No Ray is started. ``relist``:
    as :func:`run_synth`'s."""
    storage.configure(**config.storage.model_dump())
    out = config.output.path
    if config.daad is not None and not storage.exists(storage.join(config.daad.path, INDEX_NAME)):
        raise FileNotFoundError(
            f"the DAAD at {config.daad.path} is not built yet, and the job's identity digests "
            "it: build it first ('cai-ray daad build'), then look again"
        )
    with tempfile.TemporaryDirectory(prefix="cai-ray-inputs-") as folder:
        plan = plan_job(config, folder, relist=relist)
        report: dict = {
            "targets": plan.count,
            "shards": plan.num_shards,
            "targets_per_shard": plan.targets_per_shard,
            "samples_per_target": config.samples_per_target,
            "inputs_root": plan.inputs_root,
            "unlisted_inputs": plan.unlisted.total,
            "duplicate_inputs": plan.duplicates,
            "committed": 0,
            "refused": None,
        }
        job_url = storage.join(out, layout.JOB_FILE)
        if storage.exists(job_url):
            previous = layout.read_json(job_url)
            if previous.get("fingerprint") != plan.fingerprint:
                report["refused"] = _what_changed(config, plan, previous)
            else:
                report["committed"] = len(layout.committed_indices(out))
        try:
            _check_sources(config, plan.mode)
            report["probe"] = _probe(_with_absolute_paths(config), plan, probes)
        except Exception as exc:  # a look before paying reports what a run would meet
            report["probe"] = {"error": f"{type(exc).__name__}: {exc}"}
    return report


def run_synth(
    config: SynthConfig, *, show_progress: bool = True, verbose: bool = False, relist: bool = False
) -> dict:
    """Run (or resume) the job; return its manifest plus ``shards_made``, how many shards this
    call made (0 when the output was already complete), and ``storage_retries_made``, the
    object-store requests it retried in every process (the manifest's ``storage_retries``
    sums the shards' entries, every run's: their inputs' reads and their tars' uploads). Ray's
    own messages go to its log folder unless ``verbose``. From its first write into the output
    to its end, the run holds the output (:mod:`.lease`): another run on it refuses, naming
    this one; a run whose checks fail before writes nothing. A full disk, met by the driver or
    a worker, stops the job with one :class:`~cai_ray.io.storage.OutOfSpaceError` that names
    the file and says how to go on: the shards committed so far are kept, and a rerun
    resumes. A resume over an output started from the same sources reads the input list the
    output keeps (no second listing of millions of objects, and inputs touched since do not
    stop it); ``relist`` lists the sources again, and a resume then refuses inputs added,
    removed or changed since (their samples would not be those of the job that started)."""
    try:
        return _run_synth(config, show_progress, verbose, relist)
    except storage.OutOfSpaceError as exc:
        raise storage.OutOfSpaceError(f"{exc}; {RESUME_HINT}") from exc


def _run_synth(config: SynthConfig, show_progress: bool, verbose: bool, relist: bool) -> dict:
    from cai_ray.pipeline.preview import write_preview

    storage.configure(**config.storage.model_dump())
    retried_before = storage.retries_made()
    if config.daad is not None:
        prepare_daad(config.daad)
    with ExitStack() as held:
        with tempfile.TemporaryDirectory(prefix="cai-ray-inputs-") as folder:
            plan = plan_job(config, folder, relist=relist)
            _check_sources(config, plan.mode)
            lease = config.output.lease
            held.enter_context(
                holding(config.output.path, "cai-ray synth", lease.timeout_s, lease.heartbeat_s)
            )
            job, done = _claim_output(config, plan)
        workers_config = _with_absolute_paths(config)
        out = workers_config.output.path
        todo = [i for i in range(plan.num_shards) if i not in done]
        log.info(
            "%d targets in %d shards; %d already committed, %d to make",
            plan.count,
            plan.num_shards,
            len(done),
            len(todo),
        )
        writer = ManifestWriter(out, job, done, plan.inputs_root)
        in_this_process = config.resources.executor == "local"
        by_shards = 0
        if todo and in_this_process:
            by_shards = _run_locally(workers_config, plan, todo, writer, show_progress)
        elif todo:
            cluster_cpus, cluster_gpus = _init_ray(config, verbose)
            stages = plan_stages(config.resources, cluster_cpus, len(todo), cluster_gpus)
            log.info("cluster CPUs %g, GPUs %g; %s", cluster_cpus, cluster_gpus, stages)
            by_shards = _run_pipeline(
                workers_config, plan, todo, stages, writer, show_progress, verbose
            )
        manifest = writer.close()
        preview_missing = not storage.exists(storage.join(out, layout.PREVIEW_FILE))
        if config.output.preview_samples and manifest["samples"] and (todo or preview_missing):
            write_preview(out, config, plan.mode)
    # the local executor's stages run in this process: its count holds theirs already
    by_driver = storage.retries_made() - retried_before - (by_shards if in_this_process else 0)
    log.info(
        "%d shards made; object-store requests retried: %d (%d making shards, %d by the "
        "driver); the manifest's storage_retries, over every run's shards: %d",
        len(todo),
        by_shards + by_driver,
        by_shards,
        by_driver,
        manifest["storage_retries"],
    )
    return {**manifest, "shards_made": len(todo), "storage_retries_made": by_shards + by_driver}
