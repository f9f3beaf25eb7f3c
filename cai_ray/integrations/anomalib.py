"""cai-ray's synthesizers where anomalib takes an anomaly generator: a torchvision ``v2``
transform that returns ``(image, mask)`` as anomalib's ``PerlinAnomalyGenerator`` does, so it
stands in for it with one line (DRAEM: ``model.augmenter = CAIAnomalyGenerator(...)``).

Needs the ``anomalib`` extra (torchvision); nothing else in cai_ray imports this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from cai_ray import api
from cai_ray.core.synthesis import Failure, sample_rng

Key = int | str
Keys = Key | Sequence[Key] | torch.Tensor | None


class CAIAnomalyGenerator(v2.Transform):
    """Pseudo-anomalies of any registered synthesizer for a CHW image or an NCHW batch (float in
    [0, 1], or uint8), with ``probability`` of an anomaly per image: returns the image(s), of the
    input's shape, dtype and device, and float32 masks {0, 1} of shape (1, H, W) or (N, 1, H, W),
    zero for an image left normal.

    ``method`` is a registered name, its settings passed on to :func:`cai_ray.api.synthesizer`
    (``daad``, ``seed``, ``cai``, ...), or a synthesizer made by :mod:`cai_ray.api`. One or three
    equal channels are synthesized grey, other three-channel images RGB. Pixels the synthesizer
    left as they were keep their exact input values.

    ``keys`` (one per image: a dataset index or a name such as the image's path) make the
    outcome a pure function of the key, the image and the seed; without them each image draws a
    fresh key from torch's random generator (so ``torch.manual_seed`` or Lightning's
    ``seed_everything`` repeats a run). A sample that cannot be made (a :class:`Failure` for each
    of the method's samples) leaves its image normal, counted in ``failures`` by cause.
    """

    def __init__(
        self, method: str | api.OnTheFly = "cai", *, probability: float = 0.5, **settings: Any
    ) -> None:
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability is in [0, 1]; got {probability}")
        if isinstance(method, api.OnTheFly):
            if settings:
                raise ValueError(
                    f"settings {sorted(settings)} go with a method name, not a synthesizer"
                )
            self.synthesizer = method
        else:
            self.synthesizer = api.synthesizer(method, **settings)
        self.probability = probability
        self.failures: Counter[str] = Counter()

    def forward(self, image: torch.Tensor, keys: Keys = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_values(image)
        if image.ndim == 3:
            if keys is not None and not isinstance(keys, int | str):
                raise ValueError(f"one image takes one key (an int or a str); got {keys!r}")
            return self._one(image, keys)
        if image.ndim != 4:
            raise ValueError(
                f"images are (C, H, W) or batches (N, C, H, W); got {tuple(image.shape)}"
            )
        if keys is None:
            per_image: list[Key | None] = [None] * image.shape[0]
        elif isinstance(keys, torch.Tensor):
            per_image = [int(k) for k in keys.reshape(-1).tolist()]
        elif isinstance(keys, int | str):
            raise ValueError(f"a batch takes a key per image; got the single key {keys!r}")
        else:
            per_image = list(keys)
        if len(per_image) != image.shape[0]:
            raise ValueError(f"{len(per_image)} keys for a batch of {image.shape[0]} images")
        made = [self._one(one, key) for one, key in zip(image, per_image, strict=True)]
        return torch.stack([m[0] for m in made]), torch.stack([m[1] for m in made])

    def _draw(self, key: Key | None) -> tuple[str, int] | None:
        """Whether this image gets an anomaly, and if so its key and which of the method's
        samples to make (the sample number picks e.g. CAI's scale, as its quotas share them)."""
        count = self.synthesizer.anomalies_per_target
        if key is None:
            if torch.rand(()).item() >= self.probability:
                return None
            name = f"draw-{torch.randint(2**62, ()).item()}"
            return name, int(torch.randint(count, ()).item())
        name = str(key)
        rng = sample_rng(self.synthesizer.seed, f"anomalib-generator:{name}", 0)
        if rng.random() >= self.probability:
            return None
        return name, int(rng.integers(count))

    def _one(self, image: torch.Tensor, key: Key | None) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = image.shape
        if channels not in (1, 3):
            raise ValueError(f"images have 1 or 3 channels; got {channels}")
        normal = torch.zeros((1, height, width), dtype=torch.float32, device=image.device)
        drawn = self._draw(key)
        if drawn is None:
            return image, normal
        name, first = drawn
        pixels = _to_uint8(image)  # (C, H, W)
        grey = bool((pixels == pixels[:1]).all())
        target = pixels[0] if grey else np.ascontiguousarray(pixels.transpose(1, 2, 0))
        count = self.synthesizer.anomalies_per_target
        for number in [(first + step) % count for step in range(count)]:
            [result] = self.synthesizer(target, key=name, indices=[number])
            if isinstance(result, Failure):
                self.failures[result.counted_as] += 1
                continue
            made = result.image[None] if grey else result.image.transpose(2, 0, 1)
            made = np.broadcast_to(made, pixels.shape)
            changed = torch.from_numpy((made != pixels).any(axis=0)).to(image.device)
            scale = 255.0 if image.is_floating_point() else 1.0
            values = torch.from_numpy(np.ascontiguousarray(made)).to(image.device)
            out = torch.where(changed, (values.float() / scale).to(image.dtype), image)
            mask = torch.from_numpy(result.mask > 0).to(image.device, torch.float32)
            return out, mask[None]
        return image, normal


def _check_values(image: torch.Tensor) -> None:
    """Floats are in [0, 1]: anomalib's generators take unnormalised images."""
    if image.dtype == torch.uint8:
        return
    if not image.is_floating_point():
        raise ValueError(f"images are float in [0, 1] or uint8; got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"float images are in [0, 1] (normalise after the generator); "
            f"got [{low:.3g}, {high:.3g}]"
        )


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """The image (checked) as uint8 numpy on the CPU."""
    if image.dtype == torch.uint8:
        return image.detach().cpu().numpy()
    values = image.detach().float().cpu()
    return (values * 255.0).round().to(torch.uint8).numpy()
