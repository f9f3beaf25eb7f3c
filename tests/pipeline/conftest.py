import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cai_ray.config import OutputConfig, SynthConfig
from tests.conftest import DEMO


@pytest.fixture(scope="session")
def normals_with_a_corrupt_file(tmp_path_factory) -> Path:
    """The 12 bundled tiles plus a truncated JPEG, as a user's input folder might be."""
    folder = tmp_path_factory.mktemp("normals")
    for image in sorted((DEMO / "normal").glob("*.jpg")):
        (folder / image.name).write_bytes(image.read_bytes())
    data = sorted((DEMO / "normal").glob("*.jpg"))[0].read_bytes()
    (folder / "broken.jpg").write_bytes(data[:500])
    return folder


def job_config(daad: str, inputs: Path, out: Path, /, **overrides) -> SynthConfig:
    """The pipeline tests' job over ``inputs`` into ``out``, with sections overridden (a dict
    updates a section, anything else replaces it: ``daad=None``, ``inputs={...}`` too)."""
    raw = {
        "name": "test",
        "seed": 7,
        "inputs": {"paths": [str(inputs)]},
        "daad": {"path": daad},
        "cai": {"quotas": {"large": 2, "medium": 2, "small": 2}},
        "output": {"path": str(out), "targets_per_shard": 3, "preview_samples": 3},
        "resources": {"cpus_per_injection_actor": 0.5},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return SynthConfig.model_validate(raw)


@pytest.fixture
def make_config(demo_daad, normals_with_a_corrupt_file, tmp_path):
    def make(out: str = "out", **overrides) -> SynthConfig:
        return job_config(demo_daad, normals_with_a_corrupt_file, tmp_path / out, **overrides)

    return make


@dataclass(frozen=True)
class Undisturbed:
    """The fault tests' job run without a fault, and how long it took."""

    config: SynthConfig
    job_s: float

    @property
    def output(self) -> OutputConfig:
        return self.config.output


@pytest.fixture(scope="session")
def undisturbed(ray_local, demo_daad, normals_with_a_corrupt_file, tmp_path_factory):
    """The fault tests' job (one target a shard) run without a fault, once a session: what a
    disturbed run must write. Read it, never write into it."""
    from cai_ray.pipeline.synth import run_synth

    out = tmp_path_factory.mktemp("undisturbed") / "out"
    config = job_config(
        demo_daad, normals_with_a_corrupt_file, out, output={"targets_per_shard": 1}
    )
    started = time.monotonic()
    run_synth(config, show_progress=False)
    return Undisturbed(config, round(time.monotonic() - started, 1))
