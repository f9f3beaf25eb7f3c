"""A synthesis output in the layouts other tools read: anomalib's Folder, MVTec AD and COCO
instances (``cai-ray export``).

The output is streamed shard by shard (at most two reads in flight ahead of the shard being
written), never held whole. Each shard becomes files whose names come from its sample keys,
each written atomically, then a part (``export-parts/shard-NNNNNN.json``: its counts and, for
COCO, its images and annotations) whose presence commits the shard, as a shard's entry commits
a synthesis shard. A crashed export run again skips the committed shards and rewrites the
others (the same bytes); the state file (``export.json``) names the source (its fingerprint),
the format and its settings, so an export of another output or with other settings into the
same folder is refused, and holds the counts at the end. COCO's one annotation file is
assembled from the parts at the end of every run.

Layouts (``<key>``: the sample key; normal samples are those of ``output.include_normal``;
an anomaly's class is its ``anomaly_class``, or its ``method`` for a synthesizer without one):

- ``folder``: ``good/<key>.png`` (normals), ``anomaly/<key>.png`` and ``mask/<key>.png``
  (anomalies: the mask named as its image), anomalib's ``Folder(normal_dir="good",
  abnormal_dir="anomaly", mask_dir="mask")``.
- ``mvtec``: ``<category>/train/good/<key>.png`` (normals; ``test_normals`` of them, picked by
  a hash of the key, to ``test/good`` instead), ``<category>/test/<class>/<key>.png`` and
  ``<category>/ground_truth/<class>/<key>_mask.png`` (every anomaly).
- ``coco``: ``images/<key>.png`` and ``annotations.json`` (ids numbered in shard order, that
  is key order; categories the classes found, sorted); an annotation per anomalous sample (its
  whole mask: one injected defect, even where its mask falls into pieces) or, with
  ``coco_instances: region``, per 8-connected region of it; normals are images without
  annotations.

Images are PNG (a JPEG sample's pixels re-encoded losslessly), masks uint8 {0, 255}.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from cai_ray.faults import EXPORTING
from cai_ray.io import storage
from cai_ray.io.annotations import mask_box, mask_rle
from cai_ray.io.codecs import decode_image, decode_mask, encode_image
from cai_ray.io.layout import (
    JOB_FILE,
    SHARD_PATTERN,
    committed_indices,
    entry_name,
    read_json,
    shard_name,
    write_json,
)
from cai_ray.io.samples import MASK_MEMBER, SampleError, image_member, read_meta
from cai_ray.io.settings import Settings
from cai_ray.io.tar import iter_tar

Format = Literal["folder", "mvtec", "coco"]
FORMATS: tuple[Format, ...] = ("folder", "mvtec", "coco")
STATE_FILE = "export.json"
PARTS_FOLDER = "export-parts"
COCO_FILE = "annotations.json"
COCO_IMAGES = "images"
STATE_VERSION = 1
FILE_WRITERS = 8
"""Files written at once: on an object store each is a request, so latency bounds the rate."""
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""A folder name an MVTec category or class may take."""


class ExportError(ValueError):
    """A source that is not a synthesis output, or a destination that holds something else."""


class ExportConfig(Settings):
    """What decides an export's files: a rerun into the same folder must use the same."""

    format: Format
    category: str | None = Field(
        None, pattern=SAFE_NAME, description="mvtec: the category folder (default: job name)."
    )
    test_normals: float = Field(
        0.0, ge=0, le=1, description="mvtec: share of normals in test/good, not train/good."
    )
    coco_instances: Literal["sample", "region"] = Field(
        "sample", description="coco: an annotation per anomalous sample or per region of it."
    )

    @model_validator(mode="after")
    def _options_of_the_format(self) -> ExportConfig:
        if self.format != "mvtec" and (self.category is not None or self.test_normals):
            raise ValueError("category and test_normals are options of the mvtec format")
        if self.format != "coco" and self.coco_instances != "sample":
            raise ValueError("coco_instances is an option of the coco format")
        return self


@dataclass(frozen=True)
class ShardExport:
    """What one shard became: the files to write (path relative to the destination, bytes) and
    its part (counts; for COCO its images, each with its annotations)."""

    files: list[tuple[str, bytes]]
    part: dict[str, Any]


def anomaly_class(meta: dict[str, Any]) -> str:
    """The class an anomalous sample is filed under: its DAAD class, else its method."""
    return str(meta.get("anomaly_class") or meta["method"])


def in_test_split(key: str, share: float) -> bool:
    """Whether a normal sample goes to MVTec's test/good: a hash of its key below ``share``,
    so the split is the same whatever the shards' order or a resume."""
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
    return draw < share


def _png(files: dict[str, bytes]) -> bytes:
    member = image_member(files)
    return files[member] if member == "png" else encode_image(decode_image(files[member]), "png")


def _coco_annotations(mask: np.ndarray, label: str, instances: str) -> list[dict[str, Any]]:
    if not mask.any():
        return []
    regions = [mask]
    if instances == "region":
        count, labelled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions = [labelled == region for region in range(1, count)]
    return [
        {
            "category": label,
            "segmentation": mask_rle(region),
            "bbox": mask_box(region),
            "area": int(region.sum()),
        }
        for region in regions
    ]


def export_shard(data: bytes, settings: ExportConfig) -> ShardExport:
    """The files and part of one shard's tar (no I/O). A sample without one image, its mask
    and metadata with its label, or (mvtec) with a class that cannot name a folder, raises
    :class:`SampleError` naming its key."""
    files: list[tuple[str, bytes]] = []
    images: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    category = settings.category
    if settings.format == "mvtec" and category is None:
        raise ValueError("an mvtec export needs its category (export_output gives the job's)")
    for key, members in iter_tar(data):
        try:
            image, meta = _png(members), read_meta(members)
            mask = members[MASK_MEMBER]
            normal = meta["label"] == 0
            label = None if normal else anomaly_class(meta)
        except (SampleError, KeyError) as exc:
            raise SampleError(f"sample {key}: {exc}") from exc
        if settings.format == "mvtec" and label is not None and not re.fullmatch(SAFE_NAME, label):
            raise SampleError(f"sample {key}: its anomaly class {label!r} cannot name a folder")
        counts["normal" if normal else "anomalous"] += 1
        if label is not None:
            classes[label] += 1
        if settings.format == "folder":
            files += (
                [(f"good/{key}.png", image)]
                if normal
                else [
                    (f"anomaly/{key}.png", image),
                    (f"mask/{key}.png", mask),
                ]
            )
        elif settings.format == "mvtec":
            if normal:
                split = "test" if in_test_split(key, settings.test_normals) else "train"
                counts[f"{split}_good"] += 1
                files.append((f"{category}/{split}/good/{key}.png", image))
            else:
                files += [
                    (f"{category}/test/{label}/{key}.png", image),
                    (f"{category}/ground_truth/{label}/{key}_mask.png", mask),
                ]
        else:
            pixels = decode_mask(mask)
            annotations = (
                [] if label is None else _coco_annotations(pixels, label, settings.coco_instances)
            )
            counts["annotations"] += len(annotations)
            files.append((f"{COCO_IMAGES}/{key}.png", image))
            height, width = pixels.shape
            images.append(
                {
                    "file_name": f"{key}.png",
                    "height": height,
                    "width": width,
                    "annotations": annotations,
                }
            )
    part: dict[str, Any] = {
        "samples": counts["normal"] + counts["anomalous"],
        "files": len(files),
        "counts": dict(sorted(counts.items())),
        "classes": dict(sorted(classes.items())),
    }
    if settings.format == "coco":
        part["images"] = images
    return ShardExport(files, part)


def coco_document(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """COCO's instances file from the shards' parts in order: images and annotations numbered
    from 1 as they come, categories the classes named, sorted and numbered from 1."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for part in parts:
        for image in part["images"]:
            image_id = len(images) + 1
            images.append({k: v for k, v in image.items() if k != "annotations"} | {"id": image_id})
            for annotation in image["annotations"]:
                annotations.append(
                    {**annotation, "id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0}
                )
    names = sorted({annotation["category"] for annotation in annotations})
    ids = {name: number for number, name in enumerate(names, start=1)}
    for annotation in annotations:
        annotation["category_id"] = ids[annotation.pop("category")]
    return {
        "info": {"description": "cai-ray synthesis output", "version": str(STATE_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": number, "name": name, "supercategory": "anomaly"} for name, number in ids.items()
        ],
    }


def _exported_indices(dest: str) -> set[int]:
    """The shards whose part is present: exported whole (one listing, no part read)."""
    found = set()
    for url in storage.list_files(storage.join(dest, PARTS_FOLDER), ".json"):
        match = SHARD_PATTERN.match(url.rsplit("/", 1)[-1])
        if match:
            found.add(int(match.group(1)))
    return found


def _remove_stale_temporaries(dest: str) -> None:
    """Remove the temporaries of local writes a killed export left anywhere under ``dest``."""
    if storage.is_local(dest):
        for folder, _, _ in os.walk(storage.local_path(dest)):
            storage.remove_stale_temporaries(folder, lambda name: name.endswith((".png", ".json")))


def _claim(dest: str, state: dict[str, Any]) -> None:
    """Write the state file into a new or empty destination, or check that the one there
    names the same source and settings (a resume)."""
    state_url = storage.join(dest, STATE_FILE)
    if storage.exists(state_url):
        found = read_json(state_url)
        if found.get("source_fingerprint") != state["source_fingerprint"]:
            raise ExportError(
                f"{dest} holds the export of another output ({found.get('source')}): "
                "export into a new folder"
            )
        theirs, ours = found.get("settings", {}), state["settings"]
        differ = [
            f"{name} {theirs.get(name)} there, {value} now"
            for name, value in ours.items()
            if theirs.get(name) != value
        ]
        if differ:
            raise ExportError(
                f"{dest} holds an export with other settings ({'; '.join(differ)}): export "
                "into a new folder, or again with its settings"
            )
        return
    if storage.list_files(dest, ""):
        raise ExportError(
            f"{dest} is not empty and holds no {STATE_FILE}: export into a new or empty folder"
        )
    storage.makedirs(dest)
    write_json(state_url, state)


@dataclass(frozen=True)
class ShardDone:
    """Progress: a shard exported, and how many of this run's are."""

    index: int
    samples: int
    files: int
    done: int
    total: int


def job_category(job: dict[str, Any]) -> str:
    """MVTec's category by default: the synthesis job's name, if a folder may take it."""
    name = str(job.get("config", {}).get("name", ""))
    if not re.fullmatch(SAFE_NAME, name):
        raise ExportError(f"the job's name {name!r} cannot name a folder: give a category")
    return name


def export_output(
    source: str,
    dest: str,
    settings: ExportConfig,
    *,
    max_shards: int | None = None,
    on_shard: Callable[[ShardDone], None] | None = None,
) -> dict[str, Any]:
    """Export the committed shards of the synthesis output ``source`` into ``dest`` (local or
    s3://) as ``settings`` say, skipping the shards an earlier run exported; with
    ``max_shards``, only the first so many committed shards. Returns the state file's content:
    counts over everything exported so far, ``shards_made`` (this run), ``complete`` (every
    shard the job planned is exported)."""
    job_url = storage.join(source, JOB_FILE)
    if not storage.exists(job_url):
        raise ExportError(
            f"{source} is not a synthesis output (no {JOB_FILE}): export reads the folder "
            "'cai-ray synth' writes"
        )
    job = read_json(job_url)
    if not job.get("fingerprint"):
        raise ExportError(
            f"{job_url} holds no fingerprint, which tells an export's source from another: "
            "export an output that 'cai-ray synth' wrote"
        )
    committed = sorted(committed_indices(source))
    if not committed:
        raise ExportError(f"no committed shards in {source}: run 'cai-ray synth' first")
    if settings.format == "mvtec" and settings.category is None:
        settings = settings.model_copy(update={"category": job_category(job)})
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "source": source,
        "source_fingerprint": job.get("fingerprint"),
        "settings": settings.model_dump(mode="json"),
        "complete": False,
    }
    _claim(dest, state)
    _remove_stale_temporaries(dest)
    wanted = committed[:max_shards] if max_shards is not None else committed
    before = _exported_indices(dest)
    todo = [index for index in wanted if index not in before]
    tars = storage.ordered_map(
        storage.read_bytes, [storage.join(source, shard_name(i)) for i in todo], workers=2, depth=1
    )
    for done, (index, data) in enumerate(zip(todo, tars, strict=True), start=1):
        try:
            shard = export_shard(data, settings)
        except SampleError as exc:
            raise ExportError(
                f"{shard_name(index)} of {source}: {exc} (check it with 'cai-ray verify')"
            ) from exc
        _consume(
            storage.ordered_map(
                lambda item: storage.write_bytes_atomic(storage.join(dest, item[0]), item[1]),
                shard.files,
                workers=FILE_WRITERS,
                depth=2 * FILE_WRITERS,
            )
        )
        part_url = storage.join(dest, PARTS_FOLDER, entry_name(index))
        write_json(part_url, {"shard": index, **shard.part}, fault=EXPORTING)
        if on_shard is not None:
            on_shard(ShardDone(index, shard.part["samples"], len(shard.files), done, len(todo)))
    return _finish(dest, state, len(todo), job.get("shards", len(committed)))


def _consume(results: Iterator[None]) -> None:
    for _ in results:
        pass


def _finish(dest: str, state: dict[str, Any], made: int, planned: int) -> dict[str, Any]:
    """Sum the parts (and assemble COCO's file from them) into the state file."""
    exported = sorted(_exported_indices(dest))
    parts = storage.ordered_map(
        lambda index: read_json(storage.join(dest, PARTS_FOLDER, entry_name(index))),
        exported,
        workers=16,
        depth=64,
    )
    counts: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    coco_parts = []
    for part in parts:
        counts.update(part["counts"] | {"samples": part["samples"], "files": part["files"]})
        classes.update(part["classes"])
        if "images" in part:
            coco_parts.append(part)
    if state["settings"]["format"] == "coco":
        write_json(storage.join(dest, COCO_FILE), coco_document(coco_parts))
    state = state | {
        "shards": len(exported),
        "source_shards": planned,
        "complete": len(exported) == planned,
        "counts": dict(sorted(counts.items())),
        "classes": dict(sorted(classes.items())),
    }
    write_json(storage.join(dest, STATE_FILE), state)
    return state | {"shards_made": made}
