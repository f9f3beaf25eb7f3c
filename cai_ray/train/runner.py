"""Training on Ray Train: a plain training loop (the detector's ``train_detector``, the CDM's
``train_cdm``) run by a ``TorchTrainer`` on ``num_workers`` workers (DDP; GPUs when asked), one
per process. Both loops take (config, device, rank, world_size, prepare, on_epoch) and write
their own checkpoints, so resuming works the same with or without Ray."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from cai_ray.io import storage

TrainingLoop = Callable[..., dict]

_NO_EFFECT_ON_WEIGHTS = ("epochs", "decode_workers", "checkpoint_every")


def resumable(saved: dict, current: dict) -> bool:
    """Whether a checkpoint's config (``saved``) may be resumed with ``current``: they agree
    on everything but the epoch count (a resume may extend the run), the decode threads and
    the checkpoint interval, which change no weights."""

    def shaping(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in _NO_EFFECT_ON_WEIGHTS}

    return shaping(saved) == shaping(current)


def _worker_loop(settings: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    storage.configure(**settings["storage"])
    context = ray.train.get_context()
    loop: TrainingLoop = settings["loop"]
    loop(
        settings["config"],
        ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        prepare=ray.train.torch.prepare_model,
        on_epoch=lambda state: ray.train.report(
            {"epoch": state["epoch"], "loss": state["losses"][-1]}
        ),
    )


def train_on_ray(
    loop: TrainingLoop,
    config: BaseModel,
    *,
    num_workers: int,
    use_gpu: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Run ``loop(config, ...)`` on every worker; raises if any worker failed."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"loop": loop, "config": config, "storage": storage_options or {}},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
