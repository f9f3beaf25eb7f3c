"""FID: the Fréchet distance against its closed form, the feature path through a real TorchScript
file with the Inception calling convention, and the error without weights."""

import numpy as np
import pytest
import torch

from cai_ray.detector.fid import (
    InceptionWeightsError,
    fid_of,
    frechet_distance,
    load_inception,
)


def test_frechet_distance_matches_the_one_dimensional_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (400, 1)), rng.normal(-0.5, 0.5, (300, 1))
    va, vb = a.var(ddof=1), b.var(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + va + vb - 2 * np.sqrt(va * vb)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_with_independent_dimensions_adds_up():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (5000, 2)) * [1, 3]
    b = rng.normal(0, 1, (5000, 2)) * [2, 1] + [1, 0]
    per_dim = sum(frechet_distance(a[:, [d]], b[:, [d]]) for d in range(2))
    assert frechet_distance(a, b) == pytest.approx(per_dim, rel=0.02)  # covariances ~diagonal
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


class _MeanFeatures(torch.nn.Module):
    """Stands in for Inception: same call, two features per channel."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float()
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_through_a_torchscript_feature_network(tmp_path, tile_targets):
    path = tmp_path / "inception.pt"
    torch.jit.script(_MeanFeatures()).save(str(path))
    model = load_inception(path)
    tiles = np.stack(tile_targets[:8])
    assert fid_of(model, tiles, tiles) == pytest.approx(0, abs=1e-3)
    brighter = np.clip(tiles.astype(int) + 40, 0, 255).astype(np.uint8)
    assert fid_of(model, tiles, brighter) > 100


def test_missing_or_wrong_weights_say_what_to_supply(tmp_path):
    with pytest.raises(InceptionWeightsError, match="inception-2015-12-05.pt"):
        load_inception(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(InceptionWeightsError, match="not a TorchScript model"):
        load_inception(junk)
