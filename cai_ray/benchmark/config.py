"""The benchmark's settings: the target, the synthesizers compared (each a name plus settings
merged into a shared synth config, or a ready-made output), seeds, detector and FID settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cai_ray.config import SynthConfig
from cai_ray.core.views import Geometry
from cai_ray.io.settings import Settings, load_settings


class SynthesizerEntry(Settings):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Row name in the results.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged into the base synth settings, e.g. {synthesizer: {method: nsa}}.",
    )
    data: str | None = Field(
        None,
        description="A finished 'cai-ray synth' output to train on instead of synthesising here "
        "(e.g. CDM samples made on a GPU cluster); '{seed}' is replaced by the seed. It must be "
        "made from this benchmark's training normals, with the run's seed.",
    )

    @model_validator(mode="after")
    def _data_or_settings(self) -> SynthesizerEntry:
        if self.data is not None and self.settings:
            raise ValueError(f"{self.name}: give 'data' or 'settings', not both")
        return self


class BenchmarkDetectorConfig(Settings):
    color: Literal["grey", "rgb"] = "grey"
    image_size: int = Field(256, ge=8)
    base_width: int = Field(64, ge=1)
    levels: int = Field(6, ge=2, le=6)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    shuffle_buffer: int = Field(1024, ge=1)
    eval_every: int = Field(1, ge=1, description="Score on the test set every k epochs.")


class FidConfig(Settings):
    weights: str = Field(description="Local TorchScript Inception file (see cai_ray.detector.fid).")
    samples: int = Field(500, ge=2, description="Synthetic anomalies compared per synthesizer.")


class BenchmarkConfig(Settings):
    name: str
    out: str = Field(description="Folder for synthesis outputs, checkpoints and the report.")
    target: str = Field(description="Target spec YAML (configs/targets/...).")
    data_root: str = Field(description="Folder the target spec's paths are relative to.")
    train_limit: int | None = Field(
        None, ge=1, description="Use the first N normal training images (sorted) only."
    )
    seeds: list[int] = Field([0], min_length=1)
    synth: dict[str, Any] = Field(
        description="Synth settings shared by every synthesizer (no inputs, output or seed)."
    )
    synthesizers: list[SynthesizerEntry] = Field(min_length=1)
    geometry: Geometry = Field(
        default_factory=Geometry,
        description="How the training normals are cut into targets (the synth job's "
        "inputs.geometry) and the test images are scored: tiles and letterboxed images are "
        "stitched back, so the metrics are taken at the test images' own size. Tiles are cut "
        "at each run's synth image_size and resized to detector.image_size, as in training.",
    )
    detector: BenchmarkDetectorConfig = BenchmarkDetectorConfig()
    fid: FidConfig | None = None
    examples: int = Field(6, ge=0, description="Test defects shown with their predictions.")

    @property
    def synth_image_size(self) -> int:
        """The shared synth settings' ``image_size`` (a row's ``settings`` may change it)."""
        return int(self.synth.get("image_size", SynthConfig.model_fields["image_size"].default))

    @model_validator(mode="after")
    def _geometry_fits(self) -> BenchmarkConfig:
        self.geometry.check_size(self.synth_image_size)
        return self


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    return load_settings(path, BenchmarkConfig, "benchmark config")
