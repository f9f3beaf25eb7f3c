"""PyTorch datasets over synthesis outputs (local or s3://), for your own training code.

Needs torch (``pip install -e ".[train]"``; without it, importing this module says so); nothing
in the base install imports it.
Two flavours over the committed shards of one or more outputs:

* :class:`ShardDataset`, map-style: ``len`` from the shard entries (no shard is read to count),
  a sample by index; a shard is read when one of its samples is asked for, and the last few
  read are kept (their files, not decoded pixels), so reading in order costs one read a shard.
  A random order reads a shard for most samples: for shuffled training over many shards,
  prefer the stream.
* :class:`ShardStream`, iterable: each epoch visits the shards in an order drawn from (seed,
  epoch), split across data-parallel ranks and DataLoader workers, so every sample comes at
  most once an epoch (once, unless data-parallel ranks are held to equal steps); a shuffle
  buffer mixes samples across shards (:mod:`cai_ray.io.stream`, the detector's loader).

A sample is a dict: ``key``, ``image`` (C x H x W: float32 in [0, 1], or uint8 as stored),
``mask`` (1 x H x W: float32 {0, 1}, or uint8 {0, 255}), ``label`` (0 normal, 1 anomalous)
and ``meta`` (the sample's json), or what ``transform`` makes of it. Metadata differs between
samples (a normal sample has no anomaly class), which torch's default collate refuses: give a
DataLoader ``collate_fn=collate``.
"""

from __future__ import annotations

import bisect
import multiprocessing
import multiprocessing.context
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import accumulate, islice
from typing import Any, Literal

import numpy as np

from cai_ray.extras import require
from cai_ray.io import samples, storage, stream
from cai_ray.io.codecs import ColorMode
from cai_ray.io.tar import Sample, iter_tar

require("train", ("torch",), "cai_ray.io.torch_dataset")  # an error that names the extra

import torch  # noqa: E402
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info  # noqa: E402

Pixels = Literal["float", "uint8"]
Transform = Callable[[dict[str, Any]], Any]


def _outputs(output_or_outputs: str | list[str]) -> list[str]:
    if isinstance(output_or_outputs, str):
        return [output_or_outputs]
    return list(output_or_outputs)


def _committed(output_or_outputs: str | list[str]) -> list[stream.ShardRef]:
    """The outputs' committed shards that hold samples (all of a shard's inputs may be skipped)."""
    return [shard for shard in stream.list_shards(_outputs(output_or_outputs)) if shard.samples]


def sample_item(
    sample: Sample, pixels: Pixels = "float", color: ColorMode | None = None
) -> dict[str, Any]:
    """One sample of a shard as the datasets give it (see the module's docstring); ``color``
    converts the image (``None``: as stored, grey or RGB)."""
    key, files = sample
    image, mask = samples.decode_sample(files, color)
    meta = samples.read_meta(files)
    image_chw = torch.tensor(np.moveaxis(np.atleast_3d(image), -1, 0))  # a copy: writable
    mask_chw = torch.from_numpy(mask[None].astype(np.uint8))
    if pixels == "float":
        image_chw, mask_chw = image_chw.float() / 255, mask_chw.float()
    else:
        mask_chw *= 255
    return {
        "key": key,
        "image": image_chw,
        "mask": mask_chw,
        "label": int(meta["label"]),
        "meta": meta,
    }


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """A DataLoader's ``collate_fn`` for these samples: tensors and labels stacked, keys and
    metadata kept as lists."""
    stacked = default_collate([{k: v for k, v in item.items() if k != "meta"} for item in batch])
    return {**stacked, "meta": [item["meta"] for item in batch]}


class ShardDataset(Dataset):
    """The samples of synthesis outputs by index: the shards in order, each shard's samples
    in its tar's order. ``cached_shards``: how many shards' files are kept (per DataLoader
    worker)."""

    def __init__(
        self,
        output_or_outputs: str | list[str],
        *,
        pixels: Pixels = "float",
        color: ColorMode | None = None,
        transform: Transform | None = None,
        cached_shards: int = 2,
    ) -> None:
        if cached_shards < 1:
            raise ValueError(f"cached_shards must be at least 1, got {cached_shards}")
        self.shards = _committed(output_or_outputs)
        self.pixels, self.color, self.transform = pixels, color, transform
        self.cached_shards = cached_shards
        self._starts = [0, *accumulate(shard.samples for shard in self.shards)]
        self._cache: OrderedDict[int, list[Sample]] = OrderedDict()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of a dataset of {len(self)}")
        index %= len(self)
        shard = bisect.bisect_right(self._starts, index) - 1
        sample = self._shard_samples(shard)[index - self._starts[shard]]
        item = sample_item(sample, self.pixels, self.color)
        return self.transform(item) if self.transform else item

    def _shard_samples(self, shard: int) -> list[Sample]:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        ref = self.shards[shard]
        found = list(iter_tar(storage.read_bytes(ref.url)))
        if len(found) != ref.samples:
            raise ValueError(
                f"{ref.url} holds {len(found)} samples where its entry says {ref.samples}: "
                "the shard changed after it was committed ('cai-ray verify' names the damage)"
            )
        self._cache[shard] = found
        while len(self._cache) > self.cached_shards:
            self._cache.popitem(last=False)
        return found


class ShardStream(IterableDataset):
    """The samples of synthesis outputs, every one at most once an epoch across all ranks and
    DataLoader workers: the epoch's shard order (:func:`cai_ray.io.stream.shard_order`) dealt
    out, shard by shard, to ``world_size`` x workers readers. Call :meth:`set_epoch` before
    each epoch (as with a ``DistributedSampler``); it reaches persistent workers too (the epoch
    lives in shared memory). ``rank`` and ``world_size`` default to torch.distributed's where
    it is initialised.

    Shards differ in size, so readers' shares do too. ``equal_steps`` (default: where
    ``world_size`` > 1) stops every reader at the smallest reader's share, computed from the
    shard entries, so every rank gets the same batches and a data-parallel loop never waits
    on a rank that has run out (the rest of the epoch's samples come in other epochs' orders);
    then a reader without a shard is an error, as it would make every epoch empty. Without
    ``equal_steps`` every sample comes once an epoch, and a reader without a shard warns.

    ``shuffle_buffer`` (0: none) mixes each reader's samples across its shards, seeded by
    (seed, epoch, reader); ``decode_workers`` threads decode each reader's images, and
    ``transform`` runs in the thread that iterates, in the stream's order, so a random
    augmentation seeded there repeats whatever the thread count.
    """

    def __init__(
        self,
        output_or_outputs: str | list[str],
        *,
        seed: int = 0,
        shuffle_buffer: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        equal_steps: bool | None = None,
        pixels: Pixels = "float",
        color: ColorMode | None = None,
        transform: Transform | None = None,
        decode_workers: int = 1,
    ) -> None:
        if shuffle_buffer < 0 or decode_workers < 1:
            raise ValueError("shuffle_buffer must be at least 0 and decode_workers at least 1")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else torch.distributed.get_rank() if distributed else 0
        self.world_size = (
            world_size
            if world_size is not None
            else torch.distributed.get_world_size()
            if distributed
            else 1
        )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not one of {self.world_size}")
        self.equal_steps = self.world_size > 1 if equal_steps is None else equal_steps
        self.shards = _committed(output_or_outputs)
        self.seed, self.shuffle_buffer, self.decode_workers = seed, shuffle_buffer, decode_workers
        self.pixels, self.color, self.transform = pixels, color, transform
        self._epoch = multiprocessing.RawValue("q", 0)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def __getstate__(self) -> dict[str, Any]:
        """The epoch stays shared with the DataLoader workers this dataset is sent to (spawn,
        forkserver); any other pickle (a copy, a Ray task's argument) takes its value."""
        state = self.__dict__.copy()
        if multiprocessing.context.get_spawning_popen() is None:
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        readers, reader = self.world_size * workers, self.rank * workers + worker_id
        epoch = self.epoch
        order = stream.shard_order(len(self.shards), self.seed, epoch)
        if len(self.shards) < readers:
            message = (
                f"{len(self.shards)} shards for {readers} readers ({self.world_size} ranks x "
                f"{workers} DataLoader workers): "
            )
            if self.equal_steps:
                raise ValueError(
                    message + "with equal_steps every epoch would be empty; use fewer "
                    "DataLoader workers, or write more, smaller shards"
                )
            warnings.warn(message + "some read nothing", stacklevel=2)
        mine = [self.shards[i].url for i in stream.dealt(order, readers)[reader]]
        items = stream.decoded(stream.read_samples(mine), self._decoded, self.decode_workers)
        if self.shuffle_buffer:
            rng = np.random.default_rng([self.seed, epoch, reader])
            items = stream.shuffled(items, self.shuffle_buffer, rng)
        if self.equal_steps:
            items = islice(items, stream.common_share(self.shards, order, readers))
        return map(self.transform, items) if self.transform else items

    def _decoded(self, sample: Sample) -> dict[str, Any]:
        return sample_item(sample, self.pixels, self.color)
