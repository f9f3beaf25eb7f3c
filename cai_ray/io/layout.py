"""Names of everything a synthesis job writes, and the per-shard entries that commit shards.

An output folder holds ``job.json`` (the config and a fingerprint of what the samples depend
on), ``inputs.parquet`` (the normal images in order with each one's size and modification time
when the job ran, :mod:`cai_ray.io.inputs`: itself a valid input list; outputs begun before it
hold ``inputs.txt`` and ``input_stamps.txt``, one a line), ``shard-NNNNNN.tar`` with
``shard-NNNNNN.json`` beside each (written after the tar: its presence commits the shard),
``manifest.json``, ``preview.png`` and, while a run writes into it, ``owner.json``
(:mod:`cai_ray.pipeline.lease`).

Nothing else in the folder is the job's: other files are never listed as shards, read or
deleted (a shard is a file named exactly as :data:`SHARD_PATTERN` says), and an output's
prefix may begin another's (``out`` beside ``out-other``: a listing of ``out`` is of the folder,
``out/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from cai_ray.io import storage

JOB_FILE = "job.json"
INPUT_LIST_FILE = "inputs.parquet"
INPUTS_FILE = "inputs.txt"
"""An older output's input paths, one a line (read for outputs begun before the list)."""
INPUT_STAMPS_FILE = "input_stamps.txt"
"""An older output's input stamps, one a line."""
MANIFEST_FILE = "manifest.json"
PREVIEW_FILE = "preview.png"
OWNER_FILE = "owner.json"
"""The lease of the run writing into the output (:mod:`cai_ray.pipeline.lease`)."""
LEASE_TIMEOUT_S = 300.0
"""By default a lease whose heartbeat is older is stale: another run takes the output over."""
LEASE_HEARTBEAT_S = 30.0
"""By default a run refreshes its lease this often."""
SHARD_PATTERN = re.compile(r"^shard-(\d{6,})\.(tar|json)$")
"""A shard's tar or entry: six digits, more past shard 999,999 (as :func:`shard_name` writes)."""
_OWN_FILES = frozenset(
    {
        JOB_FILE,
        INPUT_LIST_FILE,
        INPUTS_FILE,
        INPUT_STAMPS_FILE,
        MANIFEST_FILE,
        PREVIEW_FILE,
        OWNER_FILE,
    }
)


class OutputMismatchError(RuntimeError):
    """The output folder holds a different job: resuming into it would mix two datasets."""


class OutputBusyError(RuntimeError):
    """Another run holds the output (its lease is fresh): two would do the work twice."""


def is_ours(name: str) -> bool:
    """Whether a file name in an output folder is one a job writes (its temporaries aside)."""
    return name in _OWN_FILES or SHARD_PATTERN.match(name) is not None


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def entry_name(index: int) -> str:
    return f"shard-{index:06d}.json"


KEY_PREFIX_MAX_LENGTH = 64
"""The longest samples key prefix: a key with it and the widest indices (a trillion targets,
9,999 samples each) and a sample's longest member name (``.mask.png``) still fits the 100 bytes
of a ustar member name, so a long prefix is refused with the config, not after a shard was
made."""


def sample_key(prefix: str, target_index: int, sample_index: int) -> str:
    """``<prefix>-<target, 7+ digits>-<sample, 2+ digits>``: zero-padded so keys sort in
    order for the usual sizes, and wider past 9,999,999 targets or 99 samples per target."""
    return f"{prefix}-{target_index:07d}-{sample_index:02d}"


def sample_key_pattern(prefix: str) -> re.Pattern[str]:
    """Matches :func:`sample_key`'s keys; groups: target index, sample index."""
    return re.compile(rf"^{re.escape(prefix)}-(\d{{7,}})-(\d{{2,}})$")


def read_json(url: str) -> dict:
    return json.loads(storage.read_bytes(url))


def write_json(url: str, value: dict, *, fault: str | None = None) -> None:
    """``value`` as indented JSON, atomically (``fault``: :func:`storage.write_bytes_atomic`'s)."""
    data = json.dumps(value, indent=2, sort_keys=True).encode()
    storage.write_bytes_atomic(url, data, fault=fault)


def shard_files(out: str) -> tuple[set[int], set[int]]:
    """The indices of the shards whose tar is present and of those whose entry is, from one
    listing of the output (no entry read)."""
    tars: set[int] = set()
    entries: set[int] = set()
    for url in storage.list_files(out, ""):
        match = SHARD_PATTERN.match(url.rsplit("/", 1)[-1])
        if match:
            (tars if match.group(2) == "tar" else entries).add(int(match.group(1)))
    return tars, entries


def committed_indices(out: str) -> set[int]:
    """The indices of the shards whose tar and entry are both present, from one listing of the
    output (no entry read)."""
    tars, entries = shard_files(out)
    return tars & entries


ENTRY_READERS = 16
"""Entries read at once: each is a small GET, so an object store's latency, not its bandwidth,
bounds how fast many are read."""


def read_entries(
    out: str, indices: Iterable[int], workers: int = ENTRY_READERS
) -> Iterator[tuple[int, dict]]:
    """``(index, entry)`` of the given shards in the given order, ``workers`` read at once."""
    ordered = list(indices)
    entries = storage.ordered_map(
        lambda index: read_json(storage.join(out, entry_name(index))),
        ordered,
        workers=workers,
        depth=4 * workers,
    )
    return zip(ordered, entries, strict=True)


def committed_shards(out: str) -> dict[int, dict]:
    """Entries of the shards whose tar and entry are both present, by shard index."""
    return dict(read_entries(out, sorted(committed_indices(out))))
