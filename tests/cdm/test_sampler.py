"""Sampling: pixels outside the mask stay the normal image's, a sample is the same whatever its
batch, and the label mask comes from the conditioning mask (or its changed part)."""

import numpy as np
import pytest
import torch

from cai_ray.cdm.masks import MaskGenerator
from cai_ray.cdm.model import build_unet
from cai_ray.cdm.sampler import CDMSynthesizer, make_scheduler
from cai_ray.core.cai import CAIParams, Quotas
from cai_ray.core.synthesis import Failure, Patched
from tests.cdm.conftest import TINY


def _synthesizer(patterns, **options) -> CDMSynthesizer:
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    unet = build_unet(TINY, channels=1, image_size=32)
    schedule = dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config)
    masks = MaskGenerator(patterns, CAIParams(quotas=Quotas(large=1, medium=1, small=1)))
    return CDMSynthesizer(
        unet, make_scheduler("dpm", schedule), masks, image_size=32, channels=1, **options
    )


@pytest.fixture(scope="module")
def targets(tile_targets):
    return [
        (tile[:96, :96].copy(), np.ones((96, 96), bool), f"tile-{i}")
        for i, tile in enumerate(tile_targets[:3])
    ]


def test_anomalies_are_painted_inside_their_masks_only(crack_patterns, targets):
    synthesizer = _synthesizer(crack_patterns, steps=3, batch_size=4)
    rows = synthesizer.synthesize_many(targets, seed=0)
    assert [len(row) for row in rows] == [3, 3, 3]
    for (image, _, _), row in zip(targets, rows, strict=True):
        for sample in row:
            assert isinstance(sample, Patched) and sample.method == "cdm"
            inside = sample.mask > 0
            assert sample.image.shape == image.shape and sample.image.dtype == np.uint8
            assert np.array_equal(sample.image[~inside], image[~inside])
            assert not np.array_equal(sample.image[inside], image[inside])
            assert sample.details()["anomaly_class"] == "crack"


def test_a_sample_does_not_depend_on_its_batch(crack_patterns, targets):
    together = _synthesizer(crack_patterns, steps=3, batch_size=9).synthesize_many(targets, seed=0)
    image, foreground, key = targets[1]
    alone = _synthesizer(crack_patterns, steps=3, batch_size=2).synthesize(
        image, foreground, seed=0, target_key=key
    )
    for a, b in zip(together[1], alone, strict=True):
        assert isinstance(a, Patched) and isinstance(b, Patched)
        np.testing.assert_array_equal(a.mask, b.mask)
        # CPU convolutions may differ in the last bit between batch sizes: one grey level
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    other_seed = _synthesizer(crack_patterns, steps=3).synthesize(
        image, foreground, seed=1, target_key=key
    )
    assert not np.array_equal(other_seed[0].mask, alone[0].mask)


def test_samples_at_given_indices_are_those_of_the_whole_set(crack_patterns, targets):
    """As a mixture asks for them: sample k is the same, past the quota total too (its scale
    the schedule's, repeated)."""
    image, foreground, key = targets[0]
    synthesizer = _synthesizer(crack_patterns, steps=3, batch_size=1)
    every = synthesizer.synthesize(image, foreground, seed=0, target_key=key)
    some = synthesizer.synthesize(image, foreground, seed=0, target_key=key, indices=[2, 0, 4])
    for k, sample in zip([2, 0], some, strict=False):
        np.testing.assert_array_equal(sample.mask, every[k].mask)
        np.testing.assert_array_equal(sample.image, every[k].image)
    assert some[2].details()["requested_scale"] == "medium"  # index 4 of 1:1:1


def test_difference_labels_lie_within_the_conditioning_mask(crack_patterns, targets):
    condition = _synthesizer(crack_patterns, steps=3).synthesize_many(targets[:1], seed=0)[0]
    difference = _synthesizer(crack_patterns, steps=3, label="difference").synthesize_many(
        targets[:1], seed=0
    )[0]
    for c, d in zip(condition, difference, strict=True):
        if isinstance(d, Failure):
            assert "min_mask_pixels" in d.reason
            continue
        assert set(np.unique(d.mask)) <= {0, 255} and not ((d.mask > 0) & (c.mask == 0)).any()


def test_a_colour_mismatch_is_refused(crack_patterns, targets):
    rgb = np.repeat(targets[0][0][..., None], 3, axis=2)
    with pytest.raises(ValueError, match="1-channel"):
        _synthesizer(crack_patterns, steps=1).synthesize_many([(rgb, targets[0][1], "x")], seed=0)


@pytest.mark.parametrize(("kind", "steps"), [("ddim", 50), ("ddim", 10), ("dpm", 20)])
def test_a_perfect_noise_predictor_recovers_the_image(kind, steps):
    """The sampling loop against its maths: a network that knows the clean image x0 predicts
    the exact noise of every x_t, and the schedulers must then land on x0 in the mask."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    from cai_ray.cdm.sampler import inpaint

    training = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    alphas = training.alphas_cumprod
    clean = torch.rand(2, 1, 16, 16) * 2 - 1

    class Oracle(torch.nn.Module):
        def forward(self, stacked, timestep, class_labels=None):
            alpha = alphas[int(timestep)]
            noisy = stacked[:, :1]
            return SimpleNamespace(sample=(noisy - alpha.sqrt() * clean) / (1 - alpha).sqrt())

    normal = torch.zeros(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12] = 1
    scheduler = make_scheduler(kind, dict(training.config))
    out = inpaint(
        Oracle(),
        scheduler,
        normal,
        mask,
        torch.zeros(2, dtype=torch.long),
        torch.randn(2, 1, 16, 16),
        steps,
    )
    torch.testing.assert_close(out[:, :, 4:12], clean[:, :, 4:12], atol=1e-5, rtol=0)
    assert torch.equal(out[:, :, :4], normal[:, :, :4])
