"""Where a job's anomaly sources come from: a DAAD, built on first use if asked, and filters."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cai_ray.core.cai import DrawMode
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.records import Tag
from cai_ray.io.settings import Settings


class DaadBuildConfig(Settings):
    spec: str = Field(description="DAAD spec YAML, e.g. configs/daad/shared_data.yaml.")
    data_root: str = Field(description="Folder the spec's paths are relative to.")


class DaadConfig(Settings):
    path: str = Field(description="A DAAD built by 'cai-ray daad build'.")
    build: DaadBuildConfig | None = Field(
        None, description="Build the DAAD at 'path' from this spec first if it is not there."
    )
    exclude_domains: list[str] = Field(
        default_factory=list,
        description="Never use these domains as sources: the dataset being evaluated (leakage).",
    )
    exclude_tags: list[Tag] = Field(
        default_factory=list,
        description="Never use records carrying any of these tags (a source's 'tags' in the "
        "DAAD spec), e.g. [foreign_object]: objects lying on a surface rather than defects of it.",
    )
    include_classes: list[AnomalyClass] | None = None
    draw: DrawMode = Field(
        "records",
        description="How a pattern is drawn among those the filters leave: 'records' every "
        "pattern alike (a class's or domain's share follows its size), 'classes' every class "
        "alike, 'domains' every source domain alike; then a pattern within. class_weights, "
        "when given, set each class's share whatever the mode (under 'domains' a class's share "
        "is split evenly among the domains that have it).",
    )
    class_weights: dict[AnomalyClass, float] | None = Field(
        None,
        description="Draw each listed class with probability proportional to its weight, "
        "whatever its number of patterns (e.g. {crack: 2, stain: 1}); classes not listed, or "
        "with weight 0, are not drawn. None: the draw mode decides.",
    )
    cache_mb: int = Field(
        512,
        ge=1,
        description="Decoded source patterns each injection actor keeps (LRU); the rest of the "
        "DAAD is read on demand, so a DAAD larger than memory works.",
    )

    @field_validator("class_weights")
    @classmethod
    def _usable_weights(
        cls, weights: dict[AnomalyClass, float] | None
    ) -> dict[AnomalyClass, float] | None:
        if weights is not None:
            if any(w < 0 for w in weights.values()):
                raise ValueError("class weights must be >= 0")
            if not any(w > 0 for w in weights.values()):
                raise ValueError("at least one class weight must be above 0")
        return weights

    @model_validator(mode="after")
    def _some_class_drawn(self) -> DaadConfig:
        if self.drawn_classes() == []:
            raise ValueError(
                f"no class is drawn: include_classes {sorted(map(str, self.include_classes or []))}"
                " and the classes with a positive weight do not overlap"
            )
        return self

    def drawn_classes(self) -> list[AnomalyClass] | None:
        """The classes patterns may come from (``include_classes`` and positive weights);
        None: all."""
        classes = self.include_classes
        if self.class_weights is not None:
            weighted = [c for c, w in self.class_weights.items() if w > 0]
            classes = [c for c in weighted if classes is None or c in classes]
        return classes
