"""What a CDM checkpoint folder holds, readable without torch (the synthesis driver checks a
checkpoint and fingerprints its files before any worker loads it)."""

from __future__ import annotations

import json
from typing import Any

from cai_ray.io import storage

STATE_NAME = "training_state.pt"
INFO_NAME = "cdm.json"
EXPORTED_FILES = (
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    INFO_NAME,
)
"""What sampling reads (the EMA weights in diffusers' format, the noise schedule, the info)."""


def read_info(checkpoint_dir: str) -> dict[str, Any]:
    """A checkpoint's ``cdm.json`` (image size, channels, colour, classes learnt)."""
    url = storage.join(checkpoint_dir, INFO_NAME)
    if not storage.exists(url):
        raise FileNotFoundError(
            f"{checkpoint_dir} is not a CDM checkpoint (no {INFO_NAME}): train one with "
            "'cai-ray cdm train'"
        )
    return dict(json.loads(storage.read_bytes(url)))
