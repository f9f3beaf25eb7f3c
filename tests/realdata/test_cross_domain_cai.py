"""CAI across domains on the real datasets in ../shared/data: DeepCrack road cracks injected
into magnetic tiles, as the method is meant to be used."""

import cv2

from cai_ray.core.cai import CAIInjector, CAIParams, Injection
from tests.core.test_cai import FULL, check_balanced_quotas


def test_deepcrack_sources_fill_the_quotas(deepcrack_patterns, tile_targets):
    check_balanced_quotas(CAIInjector(deepcrack_patterns), tile_targets)


def test_deepcrack_labels_mark_only_visible_change(deepcrack_patterns, tile_targets):
    injector = CAIInjector(deepcrack_patterns, CAIParams(label_rule="pattern"))
    results = injector.synthesize(tile_targets[0], FULL, seed=3, target_key="t")
    made = [r for r in results if isinstance(r, Injection)]
    assert len(made) == 10 and {r.source_domain for r in made} == {"deepcrack"}
    for result in made:
        visible = cv2.absdiff(result.image, tile_targets[0]) > 7
        mask = result.mask > 0
        assert mask.sum() >= 10 and not (mask & ~visible).any()
        assert visible[mask].all()
