"""'method: cdm' in the synthesis job: end to end on Ray (CPU fallback), the same shards without
Ray, and clear errors before any worker starts."""

from pathlib import Path

import pytest
import yaml

from cai_ray.cli import main
from cai_ray.config import SynthConfig
from cai_ray.daad.settings import DaadConfig
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.cdm.conftest import tiny_config
from tests.conftest import DEMO

pytestmark = pytest.mark.usefixtures("ray_local")


def _config(out: Path, daad: str, checkpoint: str, **synthesizer) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 3},
            "image_size": 64,
            "color": "grey",
            "daad": {"path": daad},
            "synthesizer": {"method": "cdm", "checkpoint": checkpoint, "steps": 2, **synthesizer},
            "cai": {"quotas": {"large": 1, "medium": 1, "small": 0}},
            "output": {"path": str(out), "include_normal": True, "targets_per_shard": 2},
            "resources": {"cpus_per_injection_actor": 0.5},
        }
    )


def test_the_job_samples_the_cdm_into_verified_shards(tiny_cdm, demo_daad, tmp_path):
    manifest = run_synth(_config(tmp_path / "ray", demo_daad, tiny_cdm), show_progress=False)
    assert manifest["complete"] and manifest["counts"]["method"] == {"cdm": 6, "none": 3}
    assert sum(manifest["counts"]["anomaly_class"].values()) == 6
    assert verify_output(str(tmp_path / "ray")).ok
    config = _config(tmp_path / "local", demo_daad, tiny_cdm)
    config.resources.executor = "local"
    run_synth(config, show_progress=False)
    for shard in sorted((tmp_path / "ray").glob("shard-*.tar")):
        assert shard.read_bytes() == (tmp_path / "local" / shard.name).read_bytes()


def test_a_subset_of_the_classes_is_generated(tiny_cdm, demo_daad, tmp_path):
    config = _config(tmp_path / "crack", demo_daad, tiny_cdm, classes=["crack"])
    config.resources.executor = "local"
    manifest = run_synth(config, show_progress=False)
    assert manifest["counts"]["anomaly_class"] == {"crack": 6}
    assert (tmp_path / "crack" / "preview.png").is_file()
    weighted = _config(tmp_path / "weighted", demo_daad, tiny_cdm)
    weighted.daad = DaadConfig.model_validate(
        {**weighted.daad.model_dump(), "class_weights": {"stain": 1, "crack": 0}}
    )
    weighted.resources.executor = "local"
    manifest = run_synth(weighted, show_progress=False)
    assert manifest["counts"]["anomaly_class"] == {"stain": 6}  # the DAAD's class weights


def test_a_missing_or_unsuitable_model_is_named_before_the_job_starts(
    tiny_cdm, demo_daad, tmp_path
):
    missing = _config(tmp_path / "a", demo_daad, str(tmp_path / "no-model"))
    with pytest.raises(FileNotFoundError, match="cai-ray cdm train"):
        run_synth(missing, show_progress=False)
    unknown = _config(tmp_path / "b", demo_daad, tiny_cdm, classes=["orifice"])
    with pytest.raises(ValueError, match="never saw orifice"):
        run_synth(unknown, show_progress=False)
    rgb = _config(tmp_path / "c", demo_daad, tiny_cdm).model_copy(update={"color": "rgb"})
    with pytest.raises(ValueError, match="makes grey images"):
        run_synth(rgb, show_progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cdm_train_command(cai_output, tmp_path, capsys):
    config = tmp_path / "cdm.yaml"
    settings = tiny_config(cai_output, tmp_path / "model", 1).model_dump(mode="json")
    config.write_text(yaml.safe_dump(settings))
    assert main(["cdm", "train", "--config", str(config)]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    config.write_text("epochs: [")
    assert main(["cdm", "train", "--config", str(config)]) == 2
    assert "invalid CDM config" in capsys.readouterr().err
