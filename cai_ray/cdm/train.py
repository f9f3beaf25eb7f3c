"""Training the CDM on CAI's output: a plain loop (the Ray Train wrapper runs the same function
per worker), EMA weights, bf16 mixed precision on a GPU, a checkpoint every epoch and resume.

Each anomalous sample of the shards (its image, label mask and anomaly class) is one training
example: the network sees the image with the (slightly grown) mask region blanked, the mask and
the class, and learns to predict the noise added to the image (DDPM). The loss counts pixels
outside the mask at ``outside_weight``: they are given, the anomaly is what must be learnt.

A checkpoint folder (local or s3://) in diffusers' format:

- ``unet/`` (``config.json``, ``diffusion_pytorch_model.safetensors``): the EMA weights, what
  sampling uses; ``UNet2DModel.from_pretrained`` loads it;
- ``scheduler/scheduler_config.json``: the training noise schedule (DDPM);
- ``cdm.json``: image size, channels, the classes and how many samples of each it saw;
- ``training_state.pt``: raw weights, optimiser, EMA and epoch, for resume; written last, so
  it commits the epoch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import Field

from cai_ray.cdm.checkpoint import EXPORTED_FILES, INFO_NAME, STATE_NAME
from cai_ray.cdm.classes import class_id
from cai_ray.cdm.model import CDMModelConfig, build_unet, network_input
from cai_ray.io import checkpoints, samples, storage, stream
from cai_ray.io.codecs import resize, resize_mask
from cai_ray.io.settings import Settings
from cai_ray.io.stream import ShardRef, Streaming, list_shards
from cai_ray.train.runner import resumable
from cai_ray.version import __version__

log = logging.getLogger(__name__)


Precision = Literal["auto", "fp32", "bf16"]


class CDMConfig(Settings):
    data: list[str] = Field(min_length=1, description="Outputs of 'cai-ray synth' (CAI) to learn.")
    checkpoint_dir: str = Field(description="Where the model is written each epoch (or s3://).")
    color: Literal["grey", "rgb"] = "grey"
    image_size: int = Field(64, ge=8, description="The network's resolution.")
    model: CDMModelConfig = CDMModelConfig()
    epochs: int = Field(100, ge=1)
    checkpoint_every: int = Field(
        1, ge=1, description="Epochs between checkpoints (the last epoch always writes one)."
    )
    batch_size: int = Field(32, ge=1, description="Global batch, split evenly across workers.")
    learning_rate: float = Field(1e-4, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    precision: Precision = Field("auto", description="auto: bf16 on a GPU, fp32 on the CPU.")
    train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    mask_growth: int = Field(2, ge=0, description="Pixels the label mask is grown by.")
    outside_weight: float = Field(0.1, ge=0, le=1)
    shuffle_buffer: int = Field(1024, ge=1)
    decode_workers: int = Field(4, ge=1, description="Threads decoding images.")
    seed: int = Field(0, ge=0)


def _anomalies(entry: dict) -> int:
    """The samples of a shard the CDM learns from: those with an anomaly class (CAI's)."""
    return sum(entry["counts"].get("anomaly_class", {}).values())


def class_counts(shards: list[ShardRef]) -> dict[str, int]:
    """Samples per anomaly class over the shards (from their entries: no shard is read)."""
    counts: Counter[str] = Counter()
    for shard in shards:
        counts.update(shard.counts.get("anomaly_class", {}))
    return dict(sorted(counts.items()))


def decode_example(
    files: dict[str, bytes], size: int, mode: Literal["grey", "rgb"], growth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image (C, S, S) in [-1, 1], mask (1, S, S) in {0, 1}, class id), or ``None`` for a
    sample without an anomaly class (a normal image, a baseline's anomaly)."""
    meta = samples.read_meta(files)
    if "anomaly_class" not in meta:
        return None
    image, mask = samples.decode_sample(files, mode)
    image = resize(image, size)
    image = image if image.ndim == 3 else image[..., None]
    mask = resize_mask(mask, size).astype(np.uint8)
    if growth:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * growth + 1, 2 * growth + 1))
        mask = np.asarray(cv2.dilate(mask, kernel), np.uint8)
    return (
        np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / 127.5 - 1,
        mask[None].astype(np.float32),
        np.array(class_id(meta["anomaly_class"]), np.int64),
    )


def noise_scheduler(config: CDMConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule
    )


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


def _export(
    config: CDMConfig, unet: Any, ema: Any, scheduler: Any, info: dict, state: dict
) -> None:
    """Write the diffusers folders (EMA weights), the info, then the training state."""
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        with tempfile.TemporaryDirectory() as folder:
            unet.save_pretrained(Path(folder, "unet"))
            scheduler.save_pretrained(Path(folder, "scheduler"))
            Path(folder, INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True))
            for name in EXPORTED_FILES:
                data = Path(folder, name).read_bytes()
                storage.write_bytes_atomic(storage.join(config.checkpoint_dir, name), data)
    finally:
        ema.restore(unet.parameters())
    checkpoints.write_checkpoint(storage.join(config.checkpoint_dir, STATE_NAME), state)


def load_cdm(checkpoint_dir: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The EMA network (on the CPU, in eval mode), its training noise schedule and its info,
    from a local or s3:// checkpoint folder."""
    missing = [
        name for name in EXPORTED_FILES if not storage.exists(storage.join(checkpoint_dir, name))
    ]
    if missing:
        raise FileNotFoundError(
            f"{checkpoint_dir} is not a CDM checkpoint (missing {', '.join(missing)}): "
            "train one with 'cai-ray cdm train'"
        )
    if storage.is_local(checkpoint_dir):
        return _load_exported(storage.local_path(checkpoint_dir))
    with tempfile.TemporaryDirectory() as folder:  # diffusers reads from a local folder
        for name in EXPORTED_FILES:
            Path(folder, name).parent.mkdir(parents=True, exist_ok=True)
            Path(folder, name).write_bytes(storage.read_bytes(storage.join(checkpoint_dir, name)))
        return _load_exported(Path(folder))


def _load_exported(folder: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
    schedule = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    info = json.loads((folder / INFO_NAME).read_text())
    return unet.eval(), schedule, info


def read_state(checkpoint_dir: str) -> dict | None:
    url = storage.join(checkpoint_dir, STATE_NAME)
    if not storage.exists(url):
        return None
    return checkpoints.read_checkpoint(url)


def train_cdm(
    config: CDMConfig,
    device: str | torch.device = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda network: network,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) and return the training state (epoch, losses, weights, ...).

    Data-parallel use as :func:`cai_ray.detector.train.train_detector`: every rank runs this
    with its ``rank`` and a ``prepare`` that wraps the network (DDP); rank 0 writes. Noise and
    timesteps come from a generator seeded by (seed, epoch, rank), so a resumed run makes the
    same draws as an uninterrupted one.
    """
    from diffusers.training_utils import EMAModel

    device = torch.device(device)
    torch.manual_seed(config.seed)
    shards = list_shards(config.data, _anomalies)
    classes = class_counts(shards)
    total = sum(shard.samples for shard in shards)
    if total < config.batch_size:
        raise ValueError(
            f"{config.data} hold {total} samples with an anomaly class (CAI output), fewer "
            f"than one batch ({config.batch_size}); the CDM learns from CAI's anomalies"
        )
    channels = 3 if config.color == "rgb" else 1
    bare: Any = build_unet(config.model, channels, config.image_size).to(device)
    optimiser = torch.optim.AdamW(bare.parameters(), lr=config.learning_rate)
    ema = EMAModel(bare.parameters(), decay=config.ema_decay, foreach=True)
    scheduler = noise_scheduler(config)
    alphas = scheduler.alphas_cumprod.to(device)
    dtype = autocast_dtype(config.precision, device)
    dumped = config.model_dump(mode="json")
    state: dict = {"epoch": 0, "losses": [], "config": dumped}
    previous = read_state(config.checkpoint_dir)
    if previous is not None:
        if not resumable(previous["config"], dumped):
            raise ValueError(
                f"{config.checkpoint_dir} holds a CDM trained with another config; "
                "use another checkpoint_dir"
            )
        bare.load_state_dict(previous["model"])
        optimiser.load_state_dict(previous["optimiser"])
        ema.load_state_dict(previous["ema"])
        ema.to(device)
        state = previous
        log.info("resuming %s after epoch %d", config.checkpoint_dir, state["epoch"])
    network = prepare(bare)
    streaming = Streaming(
        config.batch_size, config.shuffle_buffer, config.seed, config.decode_workers
    )

    def decode(files: dict[str, bytes]) -> tuple[np.ndarray, ...] | None:
        return decode_example(files, config.image_size, config.color, config.mask_growth)

    for epoch in range(state["epoch"], config.epochs):
        network.train()
        entropy = np.random.SeedSequence([config.seed, epoch, rank]).generate_state(2)
        draws = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        total_loss, seen = torch.zeros((), device=device), 0  # summed on the device: no sync
        for images, masks, labels in stream.epoch_batches(
            shards, decode, streaming, epoch, rank=rank, world_size=world_size
        ):
            clean = torch.from_numpy(images).to(device)
            mask = torch.from_numpy(masks).to(device)
            noise = torch.randn(clean.shape, generator=draws).to(device)
            steps = torch.randint(0, config.train_timesteps, (len(clean),), generator=draws)
            steps = steps.to(device)
            alpha = alphas[steps].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                predicted = network(
                    network_input(noisy, clean, mask),
                    steps,
                    class_labels=torch.from_numpy(labels).to(device),
                ).sample
            weight = mask + config.outside_weight * (1 - mask)
            loss = (weight * (predicted.float() - noise) ** 2).sum() / (
                weight.sum() * clean.shape[1]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            ema.step(bare.parameters())
            total_loss += loss.detach() * len(clean)
            seen += len(clean)
        state = {
            "epoch": epoch + 1,
            "losses": [*state["losses"], total_loss.item() / max(seen, 1)],
            "config": dumped,
            "model": bare.state_dict(),
            "optimiser": optimiser.state_dict(),
            "ema": ema.state_dict(),
        }
        if rank == 0 and ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs):
            info = {
                "version": __version__,
                "image_size": config.image_size,
                "channels": channels,
                "color": config.color,
                "classes": classes,
                "epoch": epoch + 1,
            }
            _export(config, bare, ema, scheduler, info, state)
            log.info("epoch %d/%d: loss %.5f", epoch + 1, config.epochs, state["losses"][-1])
        if on_epoch is not None:
            on_epoch(state)
    return state
