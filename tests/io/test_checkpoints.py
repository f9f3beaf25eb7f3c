"""Checkpoints: the detector's and the CDM's training state read back whole with
``weights_only=True``; a file cut short, overwritten or holding foreign objects refused with an
error that names it."""

import io

import pytest
import torch

from cai_ray.io.checkpoints import CheckpointError, read_checkpoint, write_checkpoint


def _detector_state() -> dict:
    """What ``train_detector`` saves each epoch."""
    from cai_ray.detector.model import DiscriminativeUNet
    from cai_ray.detector.train import DetectorConfig

    network = DiscriminativeUNet(1, 2, 8, 2)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.rand(2, 1, 32, 32)).mean().backward()
    optimiser.step()  # the optimiser's state now holds its per-parameter tensors
    config = DetectorConfig(data=["out"], checkpoint_dir="ckpt")
    return {
        "epoch": 1,
        "losses": [0.5],
        "config": config.model_dump(mode="json"),
        "model": network.state_dict(),
        "optimiser": optimiser.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def _cdm_state() -> dict:
    """What ``train_cdm`` saves with its export: the EMA's state besides the network's."""
    pytest.importorskip("diffusers")
    from diffusers.training_utils import EMAModel

    from cai_ray.cdm.model import CDMModelConfig, build_unet

    tiny = CDMModelConfig(
        block_out_channels=[16, 32], layers_per_block=1, attention_levels=1, norm_num_groups=8
    )
    network = build_unet(tiny, 1, 32)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    ema = EMAModel(network.parameters(), decay=0.99, foreach=True)
    ema.step(network.parameters())
    return {
        "epoch": 2,
        "losses": [0.9, 0.4],
        "config": {"image_size": 32, "model": tiny.model_dump(mode="json")},
        "model": network.state_dict(),
        "optimiser": optimiser.state_dict(),
        "ema": ema.state_dict(),
    }


def _assert_same(read, written) -> None:
    if isinstance(written, torch.Tensor):
        assert isinstance(read, torch.Tensor) and torch.equal(read, written)
    elif isinstance(written, dict):
        assert read.keys() == written.keys()
        for key in written:
            _assert_same(read[key], written[key])
    elif isinstance(written, list | tuple):
        assert len(read) == len(written)
        for one, other in zip(read, written, strict=True):
            _assert_same(one, other)
    else:
        assert read == written


@pytest.mark.parametrize("make_state", [_detector_state, _cdm_state], ids=["detector", "cdm"])
def test_both_kinds_of_checkpoint_are_read_back_whole(make_state, tmp_path):
    state = make_state()
    url = str(tmp_path / "state.pt")
    write_checkpoint(url, state)
    read = read_checkpoint(url)
    _assert_same(read, state)
    assert read["model"] and all(t.device.type == "cpu" for t in read["model"].values())


@pytest.fixture
def saved(tmp_path) -> tuple[str, bytes]:
    url = str(tmp_path / "model.pt")
    write_checkpoint(url, {"epoch": 3, "weights": torch.arange(4000.0)})
    return url, (tmp_path / "model.pt").read_bytes()


@pytest.mark.parametrize("kept", [0.01, 0.5, 0.99])
def test_a_checkpoint_cut_short_is_refused_by_name(saved, kept, tmp_path):
    url, data = saved
    (tmp_path / "model.pt").write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(CheckpointError, match=r"model\.pt is not a readable checkpoint"):
        read_checkpoint(url)


def test_a_file_that_is_no_checkpoint_is_refused_by_name(tmp_path):
    url = tmp_path / "notes.pt"
    url.write_text("epoch 3, loss 0.2\n" * 20)
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a readable checkpoint"):
        read_checkpoint(str(url))


class _Payload:
    """An object unpickling would rebuild by running this module's code."""

    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return "ran"


def test_a_checkpoint_holding_other_objects_is_refused_without_running_them(tmp_path):
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "hook": _Payload()}, buffer)
    url = tmp_path / "foreign.pt"
    url.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"foreign\.pt .*Unsupported global"):
        read_checkpoint(str(url))
    assert not _Payload.ran


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_checkpoint(str(tmp_path / "absent.pt"))
