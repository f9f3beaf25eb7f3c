"""Training on Ray Train: a plain training loop (the detector's ``train_detector``, the CDM's
``train_cdm``) run by a ``TorchTrainer`` on ``num_workers`` workers (DDP; GPUs when asked), one
per process. Both loops take (config, device, rank, world_size, prepare, on_epoch) and write
their own checkpoints, so resuming works the same with or without Ray. A loop whose input is a
Ray Data dataset (:mod:`cai_ray.train.data`) gets it through Ray Train: ``dataset`` goes to the
trainer, and each worker's loop gets its shard of it as ``data``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cai_ray.io import storage

if TYPE_CHECKING:
    import ray.data

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
    data = {"data": ray.train.get_dataset_shard("train")} if settings["with_dataset"] else {}
    loop(
        settings["config"],
        ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        prepare=ray.train.torch.prepare_model,
        on_epoch=lambda state: ray.train.report(
            {"epoch": state["epoch"], "loss": state["losses"][-1]}
        ),
        **data,
    )


def train_on_ray(
    loop: TrainingLoop,
    config: BaseModel,
    *,
    num_workers: int,
    use_gpu: bool = False,
    storage_options: dict[str, Any] | None = None,
    dataset: ray.data.Dataset | None = None,
    cpus_per_worker: float | None = None,
) -> None:
    """Run ``loop(config, ...)`` on every worker; raises if any worker failed. With
    ``dataset``, each worker's loop also gets ``data``: its part of every epoch (Ray Train's
    ``get_dataset_shard``: as many rows each), read with ``dataset``'s own execution options
    (its ``preserve_order``, not the driver's default). The tasks reading ``dataset`` need CPUs
    besides the workers' (``cpus_per_worker``; default: Ray Train's, one CPU or one GPU).
    A ``dataset`` for a loop that takes no ``data`` is refused here, before any worker starts."""
    parameters = inspect.signature(loop).parameters.values()
    takes_data = any(p.name == "data" or p.kind is p.VAR_KEYWORD for p in parameters)
    if dataset is not None and not takes_data:
        raise ValueError(
            f"{getattr(loop, '__name__', loop)} takes no data: it reads its own input, so "
            "give it no dataset"
        )
    from ray.train import DataConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = None
    if cpus_per_worker is not None:
        resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "loop": loop,
            "config": config,
            "storage": storage_options or {},
            "with_dataset": dataset is not None,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        datasets={"train": dataset} if dataset is not None else None,
        # the dataset's own options (preserve_order) rather than the driver's defaults
        dataset_config=DataConfig(
            execution_options=dataset.context.execution_options if dataset else None
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
