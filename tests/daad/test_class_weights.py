"""Class weights: a user appoints the classes likely in their domain; samples follow them."""

import json
from collections import Counter

import numpy as np
import pytest

from cai_ray import api
from cai_ray.config import SynthConfig
from cai_ray.core.cai import class_weights
from cai_ray.core.synthesis import Failure
from cai_ray.daad.settings import DaadConfig
from cai_ray.pipeline.synth import run_synth
from tests.conftest import DEMO


def test_each_class_gets_its_share_whatever_its_size():
    classes = np.array(["crack"] * 6 + ["hole"] * 2)
    weights = class_weights(classes, {"crack": 1.0, "hole": 1.0})
    assert weights[:6].sum() == pytest.approx(weights[6:].sum())
    skewed = class_weights(classes, {"crack": 3.0, "hole": 1.0})
    assert skewed[:6].sum() / skewed.sum() == pytest.approx(0.75)
    assert np.ptp(skewed[:6]) == 0 and np.ptp(skewed[6:]) == 0  # uniform within a class


def test_draws_follow_the_weights(demo_daad, tile_targets):
    """Crack 3 : hole 1, every other class left out, with paste at the patterns' own size (no
    STM), so every pattern can fill every slot and only the weights decide."""
    synth = api.synthesizer(
        "cai",
        daad=demo_daad,
        seed=0,
        class_weights={"crack": 3, "hole": 1},
        cai={"stm": False, "blend": "paste", "quotas": {"large": 10, "medium": 0, "small": 0}},
    )
    drawn = Counter(
        anomaly.provenance["anomaly_class"]
        for i, tile in enumerate(tile_targets)
        for anomaly in synth(tile, key=f"t{i}")
        if not isinstance(anomaly, Failure)
    )
    assert set(drawn) == {"crack", "hole"} and sum(drawn.values()) >= 100
    assert 0.6 <= drawn["crack"] / sum(drawn.values()) <= 0.9  # 0.75 expected


def test_the_job_manifest_counts_follow_them(demo_daad, tmp_path):
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 4},
            "daad": {"path": demo_daad, "class_weights": {"stain": 1, "crack": 0}},
            "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    manifest = run_synth(config, show_progress=False)
    assert set(manifest["counts"]["anomaly_class"]) == {"stain"}
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["config"]["daad"]["class_weights"] == {"stain": 1.0, "crack": 0.0}
    with pytest.raises(ValueError, match="at least one class weight"):
        SynthConfig.model_validate(
            {**config.model_dump(), "daad": {"path": "d", "class_weights": {"crack": 0}}}
        )
    with pytest.raises(ValueError, match="no class is drawn"):
        DaadConfig(path="d", include_classes=["hole"], class_weights={"crack": 1})
    with pytest.raises(ValueError, match="no class is drawn"):
        DaadConfig(path="d", include_classes=[])  # an empty list is not 'all classes'
    assert DaadConfig(path="d", include_classes=["hole", "crack"]).drawn_classes() == [
        "hole",
        "crack",
    ]
