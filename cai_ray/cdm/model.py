"""The CDM network and its inputs.

A diffusers ``UNet2DModel`` that sees, stacked as channels, the noisy image, the normal image
with the anomaly region blanked out, and the region's mask (2C + 1 channels in, C out), plus a
learned embedding of the anomaly class (the 8 classes of :class:`AnomalyClass`). It predicts
the noise, as a DDPM does. Trained from scratch: no pretrained weights are needed.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import ConfigDict, Field, field_validator

from cai_ray.cdm.classes import CLASSES
from cai_ray.io.settings import Settings


class CDMModelConfig(Settings):
    """The UNet's size. The defaults are a real size for a GPU (about 30M parameters); the
    demo config shrinks it to run on a laptop CPU."""

    model_config = ConfigDict(frozen=True)
    block_out_channels: list[int] = Field([64, 128, 256, 256], min_length=2)
    layers_per_block: int = Field(2, ge=1)
    attention_levels: int = Field(
        2, ge=0, description="Self-attention in this many of the lowest-resolution levels."
    )
    norm_num_groups: int = Field(32, ge=1)

    @field_validator("block_out_channels")
    @classmethod
    def _positive(cls, channels: list[int]) -> list[int]:
        if min(channels) < 1:
            raise ValueError("channels must be positive")
        return channels


def build_unet(config: CDMModelConfig, channels: int, image_size: int) -> Any:
    """A fresh, randomly initialised CDM network for ``channels``-channel images."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    if image_size % 2 ** (levels - 1):
        raise ValueError(f"image_size {image_size} must be divisible by 2^{levels - 1}")
    if any(c % config.norm_num_groups for c in config.block_out_channels):
        raise ValueError(
            f"every block_out_channels value must be a multiple of norm_num_groups "
            f"({config.norm_num_groups})"
        )
    attention = [level >= levels - config.attention_levels for level in range(levels)]
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    return UNet2DModel(
        sample_size=image_size,
        in_channels=2 * channels + 1,
        out_channels=channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=config.norm_num_groups,
        num_class_embeds=len(CLASSES),
    )


def network_input(noisy: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The stacked input: noisy image, normal image blanked (0) where ``mask`` is 1, the mask.
    Images are in [-1, 1]; ``mask`` is (N, 1, H, W) in {0, 1}."""
    return torch.cat([noisy, normal * (1 - mask), mask], dim=1)
