"""The detector's training on Ray Train: the plain loop of ``cai_ray.detector.train`` run by a
``TorchTrainer`` on ``num_workers`` workers (DDP; GPUs when asked), one per process."""

from __future__ import annotations

from typing import Any

from cai_ray.detector.train import (
    DetectorConfig,
    checkpoint_url,
    read_checkpoint,
    train_detector,
)
from cai_ray.io import storage


def _worker_loop(settings: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    storage.configure(**settings["storage"])
    context = ray.train.get_context()
    train_detector(
        DetectorConfig.model_validate(settings["config"]),
        ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        prepare=ray.train.torch.prepare_model,
        on_epoch=lambda state: ray.train.report(
            {"epoch": state["epoch"], "loss": state["losses"][-1]}
        ),
    )


def train_detector_on_ray(
    config: DetectorConfig,
    *,
    num_workers: int,
    use_gpu: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict:
    """Train with Ray Train and return the final checkpoint dict (read back from storage)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "storage": storage_options or {},
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"detector training failed: {result.error}") from result.error
    return read_checkpoint(checkpoint_url(config))
