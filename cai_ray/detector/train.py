"""Training the detector on synthesis output: a plain loop (a Ray Train wrapper runs the same
function per worker), with a checkpoint every epoch and resume from the last one.

DRAEM's schedule: Adam at ``learning_rate``, multiplied by 0.2 at 80% and 90% of the epochs,
focal loss on every pixel. Same config and seed give the same weights, resumed or not (CPU).
Resuming with more ``epochs`` extends the run (the schedule then follows the new count); any
other change of config is refused.

Samples are held in memory as float tensors (256x256 grey: 256 kB each, 4 GB per 16,000); a
streaming loader for larger training sets comes with the Ray Train wrapper.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cai_ray.detector.model import DiscriminativeUNet, focal_loss
from cai_ray.io import storage
from cai_ray.io.codecs import decode_image, decode_mask, resize, resize_mask
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.layout import committed_shards, shard_name

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: list[str] = Field(min_length=1, description="Outputs of 'cai-ray synth' to train on.")
    checkpoint_dir: str = Field(description="Where 'last.pt' is written each epoch (or s3://).")
    color: Literal["grey", "rgb"] = "grey"
    image_size: int = Field(256, ge=8)
    base_width: int = Field(64, ge=1, description="DRAEM: 64.")
    levels: int = Field(6, ge=2, le=6, description="DRAEM: 6.")
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    seed: int = Field(0, ge=0)


def load_samples(outputs: list[str], size: int, mode: Literal["grey", "rgb"]) -> tuple:
    """Every committed sample of the outputs as (images (N, C, S, S) float32 in [0, 1], masks
    (N, S, S) int64), in shard and key order."""
    images, masks = [], []
    for out in outputs:
        entries = committed_shards(out)
        if not entries:
            raise FileNotFoundError(f"no committed shards in {out}: run 'cai-ray synth' first")
        for index in sorted(entries):
            for _, files in iter_tar(storage.read_bytes(storage.join(out, shard_name(index)))):
                ext = "png" if "png" in files else "jpg"
                image = resize(decode_image(files[ext], mode), size)
                images.append(image if image.ndim == 3 else image[..., None])
                masks.append(resize_mask(decode_mask(files["mask.png"]), size))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return pixels, torch.from_numpy(np.stack(masks).astype(np.int64))


def checkpoint_url(config: DetectorConfig) -> str:
    return storage.join(config.checkpoint_dir, CHECKPOINT_NAME)


def train_detector(
    config: DetectorConfig,
    device: str | torch.device = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda network: network,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Train (or resume) and return the checkpoint dict: weights, optimiser, epoch, losses.

    Data-parallel use (the Ray Train wrapper): every rank runs this with its ``rank`` and
    ``world_size`` and a ``prepare`` that wraps the network for gradient averaging (DDP). Each
    global batch of ``batch_size`` is split across the ranks; a last batch smaller than
    ``world_size`` is dropped so no rank waits alone. Rank 0 writes the checkpoints; all ranks
    read one to resume, so ``checkpoint_dir`` must be shared (s3://, or one machine's disk).
    Losses are rank 0's.
    """
    torch.manual_seed(config.seed)
    images, masks = load_samples(config.data, config.image_size, config.color)
    bare = DiscriminativeUNet(images.shape[1], 2, config.base_width, config.levels).to(device)
    optimiser = torch.optim.Adam(bare.parameters(), lr=config.learning_rate)
    milestones = [int(config.epochs * 0.8), int(config.epochs * 0.9)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=0.2)
    order = torch.Generator().manual_seed(config.seed)
    state: dict = {"epoch": 0, "losses": [], "config": config.model_dump(mode="json")}
    url = checkpoint_url(config)
    if storage.exists(url):
        state = torch.load(io.BytesIO(storage.read_bytes(url)), weights_only=False)
        if state["config"] != config.model_dump(mode="json") | {
            "epochs": state["config"]["epochs"]
        }:
            raise ValueError(f"{url} was trained with another config; use another checkpoint_dir")
        bare.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        order.set_state(state["order"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming %s after epoch %d", url, state["epoch"])
    network = prepare(bare)
    for epoch in range(state["epoch"], config.epochs):
        network.train()
        permutation = torch.randperm(len(images), generator=order)
        total, seen = 0.0, 0
        for start in range(0, len(images), config.batch_size):
            global_batch = permutation[start : start + config.batch_size]
            if len(global_batch) < world_size:
                continue
            batch = global_batch[rank::world_size]
            loss = focal_loss(network(images[batch].to(device)), masks[batch].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        scheduler.step()
        state = {
            "epoch": epoch + 1,
            "losses": [*state["losses"], total / max(seen, 1)],
            "config": config.model_dump(mode="json"),
            "model": bare.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "order": order.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if rank == 0:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            storage.write_bytes_atomic(url, buffer.getvalue())
            log.info("epoch %d/%d: loss %.5f", epoch + 1, config.epochs, state["losses"][-1])
        if on_epoch is not None:
            on_epoch(epoch + 1, state["losses"][-1])
    return state
