"""The samples of synthesis outputs as a Ray Data dataset, the input Ray Train is built around:
handed to ``TorchTrainer(datasets=...)`` (:func:`cai_ray.train.runner.train_on_ray`), each
worker reads its part with ``ray.train.get_dataset_shard`` and every epoch's samples are split
between the workers, each sample going to one of them.

One row per committed shard (:func:`cai_ray.io.stream.list_shards`) becomes that shard's
samples: read through :mod:`cai_ray.io.storage` (local or s3://, with its retries; the
driver's storage settings travel with the tasks), split into samples by the same tar reader as
:mod:`cai_ray.io.stream` and decoded in Ray tasks. Blocks come out in shard order (Ray Data's
``preserve_order``), so one consumer sees the same sequence every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from cai_ray.io import storage
from cai_ray.io.stream import Decoded, ShardRef
from cai_ray.io.tar import iter_tar

if TYPE_CHECKING:
    import ray.data

ROWS_PER_BLOCK = 64
"""Decoded samples per block a read task yields: a shard is cut into several, so memory does
not grow with the shard and batches start before a shard is done."""


def shard_dataset(
    shards: list[ShardRef],
    decode: Callable[[dict[str, bytes]], Decoded | None],
    columns: tuple[str, ...],
) -> ray.data.Dataset:
    """The shards' samples as rows of ``columns``, one per field ``decode`` returns (``None``:
    a sample the loop does not use; each shard must hold exactly ``ShardRef.samples`` usable
    ones, or its task fails naming it, after the shard's earlier blocks were yielded).
    ``decode`` runs in Ray tasks, so it must pickle."""
    import ray.data

    items = [{"url": shard.url, "samples": shard.samples} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset.context.execution_options.preserve_order = True
    return dataset.map_batches(
        partial(
            _decoded_shard,
            decode=decode,
            columns=columns,
            storage_options=storage.current_settings(),
        ),
        batch_size=1,
        batch_format="numpy",
    )


def _decoded_shard(
    row: dict[str, np.ndarray],
    *,
    decode: Callable[[dict[str, bytes]], Decoded | None],
    columns: tuple[str, ...],
    storage_options: dict[str, Any],
) -> Iterator[dict[str, np.ndarray]]:
    """One shard's usable samples, decoded, in blocks of :data:`ROWS_PER_BLOCK`. The count is
    checked against the entry at the shard's end, after its earlier blocks went out (holding a
    decoded shard back would cost its memory): a short shard fails the task, and with it the
    training run, but a consumer may have taken some of its samples by then."""
    if storage.current_settings() != storage_options:  # keep the cached S3 connections
        storage.configure(**storage_options)
    url, expected = str(row["url"][0]), int(row["samples"][0])
    rows: list[Decoded] = []
    found = 0
    for _, files in iter_tar(storage.read_bytes(url)):
        sample = decode(files)
        if sample is None:
            continue
        rows.append(sample)
        found += 1
        if len(rows) == ROWS_PER_BLOCK:
            yield _block(rows, columns)
            rows = []
    if found != expected:
        raise ValueError(f"{url} holds {found} usable samples, its entry says {expected}")
    if rows:
        yield _block(rows, columns)


def _block(rows: list[Decoded], columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {
        name: np.stack(field) for name, field in zip(columns, zip(*rows, strict=True), strict=True)
    }
