"""The Python API: any registered synthesizer on numpy images, outside the Ray job.

For synthesis on the fly, e.g. inside a PyTorch ``Dataset`` (as anomalib users drive its Perlin
generator)::

    from cai_ray import api

    synth = api.synthesizer("cai", daad="out/demo-daad", seed=0)
    for anomaly in synth(image, key="tile-17"):  # image: uint8, (H, W) grey or (H, W, 3) RGB
        anomaly.image, anomaly.mask, anomaly.provenance

Samples are the job's: the same settings, seed and key give the same samples as ``cai-ray synth``
makes for that target (at the job's image size), whatever process makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from cai_ray.config import SynthConfig, load_config
from cai_ray.core.cai import CAIParams
from cai_ray.core.synthesis import (
    BatchSynthesizer,
    Donor,
    Failure,
    PseudoAnomaly,
    Synthesizer,
)
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import prepare_daad
from cai_ray.io.codecs import ColorMode
from cai_ray.synthesizers.base import BuildContext, MethodSettings
from cai_ray.synthesizers.registry import METHODS, tuned


@dataclass(frozen=True)
class Anomaly:
    """One pseudo-anomaly: the image, its label mask (uint8 {0, 255}, the image's height and
    width) and its provenance (the JSON a shard stores with it)."""

    image: np.ndarray
    mask: np.ndarray
    provenance: dict[str, Any]


class OnTheFly:
    """A synthesizer for numpy images. Call it on an image (and optionally its foreground, a
    bool mask; default: the whole image) with a key that names the image; it returns the
    method's pseudo-anomalies for that image, a :class:`Failure` where one could not be made.
    Sources are opened on the first call for each colour mode and image size.

    A sample depends only on the settings, the seed, the key and its index, so one picked by
    ``indices`` is the same as in the full set:

    >>> import numpy as np
    >>> synth = synthesizer("cutpaste", seed=0)
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    >>> every = synth(image, key="tile-17")
    >>> [third] = synth(image, key="tile-17", indices=[2])
    >>> np.array_equal(third.image, every[2].image), third.provenance["sample_index"]
    (True, 2)
    """

    def __init__(
        self, settings: MethodSettings, cai: CAIParams, daad: DaadConfig | None, seed: int
    ) -> None:
        self.cai = cai
        """The ``cai`` section given at construction, handed to the method if it is tuned by
        it (CAI, the CDM): for reading; a new section needs a new ``OnTheFly``."""
        self.settings = tuned(settings.for_workers(), cai)
        self.daad = daad
        self.seed = seed
        self._built: dict[tuple[ColorMode, int], Synthesizer] = {}

    @property
    def anomalies_per_target(self) -> int:
        return self.settings.anomaly_count()

    def _synthesizer(self, image: np.ndarray) -> Synthesizer:
        if (
            image.dtype != np.uint8
            or image.ndim not in (2, 3)
            or image.ndim == 3
            and (image.shape[2] != 3)
        ):
            raise ValueError(
                f"images are uint8, (H, W) grey or (H, W, 3) RGB; got {image.dtype} {image.shape}"
            )
        mode: ColorMode = "grey" if image.ndim == 2 else "rgb"
        key = (mode, image.shape[0])
        if key not in self._built:
            context = BuildContext(self.daad, image.shape[0], mode)
            self.settings.check(context)
            self._built[key] = self.settings.build(context)
        return self._built[key]

    def __call__(
        self,
        image: np.ndarray,
        foreground: np.ndarray | None = None,
        *,
        key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> list[Anomaly | Failure]:
        """``key`` seeds the samples (the job uses the image's path relative to its inputs);
        ``donors`` are other normal images with their foregrounds (NSA takes patches from
        them); ``indices`` picks samples by number (default: all ``anomalies_per_target``),
        each the same as in the full set."""
        synthesizer = self._synthesizer(image)
        count = self.anomalies_per_target
        chosen = list(range(count)) if indices is None else [int(k) for k in indices]
        if not all(0 <= k < count for k in chosen):
            raise ValueError(f"sample indices {chosen} outside 0..{count - 1}")
        if foreground is None:
            foreground = np.ones(image.shape[:2], bool)
        if foreground.shape != image.shape[:2]:
            raise ValueError(
                f"foreground {foreground.shape} does not match the image {image.shape}"
            )
        foreground = foreground.astype(bool)
        if isinstance(synthesizer, BatchSynthesizer):
            [every] = synthesizer.synthesize_many([(image, foreground, key)], seed=self.seed)
            results: Sequence[PseudoAnomaly | Failure] = [every[k] for k in chosen]
        else:
            results = synthesizer.synthesize(
                image, foreground, seed=self.seed, target_key=key, donors=donors, indices=chosen
            )
        made: list[Anomaly | Failure] = []
        for index, result in zip(chosen, results, strict=True):
            if isinstance(result, Failure):
                made.append(result)
                continue
            provenance = {
                **result.details(),
                "method": result.method,
                "attempts": result.attempts,
                "sample_index": index,
                "target": key,
                "seed": self.seed,
            }
            made.append(Anomaly(result.image, result.mask, provenance))
        return made


def synthesizer(
    method: str = "cai",
    *,
    daad: str | None = None,
    seed: int = 0,
    cai: dict[str, Any] | None = None,
    exclude_domains: Sequence[str] = (),
    class_weights: dict[str, float] | None = None,
    draw: str = "records",
    exclude_tags: Sequence[str] = (),
    **settings: Any,
) -> OnTheFly:
    """A synthesizer from keyword arguments: ``method`` is a registered name (the registry's,
    below), ``daad`` a DAAD folder or URL (CAI and the CDM, and a mixture with either, need one;
    ``exclude_domains``, ``exclude_tags``, ``draw`` and ``class_weights`` as in the ``daad:``
    section), ``cai`` the ``cai:`` section as a dict (quotas, blend, ...), ``settings`` the
    method's own (e.g. ``variant="scar"``, or a mixture's ``components=[{"method": "cai",
    "weight": 0.7}, {"method": "fpi", "weight": 0.3}]``). Validated like a job config.

    >>> sorted(METHODS)
    ['cai', 'cdm', 'cutpaste', 'draem', 'fpi', 'glass', 'mixture', 'nsa']

    A method that needs no DAAD, on a synthetic RGB image (``cai`` needs ``daad=``):

    >>> import numpy as np
    >>> synth = synthesizer("cutpaste", seed=0, variant="scar", anomalies_per_target=4)
    >>> synth.anomalies_per_target
    4
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> first = synth(image, key="tile-17")[0]
    >>> first.image.shape, first.mask.dtype, first.provenance["method"]
    ((64, 64, 3), dtype('uint8'), 'cutpaste-scar')
    >>> bool(first.mask.any()), bool((first.image != image).any())
    (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"unknown synthesizer {method!r}; registered: {', '.join(METHODS)}")
    chosen = TypeAdapter(METHODS[method]).validate_python({"method": method, **settings})
    sources = None
    if daad is not None:
        sources = DaadConfig.model_validate(
            {
                "path": daad,
                "exclude_domains": list(exclude_domains),
                "exclude_tags": list(exclude_tags),
                "draw": draw,
                "class_weights": class_weights,
            }
        )
        prepare_daad(sources)
    elif chosen.needs_daad:
        raise ValueError(f"synthesizer {method!r} needs a DAAD: pass daad='path/to/daad'")
    params = TypeAdapter(CAIParams).validate_python(cai or {})
    return OnTheFly(chosen, params, sources, seed)


def synthesizer_from_config(path: str | Path) -> OnTheFly:
    """The synthesizer a job config describes (its ``synthesizer``, ``cai``, ``daad`` and
    ``seed``; the DAAD is built first if the config says how)."""
    config: SynthConfig = load_config(path)
    if config.daad is not None:
        prepare_daad(config.daad)
    return OnTheFly(config.synthesizer, config.cai, config.daad, config.seed)
