"""Streaming the samples of synthesis outputs to a training loop (the detector, the CDM).

Samples are never all in memory: each epoch visits the shards in an order drawn from (seed,
epoch), data-parallel ranks take every ``world_size``-th shard, and a shuffle buffer mixes
samples across shards. Shards are read two ahead and samples decoded by a thread pool, in
order, so the batches are a pure function of (seed, epoch, rank) whatever the thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from cai_ray.io import storage
from cai_ray.io.layout import committed_shards, shard_name
from cai_ray.io.tar import Sample, iter_tar

Decoded = tuple[np.ndarray, ...]
"""One sample as a loop takes it: a tuple of arrays, stacked field by field into a batch."""

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class ShardRef:
    url: str
    samples: int
    """How many of its samples the loop uses (the decoder keeps exactly these)."""
    counts: dict = field(default_factory=dict, compare=False, repr=False)
    """The shard entry's counts (per method, class, scale, label)."""


def list_shards(outputs: list[str], usable: Callable[[dict], int] | None = None) -> list[ShardRef]:
    """Every committed shard of the outputs with the number of samples a loop will use, read
    from its entry by ``usable`` (default: all of them)."""
    shards = []
    for out in outputs:
        entries = committed_shards(out)
        if not entries:
            raise FileNotFoundError(f"no committed shards in {out}: run 'cai-ray synth' first")
        for index in sorted(entries):
            count = usable(entries[index]) if usable else entries[index]["samples"]
            url = storage.join(out, shard_name(index))
            shards.append(ShardRef(url, count, entries[index]["counts"]))
    return shards


@dataclass(frozen=True)
class Streaming:
    """How a training loop reads its shards: batches, shuffling, seed, decoding threads."""

    batch_size: int
    """Global batch, split evenly across ranks."""
    shuffle_buffer: int
    seed: int
    decode_workers: int


def shard_order(shards: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which an epoch visits the shards, drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(shards)


def dealt(order: np.ndarray, readers: int) -> list[np.ndarray]:
    """An epoch's shard order dealt out to ``readers``: reader ``r`` takes every
    ``readers``-th shard from the ``r``-th."""
    return [order[reader::readers] for reader in range(readers)]


def common_share(shards: list[ShardRef], order: np.ndarray, readers: int) -> int:
    """How many samples every one of ``readers`` can give in the epoch of ``order``: the
    smallest reader's share, so that data-parallel readers stop together."""
    return min(sum(shards[i].samples for i in mine) for mine in dealt(order, readers))


def read_samples(urls: Iterable[str]) -> Iterator[Sample]:
    """The samples of the shards, in order, as their files; two shards read ahead."""
    shard_bytes = storage.ordered_map(storage.read_bytes, urls, workers=2, depth=2)
    return (sample for data in shard_bytes for sample in iter_tar(data))


def decoded(items: Iterable[In], decode: Callable[[In], Out | None], workers: int) -> Iterator[Out]:
    """``decode`` of each item, in order, by ``workers`` threads; the ``None`` results dropped."""
    for item in storage.ordered_map(decode, items, workers=workers, depth=4 * workers):
        if item is not None:
            yield item


def shuffled(items: Iterable[Out], buffer_size: int, rng: np.random.Generator) -> Iterator[Out]:
    """The items mixed by a buffer of ``buffer_size`` (at least 1): each draw takes a random
    slot and refills it, and the buffer empties in a random order at the end."""
    buffer: list[Out] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(rng.integers(len(buffer)))
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


def epoch_batches(
    shards: list[ShardRef],
    decode: Callable[[dict[str, bytes]], Decoded | None],
    settings: Streaming,
    epoch: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Decoded]:
    """This rank's batches of one epoch: ``batch_size // world_size`` samples each, and the
    same number of batches on every rank (the smallest rank's share decides; the rest of an
    epoch's samples wait for another epoch's shard order), so no data-parallel rank waits.

    ``decode`` turns a sample's files into arrays, or ``None`` for a sample the loop does not
    use; each shard must hold exactly ``ShardRef.samples`` usable ones.
    """
    local_batch = settings.batch_size // world_size
    if local_batch < 1:
        raise ValueError(f"batch_size {settings.batch_size} is smaller than {world_size} workers")
    order = shard_order(len(shards), settings.seed, epoch)
    steps = common_share(shards, order, world_size) // local_batch
    mine = [shards[i].url for i in dealt(order, world_size)[rank]]
    files = (files for _, files in read_samples(mine))
    samples = shuffled(
        decoded(files, decode, settings.decode_workers),
        settings.shuffle_buffer,
        np.random.default_rng([settings.seed, epoch, rank]),
    )
    for _ in range(steps):
        batch = [next(samples) for _ in range(local_batch)]
        yield tuple(np.stack(field) for field in zip(*batch, strict=True))
