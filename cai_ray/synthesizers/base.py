"""What a method's settings provide to the job: whether it needs a DAAD, how many samples it
makes per target, checks the driver runs before any worker starts, the paths workers need
resolved, and how to build the synthesizer in a worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from cai_ray.core.synthesis import Synthesizer
from cai_ray.daad.settings import DaadConfig
from cai_ray.io.codecs import ColorMode


@dataclass(frozen=True)
class BuildContext:
    """What a synthesizer is built for besides its own settings: the job's sources, target size
    and colour."""

    daad: DaadConfig | None
    image_size: int
    mode: ColorMode
    damaged: dict[str, str] = field(default_factory=dict)
    """Damaged sources the synthesizer met (where -> why), filled as it draws; the job
    reports them per shard."""


class MethodSettings:
    """Mixed into each method's pydantic settings model (one file per method, registered in
    :mod:`cai_ray.synthesizers.registry`)."""

    method: str
    needs_daad: ClassVar[bool] = False

    def anomaly_count(self) -> int:
        """Pseudo-anomalies made per target."""
        raise NotImplementedError

    def label_floor(self, details: dict[str, Any]) -> int:
        """The fewest label pixels the sample with these ``details`` may have (smaller labels
        are redrawn or given up)."""
        raise NotImplementedError

    def check(self, context: BuildContext) -> None:
        """Fail in the driver, before any worker starts, on a missing source or model."""

    def source_files(self) -> list[str]:
        """Files besides the inputs and the DAAD whose contents shape the samples (a model,
        textures): a resume refuses an output whose files changed since it was started."""
        return []

    def for_workers(self) -> Self:
        """These settings with local paths made absolute (workers run elsewhere)."""
        return self

    def build(self, context: BuildContext) -> Synthesizer:
        raise NotImplementedError
