"""FPI on real tiles: the box is a linear blend with the same box of another image, the factor
recorded, the mask the visible part of the box."""

import numpy as np
import pytest

from cai_ray.core.synthesis import Failure
from cai_ray.synthesizers.fpi import FPI, FPIParams


@pytest.fixture
def full():
    return np.ones((256, 256), bool)


def test_the_box_is_the_interpolation_the_provenance_names(tile_targets, full):
    fpi = FPI(FPIParams(anomalies_per_target=6))
    target, other = tile_targets[0], tile_targets[1]
    made = fpi.synthesize(target, full, seed=0, target_key="t", donors=[(other, full)])
    assert sum(not isinstance(a, Failure) for a in made) >= 5
    for anomaly in made:
        if isinstance(anomaly, Failure):
            continue
        y, x, h, w = anomaly.info["box"]
        a = anomaly.info["factor"]
        assert 0.1 * 256 - 1 <= h <= 0.4 * 256 + 1 and 0.1 * 256 - 1 <= w <= 0.4 * 256 + 1
        box = (slice(y, y + h), slice(x, x + w))
        expected = np.rint((1 - a) * target[box].astype(float) + a * other[box].astype(float))
        assert np.abs(anomaly.image[box].astype(float) - expected).max() <= 1
        outside = np.ones((256, 256), bool)
        outside[box] = False
        assert np.array_equal(anomaly.image[outside], target[outside])
        assert not anomaly.mask[outside].any()


def test_a_full_factor_copies_the_other_box_and_no_factor_changes_nothing(tile_targets, full):
    target, other = tile_targets[0], tile_targets[2]
    copy = FPI(FPIParams(anomalies_per_target=2, factor_bounds=(1.0, 1.0)))
    for anomaly in copy.synthesize(target, full, seed=1, target_key="t", donors=[(other, full)]):
        y, x, h, w = anomaly.info["box"]
        assert np.array_equal(anomaly.image[y : y + h, x : x + w], other[y : y + h, x : x + w])
    nothing = FPI(FPIParams(anomalies_per_target=2, factor_bounds=(0.0, 0.0), max_draws=3))
    results = nothing.synthesize(target, full, seed=1, target_key="t", donors=[(other, full)])
    assert all(isinstance(r, Failure) for r in results)  # no visible change: no label


def test_without_another_image_every_sample_is_reported(tile_targets, full):
    results = FPI(FPIParams(anomalies_per_target=3)).synthesize(
        tile_targets[0], full, seed=0, target_key="t"
    )
    assert [r.reason for r in results] == [
        "FPI needs another normal image in the same shard to interpolate with"
    ] * 3
