"""CDM speed: training steps (images/s) and sampling (samples/s) of a network of the given size,
on random data (speed does not depend on the weights or the pixels).

Needs no Ray; on a GPU machine with PyTorch and diffusers:

    python bench/bench_cdm.py --image-size 96 256 --device cuda
"""

from __future__ import annotations

import argparse
import json

import torch
from common import seconds_per_call

from cai_ray.cdm.model import CDMModelConfig, build_unet, network_input
from cai_ray.cdm.sampler import inpaint, make_scheduler
from cai_ray.cdm.train import autocast_dtype


def training_rate(
    unet: torch.nn.Module, size: int, batch: int, device: torch.device, steps: int
) -> float:
    """Images/s of the training step: forward under autocast, masked MSE, backward, AdamW."""
    optimiser = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    dtype = autocast_dtype("auto", device)
    clean = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    labels = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            predicted = unet(
                network_input(clean + noise, clean, mask), timesteps, class_labels=labels
            ).sample
        loss = ((predicted.float() - noise) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return batch / seconds_per_call(step, steps, str(device))


def sampling_rate(
    unet: torch.nn.Module, size: int, batch: int, device: torch.device, kind: str, steps: int
) -> float:
    """Samples/s of :func:`inpaint` (the whole denoising loop) on one batch."""
    from diffusers import DDPMScheduler

    scheduler = make_scheduler(kind, dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config))
    normal = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    dtype = autocast_dtype("auto", device)
    unet.eval()
    noise = torch.randn_like(normal)

    def sample() -> None:
        inpaint(unet, scheduler, normal, mask, labels, noise, steps, dtype)

    return batch / seconds_per_call(sample, 1, str(device), warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, nargs="+", default=[96])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256, 256])
    parser.add_argument(
        "--train-batch", type=int, default=64, help="at the first size; halved per doubling"
    )
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--sample-batch", type=int, default=128, help="likewise")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = CDMModelConfig(block_out_channels=args.channels)
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": config.model_dump(),
        "precision": str(autocast_dtype("auto", device)),
    }
    for size in args.image_size:
        shrink = max(1, (size // args.image_size[0]) ** 2)  # the same pixels per batch
        train_batch = max(1, args.train_batch // shrink)
        sample_batch = max(1, args.sample_batch // shrink)
        figures[f"batches_{size}px"] = {"train": train_batch, "sample": sample_batch}
        unet = build_unet(config, 1, size).to(device)
        figures["parameters"] = sum(p.numel() for p in unet.parameters())
        figures[f"train_images_per_s_{size}px"] = training_rate(
            unet, size, train_batch, device, args.train_steps
        )
        for kind, steps in (("ddim", 50), ("dpm", 20)):
            figures[f"samples_per_s_{size}px_{kind}{steps}"] = sampling_rate(
                unet, size, sample_batch, device, kind, steps
            )
        print(json.dumps(figures), flush=True)  # what is done so far, should a larger size fail
        if device.type == "cuda":
            figures[f"peak_gpu_memory_gib_{size}px"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
