"""CDM training on real CAI output (the bundled sample), tiny network, CPU: learns, skips what
it cannot learn from, resumes to the same weights, writes diffusers' format, runs on Ray Train."""

import json
from pathlib import Path

import pytest
import torch

from cai_ray.cdm import train
from cai_ray.cdm.train import decode_example, load_cdm, read_state, train_cdm
from cai_ray.io.tar import iter_tar
from tests.cdm.conftest import tiny_config


def test_only_samples_with_an_anomaly_class_are_learnt(cai_output):
    data = Path(cai_output, "shard-000000.tar").read_bytes()
    decoded = [decode_example(files, 32, "grey", 2) for _, files in iter_tar(data)]
    normals = [d for d in decoded if d is None]
    assert len(normals) == 2 and len(decoded) == 10  # 2 targets x (4 anomalies + 1 normal)
    image, mask, label = next(d for d in decoded if d is not None)
    assert image.shape == (1, 32, 32) and image.min() >= -1 and image.max() <= 1
    assert mask.shape == (1, 32, 32) and set(mask.ravel().tolist()) <= {0.0, 1.0} and mask.any()
    assert label.dtype == "int64"


def test_the_checkpoint_is_a_diffusers_model_with_its_classes(tiny_cdm, cai_output):
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(f"{tiny_cdm}/unet")  # diffusers reads it directly
    assert unet.config.num_class_embeds == 8
    loaded, schedule, info = load_cdm(tiny_cdm)
    assert schedule["beta_schedule"] == "squaredcos_cap_v2"
    manifest = json.loads(Path(cai_output, "manifest.json").read_text())
    assert info["classes"] == manifest["counts"]["anomaly_class"]
    assert info["image_size"] == 32 and info["channels"] == 1 and info["epoch"] == 2
    state = read_state(tiny_cdm)
    assert state["epoch"] == 2 and state["losses"][-1] < state["losses"][0]
    # the exported weights are the EMA's, not the raw ones
    raw = state["model"]
    exported = loaded.state_dict()
    assert any(not torch.equal(raw[k], exported[k]) for k in raw)


def test_a_resumed_run_ends_with_the_same_weights(cai_output, tmp_path, monkeypatch):
    straight = train_cdm(tiny_config(cai_output, tmp_path / "straight", 3))
    real_export = train._export
    exports = []

    def crash_after_one_epoch(*args, **kwargs):
        if exports:
            raise KeyboardInterrupt("killed")
        exports.append(1)
        real_export(*args, **kwargs)

    monkeypatch.setattr(train, "_export", crash_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cdm(tiny_config(cai_output, tmp_path / "resumed", 3))
    monkeypatch.undo()
    resumed = train_cdm(tiny_config(cai_output, tmp_path / "resumed", 3))
    assert resumed["losses"] == pytest.approx(straight["losses"])
    for name, weights in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], weights)


def test_bad_training_data_and_changed_configs_are_refused(cai_output, tmp_path):

    config = tiny_config(cai_output, tmp_path / "c", 1)
    train_cdm(config)
    wider = config.model_copy(update={"learning_rate": 5e-4, "epochs": 2})
    with pytest.raises(ValueError, match="another config"):
        train_cdm(wider)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_cdm(config.model_copy(update={"batch_size": 4096, "checkpoint_dir": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match="cai-ray cdm train"):
        load_cdm(str(tmp_path / "nothing"))


@pytest.mark.usefixtures("ray_local")
def test_ray_train_runs_the_cdm_loop_on_two_workers(cai_output, tmp_path):
    from cai_ray.train.runner import train_on_ray

    config = tiny_config(cai_output, tmp_path / "ray", 2)
    train_on_ray(train_cdm, config, num_workers=2)
    state = read_state(config.checkpoint_dir)
    assert state["epoch"] == 2 and len(state["losses"]) == 2
    _, _, info = load_cdm(config.checkpoint_dir)
    assert info["epoch"] == 2


def test_a_dataset_for_a_loop_without_data_is_refused_before_ray_starts(tmp_path):
    """train_cdm streams its own shards: a dataset given with it would reach its workers as an
    argument it does not take."""
    from cai_ray.train.runner import train_on_ray

    config = tiny_config(str(tmp_path / "out"), tmp_path / "ray", 1)
    with pytest.raises(ValueError, match="train_cdm takes no data: .* give it no dataset"):
        train_on_ray(train_cdm, config, num_workers=1, dataset=[{"image": 0}])


def test_checkpoints_live_in_s3_and_resume_from_there(cai_output, s3_bucket):
    url = f"{s3_bucket}/cdm/model"
    first = train_cdm(tiny_config(cai_output, url, 1))
    assert read_state(url)["epoch"] == 1
    unet, _, info = load_cdm(url)
    assert info["epoch"] == 1 and unet.config.sample_size == 32
    extended = train_cdm(tiny_config(cai_output, url, 2))  # a resume may extend the run
    assert extended["losses"][0] == pytest.approx(first["losses"][0])
    assert len(extended["losses"]) == 2 and load_cdm(url)[2]["epoch"] == 2


def test_bf16_autocast_trains(cai_output, tmp_path):
    """The GPU's mixed precision path, exercised on the CPU (which supports bf16 autocast)."""
    config = tiny_config(cai_output, tmp_path, 1).model_copy(update={"precision": "bf16"})
    losses = train_cdm(config)["losses"]
    assert len(losses) == 1 and 0 < losses[0] < 10
