"""Detector training throughput in images/s, three ways: the network alone on random tensors
(the ceiling the device sets), the shard loader alone (decode + shuffle, per decode-thread
count), and ``train_detector`` end to end on real synthesis output (loader, steps, one
checkpoint per epoch; the first epoch is left out as warm-up). ``--ingest stream ray_data``
measures the loader and the end to end run of each ingest on the same data and network (Ray
Data's loader over two epochs: its first starts Ray's workers).

Needs no Ray but for ``--ingest ray_data``, so it runs as is on a GPU machine with PyTorch:

    python bench/bench_detector.py --data out/magnetic_tile --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from common import seconds_per_call

from cai_ray.detector.model import DiscriminativeUNet, focal_loss
from cai_ray.detector.train import (
    DetectorConfig,
    dataset_batches,
    epoch_batches,
    train_detector,
    training_dataset,
)
from cai_ray.io.stream import list_shards


def network_rate(config: DetectorConfig, device: str, steps: int) -> dict[str, float]:
    """Forward, focal loss, backward and Adam step on random batches already on the device."""
    network = DiscriminativeUNet(1, 2, config.base_width, config.levels).to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    size = config.image_size
    images = torch.rand(config.batch_size, 1, size, size, device=device)
    masks = (torch.rand(config.batch_size, size, size, device=device) > 0.9).long()

    def step() -> None:
        loss = focal_loss(network(images), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return {"images_per_s": config.batch_size / seconds_per_call(step, steps, device, warmup=5)}


def loader_rate(config: DetectorConfig) -> dict[str, float]:
    """One epoch of :func:`epoch_batches` with nothing consuming the batches."""
    shards = list_shards(config.data)
    start = time.perf_counter()
    images = sum(len(batch) for batch, _ in epoch_batches(shards, config, 0))
    return {"images_per_s": images / (time.perf_counter() - start), "images": images}


def ray_data_loader_rate(config: DetectorConfig) -> dict[str, float]:
    """Two epochs of :func:`dataset_batches` over :func:`training_dataset`, nothing consuming
    the batches: the first starts Ray Data's workers, the second is the rate."""
    dataset = training_dataset(config)
    rates = []
    for epoch in range(2):
        start = time.perf_counter()
        images = sum(len(batch) for batch, _ in dataset_batches(dataset, config, epoch))
        rates.append(images / (time.perf_counter() - start))
    return {"images_per_s": rates[1], "first_epoch_images_per_s": rates[0], "images": images}


def images_per_epoch(config: DetectorConfig) -> int:
    """What one process trains on per epoch: whole batches of the stream, every sample of Ray
    Data."""
    shards = list_shards(config.data)
    if config.ingest == "ray_data":
        return sum(shard.samples for shard in shards)
    return sum(len(batch) for batch, _ in epoch_batches(shards, config, 0))


def end_to_end_rate(config: DetectorConfig, device: str) -> dict[str, float]:
    """``train_detector`` for ``config.epochs`` epochs; the rate over all but the first."""
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as checkpoints:
        start = time.perf_counter()
        train_detector(
            config.model_copy(update={"checkpoint_dir": checkpoints}),
            device,
            on_epoch=lambda _: ends.append(time.perf_counter()),
        )
    per_epoch = images_per_epoch(config)
    timed = ends[-1] - ends[0]
    return {
        "images_per_s": per_epoch * (len(ends) - 1) / timed,
        "first_epoch_s": ends[0] - start,
        "images_per_epoch": per_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="'cai-ray synth' outputs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--base-width", type=int, default=64, help="DRAEM: 64")
    parser.add_argument("--levels", type=int, default=6, help="DRAEM: 6")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="timed steps of the network alone")
    parser.add_argument("--epochs", type=int, default=3, help="end to end; the first is warm-up")
    parser.add_argument("--decode-workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--ingest",
        nargs="+",
        choices=["stream", "ray_data"],
        default=["stream"],
        help="the detector's ingest settings to measure (ray_data starts a local Ray)",
    )
    args = parser.parse_args()

    config = DetectorConfig(
        data=args.data,
        checkpoint_dir="unused",
        image_size=args.image_size,
        base_width=args.base_width,
        levels=args.levels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=1e-4,
    )
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "data"},
        "network_only": network_rate(config, args.device, args.steps),
    }
    best = max(args.decode_workers)
    if "stream" in args.ingest:
        for workers in args.decode_workers:
            figures[f"loader_{workers}_threads"] = loader_rate(
                config.model_copy(update={"decode_workers": workers})
            )
        figures[f"end_to_end_{best}_threads"] = end_to_end_rate(
            config.model_copy(update={"decode_workers": best}), args.device
        )
    if "ray_data" in args.ingest:
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING")
        ray_data = config.model_copy(update={"ingest": "ray_data"})
        figures["loader_ray_data"] = ray_data_loader_rate(ray_data)
        figures["end_to_end_ray_data"] = end_to_end_rate(ray_data, args.device)
    if args.device.startswith("cuda"):
        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
