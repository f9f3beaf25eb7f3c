"""CAI across domains on the real datasets in ../shared/data: DeepCrack road cracks injected
into magnetic tiles, as the method is meant to be used."""

import cv2
import numpy as np

from cai_ray.core.cai import CAIInjector, CAIParams, Injection
from tests.core.test_cai import FULL, check_balanced_quotas


def test_deepcrack_sources_fill_the_quotas(deepcrack_patterns, tile_targets):
    check_balanced_quotas(CAIInjector(deepcrack_patterns), tile_targets)


def test_deepcrack_labels_are_the_cracks_where_they_changed_the_tile(
    deepcrack_patterns, tile_targets
):
    """The pattern rule: a label covers every visible change on the placed crack,
    lies within the crack's mask as the rule dilates it (never the Poisson halo beyond), and is
    a solid region of it (closed, hole-filled), so it may hold unchanged pixels between."""
    params = CAIParams(label_rule="pattern")
    injector = CAIInjector(deepcrack_patterns, params)
    results = injector.synthesize(tile_targets[0], FULL, seed=3, target_key="t")
    made = [r for r in results if isinstance(r, Injection)]
    assert len(made) == 10 and {r.source_domain for r in made} == {"deepcrack"}
    kernel = np.ones((params.pattern_dilation,) * 2, np.uint8)
    for result in made:
        visible = cv2.absdiff(result.image, tile_targets[0]) > params.diff_threshold
        placed = np.zeros(visible.shape, np.uint8)
        y0, x0, y1, x1 = result.blend_box
        placed[y0:y1, x0:x1] = result.pattern_mask
        near = cv2.dilate(placed, kernel) > 0
        mask = result.mask > 0
        assert mask.sum() >= 10 and not (mask & ~near).any()
        assert mask[visible & (placed > 0)].all()
        assert (mask & visible).sum() >= 0.5 * mask.sum()  # mostly visible change, not a blob
