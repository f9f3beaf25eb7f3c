"""CAI itself (cai-normal, cai-mixed or paste): the injector of :mod:`cai_ray.core.cai` over a
DAAD's patterns, read lazily. Its parameters are the job's ``cai`` section."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import ConfigDict

from cai_ray.core.cai import CAIInjector, CAIParams
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import PatternBank, pattern_weights
from cai_ray.io.settings import Settings
from cai_ray.synthesizers.base import BuildContext, MethodSettings


class CAIMethod(Settings, MethodSettings):
    """``synthesizer: {method: cai}`` (the default), tuned by the ``cai`` section."""

    model_config = ConfigDict(frozen=True)
    method: Literal["cai"] = "cai"
    needs_daad: ClassVar[bool] = True

    def anomaly_count(self, cai: CAIParams) -> int:
        return cai.quotas.total

    def check(self, context: BuildContext) -> None:
        """The DAAD's filters leave patterns (building reads only the records table): a clear
        error in the driver, not an actor that dies on Ray."""
        self.build(context)

    def build(self, context: BuildContext) -> CAIInjector:
        if context.daad is None:
            raise ValueError("synthesizer 'cai' needs a DAAD")
        patterns, weights = daad_patterns(context, context.daad, context.daad.drawn_classes())
        return CAIInjector(patterns, context.cai, weights)


def daad_patterns(
    context: BuildContext, daad: DaadConfig, classes: list[AnomalyClass] | None
) -> tuple[PatternBank, np.ndarray | None]:
    """The DAAD's patterns of ``classes`` (None: all) a job may draw (its domain and tag
    exclusions, cache and damage report), and per-pattern weights from its draw mode and class
    weights (None: every pattern alike)."""
    patterns = PatternBank(
        daad.path,
        mode=context.mode,
        exclude_domains=daad.exclude_domains,
        include_classes=classes,
        exclude_tags=daad.exclude_tags,
        cache_bytes=daad.cache_mb * 2**20,
        damaged=context.damaged,
    )
    return patterns, pattern_weights(patterns, daad)
