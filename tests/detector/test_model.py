"""The detector network and its loss: shapes, DRAEM's size, the loss's definition, learning."""

import math

import pytest
import torch
from torch.nn import functional as F

from cai_ray.detector.model import DiscriminativeUNet, anomaly_map, focal_loss


def _draem_parameter_count(in_channels: int, b: int, out_channels: int = 2) -> int:
    """Parameters of DRAEM's discriminative sub-network, counted from its published layer list
    (3x3 convs with bias, each followed by BatchNorm's weight and bias)."""

    def conv_bn(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + c_out + 2 * c_out

    encoder = [(in_channels, b), (b, 2 * b), (2 * b, 4 * b), (4 * b, 8 * b), (8 * b, 8 * b)]
    encoder.append((8 * b, 8 * b))
    total = sum(conv_bn(i, o) + conv_bn(o, o) for i, o in encoder)
    # (upsampled input width, output width, skip width): up_b/db_b, up1/db1 ... up4/db4
    for below, width, skip in [
        (8 * b, 8 * b, 8 * b),
        (8 * b, 4 * b, 8 * b),
        (4 * b, 2 * b, 4 * b),
        (2 * b, b, 2 * b),
        (b, b, b),
    ]:
        total += conv_bn(below, width) + conv_bn(width + skip, width) + conv_bn(width, width)
    return total + 9 * b * out_channels + out_channels


def test_full_size_network_has_draems_layout():
    network = DiscriminativeUNet(in_channels=6, base_width=64, levels=6)
    count = sum(p.numel() for p in network.parameters())
    assert count == _draem_parameter_count(6, 64)


def test_shapes_and_divisibility():
    network = DiscriminativeUNet(in_channels=1, base_width=4, levels=4).eval()
    logits = network(torch.zeros(2, 1, 32, 48))
    assert logits.shape == (2, 2, 32, 48)
    assert anomaly_map(logits).shape == (2, 32, 48)
    with pytest.raises(ValueError, match="divisible by 8"):
        network(torch.zeros(1, 1, 30, 32))


def test_focal_loss_definition():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    masks = torch.tensor([[[0, 1]]])
    p = F.softmax(logits, dim=1)
    p_true = torch.stack([p[0, 0, 0, 0], p[0, 1, 0, 1]])
    expected = (-((1 - p_true) ** 2) * p_true.log()).mean()
    assert focal_loss(logits, masks).item() == pytest.approx(expected.item(), rel=1e-4)
    cross_entropy = F.cross_entropy(logits, masks)
    assert focal_loss(logits, masks, gamma=0).item() == pytest.approx(
        cross_entropy.item(), rel=1e-3
    )
    confident = torch.tensor([[[[9.0]], [[-9.0]]]])
    assert focal_loss(confident, torch.zeros(1, 1, 1)).item() < 1e-6  # easy pixels weigh ~0
    assert focal_loss(confident, torch.ones(1, 1, 1)).item() > math.log(1e3)


def test_a_tiny_network_learns_to_segment_a_square():
    torch.manual_seed(0)
    images = torch.rand(8, 1, 32, 32) * 0.2
    masks = torch.zeros(8, 32, 32, dtype=torch.long)
    for i in range(8):
        y, x = 4 + 2 * i, 20 - 2 * i
        images[i, 0, y : y + 6, x : x + 6] += 0.7
        masks[i, y : y + 6, x : x + 6] = 1
    network = DiscriminativeUNet(in_channels=1, base_width=4, levels=3)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = focal_loss(network(images), masks)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()
    with torch.no_grad():
        scores = anomaly_map(network(images))
    assert loss.item() < first / 5
    assert scores[masks == 1].mean() > 0.5 > scores[masks == 0].mean()
