"""The CDM network's inputs and outputs, and which classes a model may generate."""

import pytest
import torch

from cai_ray.cdm.classes import CLASSES, class_id, generated_classes
from cai_ray.cdm.model import build_unet, network_input
from cai_ray.daad.classes import AnomalyClass
from tests.cdm.conftest import TINY


def test_the_network_takes_image_context_mask_and_class():
    unet = build_unet(TINY, channels=3, image_size=32)
    assert unet.config.in_channels == 7 and unet.config.out_channels == 3
    assert unet.config.num_class_embeds == len(CLASSES) == 8
    noisy, normal = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:16, 8:16] = 1
    stacked = network_input(noisy, normal, mask)
    assert stacked.shape == (2, 7, 32, 32)
    assert torch.all(stacked[:, 3:6, 8:16, 8:16] == 0)  # the anomaly region is hidden
    assert torch.equal(stacked[:, 3:6, :8], normal[:, :, :8])
    out = unet(stacked, torch.tensor([5, 900]), class_labels=torch.tensor([0, 7])).sample
    assert out.shape == (2, 3, 32, 32)
    # the class changes the prediction: the embedding is wired in
    other = unet(stacked, torch.tensor([5, 900]), class_labels=torch.tensor([3, 2])).sample
    assert not torch.allclose(out, other)


def test_sizes_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        build_unet(TINY.model_copy(update={"block_out_channels": [16, 32, 32]}), 1, 34)
    with pytest.raises(ValueError, match="norm_num_groups"):
        build_unet(TINY.model_copy(update={"block_out_channels": [12, 32]}), 1, 32)


def test_only_learnt_classes_are_generated():
    learnt = {"crack": 10, "stain": 3}
    assert generated_classes(learnt, None, "m") == ["crack", "stain"]
    assert generated_classes(learnt, [AnomalyClass.CRACK], "m") == ["crack"]
    with pytest.raises(ValueError, match="never saw hole"):
        generated_classes(learnt, [AnomalyClass.HOLE, AnomalyClass.CRACK], "m")
    assert class_id("crack") == CLASSES.index(AnomalyClass.CRACK)
