"""CAI itself (cai-normal, cai-mixed or paste): the injector of :mod:`cai_ray.core.cai` over a
DAAD's patterns, read lazily. Its parameters are the job's ``cai`` section, given to CAI (and
to the CDM, whose masks follow CAI's rules) by :func:`cai_ray.synthesizers.registry.tuned`, so
no other method sees it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import ConfigDict, PrivateAttr

from cai_ray.core.cai import CAIInjector, CAIParams
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import PatternBank, pattern_weights
from cai_ray.io.settings import Settings
from cai_ray.synthesizers.base import BuildContext, MethodSettings


class TunedByCAI(Settings, MethodSettings):
    """The settings of a method tuned by the job's ``cai`` section besides its own: the job
    gives the section to them (:meth:`tuned`) before they count or build anything."""

    _cai: CAIParams | None = PrivateAttr(None)

    @property
    def cai(self) -> CAIParams:
        if self._cai is None:
            raise RuntimeError(
                f"synthesizer {self.method!r} was not given the job's cai section (tuned)"
            )
        return self._cai

    def tuned(self, cai: CAIParams) -> Self:
        """These settings with the job's ``cai`` section."""
        copy = self.model_copy()
        copy._cai = cai
        return copy

    def anomaly_count(self) -> int:
        return self.cai.quotas.total

    def label_floor(self, details: dict[str, Any]) -> int:
        return self.cai.min_mask_pixels


class CAIMethod(TunedByCAI):
    """``synthesizer: {method: cai}`` (the default), tuned by the ``cai`` section."""

    model_config = ConfigDict(frozen=True)
    method: Literal["cai"] = "cai"
    needs_daad: ClassVar[bool] = True

    def check(self, context: BuildContext) -> None:
        """The DAAD's filters leave patterns (building reads only the records table): a clear
        error in the driver, not an actor that dies on Ray."""
        self.build(context)

    def build(self, context: BuildContext) -> CAIInjector:
        if context.daad is None:
            raise ValueError("synthesizer 'cai' needs a DAAD")
        patterns, weights = daad_patterns(context, context.daad, context.daad.drawn_classes())
        return CAIInjector(patterns, self.cai, weights)


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
