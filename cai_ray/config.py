"""Typed configuration of the synthesis job, loaded from YAML (see ``configs/``).

Relative paths are relative to the directory the command runs in, like any command-line tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cai_ray.core.cai import CAIParams
from cai_ray.core.foreground import ForegroundMethod
from cai_ray.core.views import Geometry
from cai_ray.daad.settings import DaadConfig
from cai_ray.io.codecs import DEFAULT_MAX_PIXELS, ImageFormat
from cai_ray.io.layout import KEY_PREFIX_MAX_LENGTH, LEASE_HEARTBEAT_S, LEASE_TIMEOUT_S
from cai_ray.io.settings import Settings, read_yaml, validate_settings
from cai_ray.io.storage import DEFAULT_REQUEST_ATTEMPTS, DEFAULT_TIMEOUT_S
from cai_ray.synthesizers.base import MethodSettings
from cai_ray.synthesizers.registry import SynthesizerConfig, default_method, tuned


class InputsConfig(Settings):
    paths: list[str] = Field(
        min_length=1,
        description="Normal images: folders or s3:// prefixes (searched recursively), glob "
        "patterns, lists (.txt, .csv or .parquet, e.g. from 'cai-ray inputs list').",
    )
    limit: int | None = Field(
        None, ge=1, description="Use only the first N images (sorted by path)."
    )
    geometry: Geometry = Field(
        default_factory=Geometry,
        description="How each image becomes image_size x image_size targets: resize (squash), "
        "letterbox (keep the aspect ratio, pad), crop or tile (at the image's own resolution).",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images with more pixels are skipped, counted, with this limit named.",
    )


class ForegroundConfig(Settings):
    method: ForegroundMethod = "full"
    model_path: str | None = Field(None, description="Local ONNX file for method 'rembg'.")
    min_fraction: float = Field(
        0.01, ge=0, le=1, description="Targets with a smaller foreground are skipped, reported."
    )


class LeaseConfig(Settings):
    """How a run holds its output against a second run (:mod:`cai_ray.pipeline.lease`)."""

    timeout_s: float = Field(
        LEASE_TIMEOUT_S,
        gt=0,
        description="Another run takes the output over once this run's heartbeat is this old "
        "(at once where it names the same host and a process that is gone).",
    )
    heartbeat_s: float = Field(
        LEASE_HEARTBEAT_S, gt=0, description="How often the run refreshes its lease."
    )

    @model_validator(mode="after")
    def _beats_within_timeout(self) -> LeaseConfig:
        if self.heartbeat_s >= self.timeout_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s:g}) must be below timeout_s "
                f"({self.timeout_s:g}), or a running job's lease would go stale"
            )
        return self


class OutputConfig(Settings):
    path: str
    samples_key_prefix: str = Field(
        "s",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=KEY_PREFIX_MAX_LENGTH,
        description="Sample keys are <prefix>-<input index>-<sample index>.",
    )
    targets_per_shard: int = Field(32, ge=1)
    image_format: ImageFormat = "png"
    include_normal: bool = Field(False, description="Also write each normal image, label 0.")
    preview_samples: int = Field(8, ge=0)
    lease: LeaseConfig = Field(
        default_factory=LeaseConfig,
        description="One run at a time writes into the output; another refuses, naming it.",
    )


class ResourcesConfig(Settings):
    executor: Literal["ray", "local"] = Field(
        "ray",
        description="'local' runs the same stages shard by shard in this process, without Ray "
        "(a single GPU box, debugging); the shards are the same bytes either way.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray; None: all.")
    injection_actors: int | None = Field(None, ge=1, description="None: one per CPU.")
    cpus_per_injection_actor: float = Field(0.75, gt=0)
    foreground_actors: int | None = Field(None, ge=1, description="None: one per 8 CPUs.")
    cpus_per_foreground_actor: float = Field(0.25, gt=0)
    gpus_per_injection_actor: float = Field(
        0,
        ge=0,
        le=1,
        description="GPUs each injection actor takes (the CDM's sampling); with GPUs, "
        "injection_actors defaults to as many actors as the GPUs hold.",
    )
    autoscaling: bool = Field(
        False,
        description="The cluster adds nodes on demand (KubeRay, 'ray up'): take the actor "
        "counts as given even beyond the CPUs up now, and let Ray ask for the nodes.",
    )
    actor_memory_mb: int | None = Field(
        None,
        ge=1,
        description="Memory each stage actor may hold (private resident memory, MB; Linux): "
        "Ray schedules the actors by it, and an actor over it is killed within 50 ms, as an "
        "OOM killer would, then restarted; the target it was on counts a worker death. None: "
        "no limit.",
    )
    worker_deaths_per_target: int = Field(
        2,
        ge=1,
        description="A target whose worker dies this many times (over actor_memory_mb, a "
        "crash) is given up, with the reason in the manifest, and the job goes on.",
    )


class StorageConfig(Settings):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (e.g. http://127.0.0.1:8333); None: the AWS chain's "
        "(AWS_ENDPOINT_URL or the profile). Credentials always come from the AWS chain.",
    )
    renamed = {"max_attempts": "request_attempts"}
    request_attempts: int = Field(
        DEFAULT_REQUEST_ATTEMPTS,
        ge=1,
        description="Attempts per object-store request: throttling, connection resets, refused "
        "connections and server errors are retried with exponential backoff (each wait half "
        "fixed, half random, capped at 20 s), then the job fails naming the endpoint and the "
        "object. The default 10 attempts wait 55.5 to 111 s in all: a store down for under 55 "
        "s is waited out, one that stays down fails within 2 minutes.",
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        description="How long one attempt waits to connect or for an answer: an endpoint that "
        "accepts and never answers fails after about request_attempts x timeout_s.",
    )


class SynthConfig(Settings):
    renamed = {
        "cai.max_attempts": "cai.max_draws",
        "synthesizer.max_attempts": "synthesizer.max_draws",
    }
    name: str = "cai"
    seed: int = Field(0, ge=0)
    image_size: int = Field(
        256, ge=16, description="Targets are size x size (inputs.geometry says how they are cut)."
    )
    color: Literal["auto", "grey", "rgb"] = Field(
        "auto", description="auto: grey if the first input image has grey content."
    )
    inputs: InputsConfig
    synthesizer: SynthesizerConfig = Field(
        default_factory=default_method,
        description="Which synthesizer makes the pseudo-anomalies (default CAI).",
    )
    daad: DaadConfig | None = Field(None, description="The anomaly sources; CAI needs one.")
    foreground: ForegroundConfig = ForegroundConfig()
    cai: CAIParams = CAIParams()
    output: OutputConfig
    resources: ResourcesConfig = ResourcesConfig()
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _cai_has_sources(self) -> SynthConfig:
        if self.synthesizer.needs_daad and self.daad is None:
            raise ValueError(
                f"synthesizer {self.synthesizer.method!r} needs a 'daad' section (its source "
                "patterns or masks)"
            )
        return self

    @model_validator(mode="after")
    def _geometry_fits(self) -> SynthConfig:
        self.inputs.geometry.check_size(self.image_size)
        return self

    @property
    def method_settings(self) -> MethodSettings:
        """The synthesizer's settings as the job uses them: given the ``cai`` section if the
        method is tuned by it (CAI, the CDM), so no other method sees that section."""
        return tuned(self.synthesizer, self.cai)

    @property
    def anomalies_per_target(self) -> int:
        return self.method_settings.anomaly_count()

    @property
    def samples_per_target(self) -> int:
        """Pseudo-anomalies per normal image, plus the normal image itself if it is written."""
        return self.anomalies_per_target + int(self.output.include_normal)


SHAPES_SAMPLES = frozenset(
    {
        "seed", "image_size", "color",
        "inputs.geometry.mode", "inputs.geometry.crops", "inputs.geometry.position",
        "inputs.geometry.overlap", "inputs.max_pixels",
        "foreground.method", "foreground.model_path", "foreground.min_fraction",
        "daad.exclude_domains", "daad.include_classes", "daad.class_weights", "daad.draw",
        "daad.exclude_tags",
        "output.samples_key_prefix", "output.targets_per_shard", "output.image_format",
        "output.include_normal",
        # every synthesizer's settings, by name across methods; the CDM's batch_size and
        # device too (another batch or device rounds the network's floats differently)
        "synthesizer.method", "synthesizer.anomalies_per_target", "synthesizer.min_mask_pixels",
        "synthesizer.max_draws", "synthesizer.variant", "synthesizer.area_ratio",
        "synthesizer.aspect_ratio", "synthesizer.scar_width", "synthesizer.scar_height",
        "synthesizer.scar_rotation", "synthesizer.jitter", "synthesizer.reference_size",
        "synthesizer.blend", "synthesizer.width_bounds", "synthesizer.gamma_shape",
        "synthesizer.gamma_scale", "synthesizer.max_patches", "synthesizer.resize_bounds",
        "synthesizer.label_threshold", "synthesizer.max_perlin_exponent",
        "synthesizer.threshold", "synthesizer.max_rotation", "synthesizer.augmentations",
        "synthesizer.max_beta", "synthesizer.textures", "synthesizer.checkpoint",
        "synthesizer.classes", "synthesizer.scheduler", "synthesizer.steps",
        "synthesizer.batch_size", "synthesizer.device", "synthesizer.precision",
        "synthesizer.label", "synthesizer.affine.rotation", "synthesizer.affine.scale_x",
        "synthesizer.affine.shear", "synthesizer.affine.flip", "synthesizer.side_bounds",
        "synthesizer.factor_bounds", "synthesizer.beta_mean", "synthesizer.beta_std",
        "synthesizer.beta_bounds",
        # a mixture's components: each a method's settings (as above) with its weight and name
        "synthesizer.components",
        "cai.blend", "cai.quotas.large", "cai.quotas.medium", "cai.quotas.small",
        "cai.match_scale", "cai.within_foreground", "cai.label_rule", "cai.label_regions",
        "cai.diff_threshold", "cai.median_size", "cai.pattern_dilation", "cai.min_mask_pixels",
        "cai.min_changed_share", "cai.min_contrast", "cai.max_draws", "cai.mask_kernel",
        "cai.blend_margin",
    }
)  # fmt: skip
"""The settings (dotted paths) whose values shape a job's samples: a resume over an output
started with other values is refused. Every settings field is in this set or in
:data:`LEAVES_SAMPLES_ALONE`, itself or a section above it (a test walks them all), so a new
field is classified on purpose."""

LEAVES_SAMPLES_ALONE = frozenset(
    {
        "name",
        # the input list and each input's stamps are parts of the job's identity of their own
        "inputs.paths", "inputs.limit",
        # the DAAD's contents are fingerprinted wherever it lies; how it was built is moot
        "daad.path", "daad.build",
        "daad.cache_mb",  # memory per actor
        "output.path", "output.preview_samples", "output.lease",
        "resources.executor", "resources.num_cpus", "resources.injection_actors",
        "resources.cpus_per_injection_actor", "resources.foreground_actors",
        "resources.cpus_per_foreground_actor", "resources.gpus_per_injection_actor",
        "resources.autoscaling",
        # which targets a run gives up after its workers die on them, never the bytes of others
        "resources.actor_memory_mb", "resources.worker_deaths_per_target",
        "storage.endpoint_url", "storage.request_attempts", "storage.timeout_s",
    }
)  # fmt: skip
"""The settings that change where samples go, how fast or with how much memory they are made,
but not their bytes: a resume may change them."""


LATER_SETTINGS = {"daad.draw": "records", "daad.exclude_tags": [], "cai.label_regions": True}
"""Settings that shape samples but came after outputs that may still be resumed, with the value
that writes the bytes of a cai-ray without them: at that value they are left out of a job's
identity, so an output begun before they existed resumes (its identity did not name them)."""


IDENTITY_NAMES = {"cai.match_scale": "stm", "cai.within_foreground": "ils"}
"""Settings renamed after outputs that may still be resumed, with the name a job's identity
keeps for them (the one they had), so such an output resumes."""


def sample_shaping(dumped: dict, prefix: str = "") -> dict:
    """A dumped config (``model_dump(mode="json")``) without the settings that leave samples
    alone, nor those of :data:`LATER_SETTINGS` at their old behaviour's value, and renamed
    settings under their :data:`IDENTITY_NAMES`: what a job's identity fingerprints."""
    kept = {}
    for key, value in dumped.items():
        path = f"{prefix}{key}"
        key = IDENTITY_NAMES.get(path, key)
        if path in LEAVES_SAMPLES_ALONE:
            continue
        if path in LATER_SETTINGS and value == LATER_SETTINGS[path]:
            continue
        if isinstance(value, dict) and path not in SHAPES_SAMPLES:
            kept[key] = sample_shaping(value, f"{path}.")
        else:
            kept[key] = value
    return kept


def load_config(path: str | Path, *, out: str | None = None) -> SynthConfig:
    """Load and validate a synthesis config (a local file or an s3:// object);
    ``out`` overrides ``output.path``."""
    raw = read_yaml(path)
    if out is not None:
        raw.setdefault("output", {})["path"] = out
    return validate_settings(raw, SynthConfig, "config", str(path))
