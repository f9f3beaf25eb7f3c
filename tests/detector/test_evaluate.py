"""Per-defect scoring: each type is scored on its own images plus every normal one."""

import numpy as np
import pytest

from cai_ray.detector.evaluate import evaluate_by_defect
from cai_ray.detector.metrics import evaluate


def test_a_perfectly_found_type_scores_one_and_a_missed_type_does_not():
    rng = np.random.default_rng(0)
    masks = np.zeros((7, 16, 16), bool)
    masks[3:5, 4:8, 4:8] = True  # two cracks
    masks[5:7, 2:12, 2:12] = True  # two stains
    maps = rng.uniform(0, 0.5, masks.shape)
    maps[3:5][masks[3:5]] = 1.0  # cracks found exactly; stains not at all
    defects = ["good"] * 3 + ["crack"] * 2 + ["stain"] * 2
    scores = evaluate_by_defect(maps, masks, defects)
    assert list(scores) == ["crack", "stain"]
    assert scores["crack"]["pixel_auroc"] == 1.0 and scores["crack"]["pixel_ap"] == 1.0
    assert scores["crack"]["pro"] == pytest.approx(1.0)
    assert scores["stain"]["pixel_auroc"] < 0.7
    subset = [0, 1, 2, 5, 6]
    assert scores["stain"] == evaluate(maps[subset], masks[subset])
