"""CAI on real images: magnetic-tile targets and cracks from the bundled sample (the
cross-domain case, DeepCrack sources from ../shared/data, is in tests/realdata)."""

import cv2
import numpy as np
import pytest

from cai_ray.core.cai import CAIInjector, CAIParams, Failure, Injection, Quotas, SourcePattern
from cai_ray.core.geometry import SYNTHESIS_RANGES, Scale
from cai_ray.io.codecs import to_mode

FULL = np.ones((256, 256), bool)


def _injections(results):
    assert all(isinstance(r, Injection) for r in results), [
        r for r in results if isinstance(r, Failure)
    ]
    return results


def test_balanced_quotas_and_synthesis_scales(crack_patterns, tile_targets):
    check_balanced_quotas(CAIInjector(crack_patterns), tile_targets)


def check_balanced_quotas(injector: CAIInjector, tile_targets: list[np.ndarray]) -> None:
    """4:3:3 by scale on each target, synthesis scales in their class ranges."""
    for index, target in enumerate(tile_targets[:4]):
        results = _injections(injector.synthesize(target, FULL, seed=1, target_key=f"t{index}"))
        assert [r.scale for r in results] == ["large"] * 4 + ["medium"] * 3 + ["small"] * 3
        for result in results:
            low, high = SYNTHESIS_RANGES[Scale[result.scale.upper()]]
            assert low - 0.02 <= result.synthesis_scale <= high + 0.02
            # a pattern makes its own scale or a smaller one, never a larger one
            assert result.source_target_ratio >= low - 1e-9
            assert result.image.shape == target.shape and result.image.dtype == np.uint8


def test_label_masks_cover_what_changed_and_nothing_else(crack_patterns, tile_targets):
    target = tile_targets[1]
    published = CAIInjector(crack_patterns)
    tight = CAIInjector(crack_patterns, CAIParams(label_rule="pattern"))
    areas = {"published": 0, "pattern": 0}
    for injector, rule in ((published, "published"), (tight, "pattern")):
        for result in _injections(injector.synthesize(target, FULL, seed=2, target_key="t")):
            mask = result.mask > 0
            assert set(np.unique(result.mask)) <= {0, 255}
            assert mask.sum() >= 10
            visible = cv2.absdiff(result.image, target) > 7
            if rule == "pattern":
                assert not (mask & ~visible).any()
            else:  # the 7x7 median can only reach 3 pixels beyond a visible change
                near = cv2.dilate(visible.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
                assert not (mask & ~near).any()
            assert visible[mask].mean() > 0.5
            areas[rule] += int(mask.sum())
    assert areas["pattern"] < areas["published"]


def test_injection_stays_on_the_foreground(crack_patterns, tile_targets):
    foreground = np.zeros((256, 256), bool)
    foreground[:, :128] = True
    target = tile_targets[2]
    results = _injections(
        CAIInjector(crack_patterns).synthesize(target, foreground, seed=3, target_key="t")
    )
    for result in results:
        assert foreground[result.center]
        assert np.array_equal(result.image[:, 128:], target[:, 128:])
        assert not result.mask[:, 128:].any()


def test_without_ils_the_foreground_is_ignored(crack_patterns, tile_targets):
    foreground = np.zeros((256, 256), bool)
    foreground[:64, :64] = True
    injector = CAIInjector(crack_patterns, CAIParams(ils=False, label_rule="pattern"))
    centres = [
        r.center
        for key in ("a", "b", "c")
        for r in injector.synthesize(tile_targets[0], foreground, seed=0, target_key=key)
        if isinstance(r, Injection)
    ]
    assert any(not foreground[c] for c in centres)


def test_without_stm_patterns_keep_their_size(crack_patterns, tile_targets):
    small = [
        SourcePattern.from_full_image(
            p.image, p.mask, anomaly_class="crack", domain="d", record_id=f"r{i}", context=0
        )
        for i, p in enumerate(crack_patterns)
    ]
    # a 60-pixel pattern pasted into 256 px tiles unscaled
    patterns = []
    for p in small[:5]:
        y0, x0, y1, x1 = p.box
        factor = 60 / max(y1 - y0, x1 - x0)
        size = (max(1, round(p.image.shape[1] * factor)), max(1, round(p.image.shape[0] * factor)))
        mask = cv2.resize(p.mask.astype(np.uint8) * 255, size) > 127
        patterns.append(
            SourcePattern.from_full_image(
                cv2.resize(p.image, size),
                mask,
                anomaly_class="crack",
                domain="d",
                record_id=p.record_id,
            )
        )
    injector = CAIInjector(patterns, CAIParams(stm=False))
    for result in injector.synthesize(tile_targets[0], FULL, seed=0, target_key="t"):
        if isinstance(result, Injection):
            assert abs(result.synthesis_scale * 256 - result.source_target_ratio * 256) <= 2


@pytest.mark.parametrize("blend", ["mixed", "paste"])
def test_other_blend_modes(crack_patterns, tile_targets, blend):
    injector = CAIInjector(crack_patterns, CAIParams(blend=blend, label_rule="pattern"))
    results = injector.synthesize(tile_targets[3], FULL, seed=4, target_key="t")
    made = [r for r in results if isinstance(r, Injection)]
    assert len(made) >= 8
    assert {r.method for r in made} == {"cai-mixed" if blend == "mixed" else "paste"}


def test_same_seed_same_samples_in_any_order(crack_patterns, tile_targets):
    keys = [f"tile-{i}" for i in range(3)]

    def run(order, seed=5):
        injector = CAIInjector(crack_patterns)
        return {
            k: injector.synthesize(tile_targets[i], FULL, seed=seed, target_key=k) for i, k in order
        }

    forward = run(list(enumerate(keys)))
    backward = run(list(enumerate(keys))[::-1])
    other_seed = run(list(enumerate(keys)), seed=6)
    for key in keys:
        for a, b in zip(forward[key], backward[key], strict=True):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
            assert a.source_record_id == b.source_record_id and a.center == b.center
        assert any(
            not np.array_equal(a.image, c.image)
            for a, c in zip(forward[key], other_seed[key], strict=True)
        )


def test_rgb_targets(crack_patterns, tile_targets):
    patterns = [
        SourcePattern(
            to_mode(p.image, "rgb"), p.mask, p.box, p.anomaly_class, p.domain, p.record_id
        )
        for p in crack_patterns[:6]
    ]
    target = to_mode(tile_targets[0], "rgb")
    results = _injections(
        CAIInjector(patterns, CAIParams(quotas=Quotas(large=1, medium=1, small=1))).synthesize(
            target, FULL, seed=0, target_key="t"
        )
    )
    assert all(r.image.shape == (256, 256, 3) for r in results)


def test_unusable_sources_and_targets_are_reported(crack_patterns, tile_targets):
    speck = np.zeros((40, 40), bool)
    speck[10:13, 10:13] = True
    tiny = SourcePattern.from_full_image(
        np.zeros((40, 40), np.uint8), speck, anomaly_class="pits", domain="d", record_id="tiny"
    )
    results = CAIInjector([tiny]).synthesize(tile_targets[0], FULL, seed=0, target_key="t")
    assert all(isinstance(r, Failure) and "small" in r.reason for r in results)
    with pytest.raises(ValueError, match="foreground"):
        CAIInjector(crack_patterns).synthesize(tile_targets[0], ~FULL, seed=0, target_key="t")
    with pytest.raises(ValueError):
        CAIInjector([])
