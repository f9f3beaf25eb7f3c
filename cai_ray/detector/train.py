"""Training the detector on synthesis output: a plain loop (a Ray Train wrapper runs the same
function per worker), with a checkpoint every epoch and resume from the last one.

DRAEM's schedule: Adam at ``learning_rate``, multiplied by 0.2 at 80% and 90% of the epochs,
focal loss on every pixel. Same config and seed give the same weights, resumed or not (CPU).
Resuming with more ``epochs`` extends the run: each epoch's rate is a function of the epoch and
the count asked for now (:func:`learning_rate_at`), so an extended run goes back to the full
rate until 80% of the new count. Any other change of config is refused.

Samples come from the shards (local or s3://), never all in memory, one of two ways
(``ingest``): ``stream`` (the default) reads them here (:mod:`cai_ray.io.stream`; memory is the
shuffle buffer plus two shards read ahead; batches a pure function of seed, epoch and rank);
``ray_data`` reads and decodes them in Ray Data tasks (:mod:`cai_ray.train.data`), which Ray
Train splits between its workers (``get_dataset_shard``). Each epoch of ``ray_data`` uses every
sample once (but for fewer than one per worker, which Ray Train's equal split leaves out), the
last batch possibly short. Its order is a function of seed and epoch in one process, and the
tests find each of two workers on one machine given the same samples in the same order run
after run; on several machines Ray Train prefers blocks already on a worker's node, so which
worker gets which sample may follow Ray's scheduling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError

from cai_ray.detector.model import DiscriminativeUNet, focal_loss
from cai_ray.io import checkpoints, samples, storage, stream
from cai_ray.io.codecs import resize, resize_mask
from cai_ray.io.settings import Settings
from cai_ray.io.stream import ShardRef, Streaming, list_shards
from cai_ray.train.data import shard_dataset
from cai_ray.train.runner import resumable

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


class DetectorConfig(Settings):
    data: list[str] = Field(min_length=1, description="Outputs of 'cai-ray synth' to train on.")
    checkpoint_dir: str = Field(description="Where 'last.pt' is written each epoch (or s3://).")
    color: Literal["grey", "rgb"] = "grey"
    image_size: int = Field(256, ge=8)
    base_width: int = Field(64, ge=1, description="DRAEM: 64.")
    levels: int = Field(6, ge=2, le=6, description="DRAEM: 6.")
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1, description="Global batch, split evenly across workers.")
    learning_rate: float = Field(1e-4, gt=0)
    shuffle_buffer: int = Field(1024, ge=1, description="Samples mixed across shards.")
    seed: int = Field(0, ge=0)
    decode_workers: int = Field(
        4,
        ge=1,
        description="Threads decoding images (ingest: stream); a GPU outruns one. "
        "No effect on results.",
    )
    ingest: Literal["stream", "ray_data"] = Field(
        "stream",
        description="How samples reach the loop: 'stream' reads the shards here (batches a "
        "pure function of seed, epoch and rank), 'ray_data' through Ray Data and, on "
        "several workers, Ray Train's dataset shards.",
    )


def network_sample(
    files: dict[str, bytes], size: int, mode: Literal["grey", "rgb"]
) -> tuple[np.ndarray, np.ndarray]:
    """One shard sample as the network takes it: image (C, S, S) float32 in [0, 1] and mask
    (S, S) int64 in {0, 1}."""
    image, mask = samples.decode_sample(files, mode)
    image = resize(image, size)
    image = image if image.ndim == 3 else image[..., None]
    mask = resize_mask(mask, size)
    return np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / 255, mask.astype(np.int64)


def epoch_batches(
    shards: list[ShardRef],
    config: DetectorConfig,
    epoch: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's (images, masks) batches of one epoch, streamed by
    :func:`cai_ray.io.stream.epoch_batches`."""

    def decode(files: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
        return network_sample(files, config.image_size, config.color)

    streaming = Streaming(
        config.batch_size, config.shuffle_buffer, config.seed, config.decode_workers
    )
    for images, masks in stream.epoch_batches(
        shards, decode, streaming, epoch, rank=rank, world_size=world_size
    ):
        yield torch.from_numpy(images), torch.from_numpy(masks)


def training_dataset(config: DetectorConfig) -> ray.data.Dataset:
    """``config.data``'s samples as a Ray Data dataset of ``image`` and ``mask`` columns,
    decoded by :func:`network_sample` (the ``ray_data`` ingest)."""
    decode = partial(network_sample, size=config.image_size, mode=config.color)
    return shard_dataset(list_shards(config.data), decode, ("image", "mask"))


def dataset_batches(
    data: ray.data.Dataset | ray.data.DataIterator,
    config: DetectorConfig,
    epoch: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (images, masks) batches of ``batch_size // world_size`` (the last may be
    shorter) from a dataset or a worker's shard of one, mixed by a shuffle buffer seeded by
    (seed, epoch, rank)."""
    local_batch = config.batch_size // world_size
    if local_batch < 1:
        raise ValueError(f"batch_size {config.batch_size} is smaller than {world_size} workers")
    seed = int(np.random.SeedSequence([config.seed, epoch, rank]).generate_state(1)[0])
    for batch in data.iter_torch_batches(
        batch_size=local_batch,
        local_shuffle_buffer_size=config.shuffle_buffer,
        local_shuffle_seed=seed,
        device="cpu",
    ):
        yield batch["image"], batch["mask"]


def learning_rate_at(epoch: int, config: DetectorConfig) -> float:
    """DRAEM's step schedule: ``learning_rate`` times 0.2 for each of 80% and 90% of
    ``epochs`` that ``epoch`` (from 0) has reached."""
    milestones = (int(config.epochs * 0.8), int(config.epochs * 0.9))
    return config.learning_rate * 0.2 ** sum(epoch >= m for m in milestones)


def checkpoint_url(config: DetectorConfig) -> str:
    return storage.join(config.checkpoint_dir, CHECKPOINT_NAME)


def read_checkpoint(url: str) -> dict:
    """A checkpoint dict, its tensors on the CPU whatever device wrote it."""
    if not storage.exists(url):
        raise FileNotFoundError(
            f"checkpoint not found: {url} (train with 'cai-ray detector train')"
        )
    return checkpoints.read_checkpoint(url)


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the settings added since it was written at their defaults
    (one without ``ingest`` streamed), as a run of today would save it."""
    try:
        return DetectorConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return saved  # a setting since removed or changed: never resumable


def train_detector(
    config: DetectorConfig,
    device: str | torch.device = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda network: network,
    on_epoch: Callable[[dict], None] | None = None,
    data: ray.data.Dataset | ray.data.DataIterator | None = None,
) -> dict:
    """Train (or resume) and return the checkpoint dict: weights, optimiser, epoch, losses.

    Data-parallel use (the Ray Train wrapper): every rank runs this with its ``rank`` and
    ``world_size`` and a ``prepare`` that wraps the network for gradient averaging (DDP); each
    rank streams its own shards (:func:`epoch_batches`), or, with ``ingest: ray_data``, reads
    ``data``, its Ray Train dataset shard (one process without ``data`` reads
    :func:`training_dataset` itself). Rank 0 writes the checkpoints; all
    ranks read one to resume, so ``checkpoint_dir`` must be shared (s3://, or one machine's
    disk). Losses are rank 0's. ``on_epoch`` gets the checkpoint dict after every epoch.
    """
    if data is not None and config.ingest != "ray_data":
        raise ValueError(f"a Ray Data shard was given, but ingest is {config.ingest!r}")
    if config.ingest == "ray_data" and data is None:
        if world_size > 1:
            raise ValueError(
                "ingest ray_data on several workers reads Ray Train's dataset shards: "
                "train_on_ray(..., dataset=training_dataset(config))"
            )
        data = training_dataset(config)
    torch.manual_seed(config.seed)
    shards = list_shards(config.data)
    if sum(shard.samples for shard in shards) < config.batch_size:
        raise ValueError(f"{config.data} hold fewer samples than one batch ({config.batch_size})")
    channels = 3 if config.color == "rgb" else 1
    bare = DiscriminativeUNet(channels, 2, config.base_width, config.levels).to(device)
    optimiser = torch.optim.Adam(bare.parameters(), lr=config.learning_rate)
    state: dict = {"epoch": 0, "losses": [], "config": config.model_dump(mode="json")}
    url = checkpoint_url(config)
    if storage.exists(url):
        state = read_checkpoint(url)
        if not resumable(_with_defaults(state["config"]), config.model_dump(mode="json")):
            raise ValueError(f"{url} was trained with another config; use another checkpoint_dir")
        bare.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming %s after epoch %d", url, state["epoch"])
    network = prepare(bare)
    for epoch in range(state["epoch"], config.epochs):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate_at(epoch, config)
        network.train()
        total, seen = 0.0, 0
        batches = (
            epoch_batches(shards, config, epoch, rank=rank, world_size=world_size)
            if data is None
            else dataset_batches(data, config, epoch, rank=rank, world_size=world_size)
        )
        for images, masks in batches:
            loss = focal_loss(network(images.to(device)), masks.to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(images)
            seen += len(images)
        state = {
            "epoch": epoch + 1,
            "losses": [*state["losses"], total / max(seen, 1)],
            "config": config.model_dump(mode="json"),
            "model": bare.state_dict(),
            "optimiser": optimiser.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if rank == 0:
            checkpoints.write_checkpoint(url, state)
            log.info("epoch %d/%d: loss %.5f", epoch + 1, config.epochs, state["losses"][-1])
        if on_epoch is not None:
            on_epoch(state)
    return state
