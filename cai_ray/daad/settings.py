"""Where a job's anomaly sources come from: a DAAD, built on first use if asked, and filters."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cai_ray.daad.classes import AnomalyClass


class DaadBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str = Field(description="DAAD spec YAML, e.g. configs/daad/shared_data.yaml.")
    data_root: str = Field(description="Folder the spec's paths are relative to.")


class DaadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="A DAAD built by 'cai-ray daad build'.")
    build: DaadBuildConfig | None = Field(
        None, description="Build the DAAD at 'path' from this spec first if it is not there."
    )
    exclude_domains: list[str] = Field(
        default_factory=list,
        description="Never use these domains as sources: the dataset being evaluated (leakage).",
    )
    include_classes: list[AnomalyClass] | None = None
    cache_mb: int = Field(
        512,
        ge=1,
        description="Decoded source patterns each injection actor keeps (LRU); the rest of the "
        "DAAD is read on demand, so a DAAD larger than memory works.",
    )
