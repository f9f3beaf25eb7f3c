"""A small CAI output of the bundled sample (the CDM's training data) and a tiny CDM trained on
it, shared by the CDM tests."""

from pathlib import Path

import pytest

from cai_ray.cdm.model import CDMModelConfig
from cai_ray.cdm.train import CDMConfig, train_cdm
from tests.conftest import DEMO

TINY = CDMModelConfig(
    block_out_channels=[16, 32], layers_per_block=1, attention_levels=1, norm_num_groups=8
)


def tiny_config(data: str, checkpoint_dir: Path | str, epochs: int) -> CDMConfig:
    return CDMConfig(
        data=[data],
        checkpoint_dir=str(checkpoint_dir),
        image_size=32,
        model=TINY,
        epochs=epochs,
        batch_size=8,
        learning_rate=1e-3,
        decode_workers=2,
    )


@pytest.fixture(scope="session")
def cai_output(tmp_path_factory, demo_daad) -> str:
    from cai_ray.config import SynthConfig
    from cai_ray.pipeline.synth import run_synth

    out = tmp_path_factory.mktemp("cdm-data") / "out"
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 6},
            "image_size": 64,
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 2, "medium": 1, "small": 1}},
            "output": {
                "path": str(out),
                "include_normal": True,  # normal samples: the CDM must skip them
                "preview_samples": 0,
                "targets_per_shard": 2,
            },
            "resources": {"executor": "local"},  # the same bytes as on Ray (tested)
        }
    )
    run_synth(config, show_progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_cdm(tmp_path_factory, cai_output) -> str:
    checkpoint = tmp_path_factory.mktemp("cdm") / "model"
    train_cdm(tiny_config(cai_output, checkpoint, 2))
    return str(checkpoint)
