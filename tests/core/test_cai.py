"""CAI on real images: magnetic-tile targets and cracks from the bundled sample (the
cross-domain case, DeepCrack sources from ../shared/data, is in tests/realdata)."""

import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from cai_ray.core.cai import CAIInjector, CAIParams, Failure, Injection, Quotas, SourcePattern
from cai_ray.core.geometry import SYNTHESIS_RANGES, Scale
from cai_ray.io.codecs import to_mode

FULL = np.ones((256, 256), bool)


def _injections(results):
    assert all(isinstance(r, Injection) for r in results), [
        r for r in results if isinstance(r, Failure)
    ]
    return results


def _near_pattern(result: Injection, shape: tuple[int, int], dilation: int = 5) -> np.ndarray:
    """The placed pattern's mask in target coordinates, dilated as the label rules dilate it."""
    placed = np.zeros(shape, np.uint8)
    y0, x0, y1, x1 = result.blend_box
    placed[y0:y1, x0:x1] = result.pattern_mask
    return cv2.dilate(placed, np.ones((dilation, dilation), np.uint8)) > 0


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
    published = CAIInjector(crack_patterns, CAIParams(label_rule="published"))
    tight = CAIInjector(crack_patterns)  # the default rule
    areas = {"published": 0, "pattern": 0}
    for injector, rule in ((published, "published"), (tight, "pattern")):
        for result in _injections(injector.synthesize(target, FULL, seed=2, target_key="t")):
            mask = result.mask > 0
            assert set(np.unique(result.mask)) <= {0, 255}
            assert mask.sum() >= 10
            visible = cv2.absdiff(result.image, target) > 7
            if rule == "pattern":  # regions of the pattern, solid where the change is scattered
                assert not (mask & ~_near_pattern(result, target.shape)).any()
            else:  # the 7x7 median can only reach 3 pixels beyond a visible change
                near = cv2.dilate(visible.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
                assert not (mask & ~near).any()
            assert visible[mask].mean() > 0.5
            areas[rule] += int(mask.sum())
    assert areas["pattern"] < areas["published"]


def test_connected_labels_hold_the_pattern_labels_and_only_visible_change(
    crack_patterns, tile_targets
):
    """Same seed, same injections (the contrast gate, which sees the label, off): the connected
    rule's mask contains the pattern rule's (the pattern grown by its halo), and beyond the
    pattern it is visible change, closed (a gap narrower than 5 pixels bridged) and hole-filled."""
    target = tile_targets[1]
    runs = {
        rule: CAIInjector(crack_patterns, CAIParams(label_rule=rule, min_contrast=0)).synthesize(
            target, FULL, seed=2, target_key="t"
        )
        for rule in ("pattern", "connected")
    }
    grown = 0
    for tight, connected in zip(runs["pattern"], runs["connected"], strict=True):
        assert isinstance(tight, Injection) and isinstance(connected, Injection)
        assert np.array_equal(tight.image, connected.image)
        assert not ((tight.mask > 0) & (connected.mask == 0)).any()
        visible = (cv2.absdiff(connected.image, target) > 7).astype(np.uint8)
        closed = cv2.morphologyEx(visible, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
        beyond = (connected.mask > 0) & ~_near_pattern(connected, target.shape)
        assert not (beyond & ~binary_fill_holes(closed)).any()
        grown += int((connected.mask > 0).sum() - (tight.mask > 0).sum())
    assert grown > 0


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
    """ILS off: any location, and nothing clipped to the foreground (blend or label)."""
    foreground = np.zeros((256, 256), bool)
    foreground[:, :96] = True
    target = tile_targets[0]
    injector = CAIInjector(crack_patterns, CAIParams(within_foreground=False, label_rule="pattern"))
    made = [
        r
        for key in ("a", "b", "c")
        for r in injector.synthesize(target, foreground, seed=0, target_key=key)
        if isinstance(r, Injection)
    ]
    assert len(made) >= 24
    outside = [r for r in made if not foreground[r.center]]
    assert len(outside) >= 5
    for result in outside:
        changed = cv2.absdiff(result.image, target) > 7
        assert (changed & ~foreground).sum() >= 10  # blended off the foreground, not clipped
        assert (result.mask[~foreground] > 0).sum() >= 10


def _resized(pattern: SourcePattern, longest: int, record_id: str) -> SourcePattern:
    """A bundled crack scaled so its mask box's longest side is ``longest`` pixels."""
    y0, x0, y1, x1 = pattern.box
    factor = longest / max(y1 - y0, x1 - x0)
    height, width = pattern.mask.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    mask = cv2.resize(pattern.mask.astype(np.uint8) * 255, size) > 127
    return SourcePattern.from_full_image(
        cv2.resize(pattern.image, size),
        mask,
        anomaly_class="crack",
        domain="d",
        record_id=record_id,
    )


def test_without_stm_patterns_keep_their_size_or_are_skipped(crack_patterns, tile_targets):
    """STM off: a pattern is pasted at its own size; one larger than the target cannot fit and
    is redrawn (never shrunk to fit); the recorded scale is that of the size injected."""
    fits = [_resized(p, 60, f"fits{i}") for i, p in enumerate(crack_patterns[:3])]
    too_big = [_resized(p, 300, f"big{i}") for i, p in enumerate(crack_patterns[:2])]
    injector = CAIInjector(fits + too_big, CAIParams(match_scale=False, max_draws=20))
    made = [
        r
        for key in ("a", "b")
        for r in injector.synthesize(tile_targets[0], FULL, seed=0, target_key=key)
        if isinstance(r, Injection)
    ]
    assert len(made) >= 16
    for result in made:
        assert result.source_record_id.startswith("fits")
        assert abs(result.synthesis_scale * 256 - 60) <= 2
        assert result.scale == "small"  # 60/256 = 0.23: the class of the size injected
    only_big = CAIInjector(too_big, CAIParams(match_scale=False, max_draws=3))
    for failure in only_big.synthesize(tile_targets[0], FULL, seed=0, target_key="t"):
        assert isinstance(failure, Failure) and "larger than the target" in failure.reason


def test_a_scale_that_cannot_be_placed_falls_to_a_smaller_one(crack_patterns, tile_targets):
    """Two 30x30 foreground patches in opposite corners: the foreground's box is the whole
    tile, so the quotas ask for large and medium cracks, but a box that big cannot have its
    centre on a corner patch and stay inside the image. Those slots fall back to small, and
    the samples say so (requested vs injected scale)."""
    foreground = np.zeros((256, 256), bool)
    foreground[:30, :30] = True
    foreground[226:, 226:] = True
    injector = CAIInjector(crack_patterns, CAIParams(label_rule="pattern"))
    results = injector.synthesize(tile_targets[1], foreground, seed=0, target_key="t")
    made = [r for r in results if isinstance(r, Injection)]
    assert len(made) >= 8
    assert {r.scale for r in made} == {"small"}
    assert {r.requested_scale for r in made} == {"large", "medium", "small"}
    for result in made:
        assert result.synthesis_scale < 0.3 and foreground[result.center]


@pytest.mark.parametrize("blend", ["mixed", "paste"])
def test_other_blend_modes(crack_patterns, tile_targets, blend):
    injector = CAIInjector(crack_patterns, CAIParams(blend=blend, label_rule="pattern"))
    results = injector.synthesize(tile_targets[3], FULL, seed=4, target_key="t")
    made = [r for r in results if isinstance(r, Injection)]
    assert len(made) >= 8
    assert {r.method for r in made} == {"cai-mixed" if blend == "mixed" else "paste"}


def test_mixed_guidance_keeps_the_targets_strong_gradients(crack_patterns, tile_targets):
    """On a target with strong stripes, mixed guidance takes the target's gradient wherever
    it is the stronger, so the stripes survive inside the blended region; normal guidance
    replaces them with the crack's. Same seed: the same patterns at the same places."""
    target = tile_targets[2].copy()
    target[:, ::8] = 255  # bright one-pixel stripes: gradients far above the crack's
    params = {
        "label_rule": "pattern",
        "quotas": Quotas(large=3, medium=0, small=0),
        "min_changed_share": 0,  # the gate off: the same draws for both, whatever they show
        "min_contrast": 0,
    }
    normal = CAIInjector(crack_patterns, CAIParams(blend="normal", **params))
    mixed = CAIInjector(crack_patterns, CAIParams(blend="mixed", **params))
    pairs = zip(
        normal.synthesize(target, FULL, seed=9, target_key="t"),
        mixed.synthesize(target, FULL, seed=9, target_key="t"),
        strict=True,
    )
    compared = 0
    for a, b in pairs:
        assert isinstance(a, Injection) and isinstance(b, Injection)
        assert a.center == b.center and a.source_record_id == b.source_record_id
        changed = cv2.absdiff(a.image, target) > 7
        stripes = np.zeros_like(changed)
        stripes[:, ::8] = True
        inside = changed & stripes
        if inside.sum() < 20:
            continue
        compared += 1
        kept_normal = np.abs(a.image[inside].astype(int) - 255).mean()
        kept_mixed = np.abs(b.image[inside].astype(int) - 255).mean()
        assert kept_mixed < kept_normal - 10
    assert compared >= 2


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


def test_an_invisible_injection_is_redrawn_and_counted_by_its_cause():
    """A pattern whose blend changes only a dot of its 40x40 mask is refused by the
    visibility gate (cause ``invisible``); with the gate off (0) it is kept."""
    image = np.full((60, 60), 100, np.uint8)
    image[28:32, 28:32] = 0  # a dark dot on a flat body
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    faint = SourcePattern.from_full_image(
        image, mask, anomaly_class="stain", domain="test", record_id="faint"
    )
    target = np.full((256, 256), 100, np.uint8)
    one = Quotas(large=0, medium=0, small=1)
    [refused] = CAIInjector([faint], CAIParams(match_scale=False, quotas=one)).synthesize(
        target, FULL, seed=0, target_key="t"
    )
    assert isinstance(refused, Failure) and refused.cause == "invisible", refused
    assert "min_changed_share 0.2" in refused.reason and refused.attempts == 10
    off = CAIParams(match_scale=False, quotas=one, min_changed_share=0, min_contrast=0)
    [kept] = CAIInjector([faint], off).synthesize(target, FULL, seed=0, target_key="t")
    assert isinstance(kept, Injection)
    with pytest.raises(ValueError, match="min_changed_share"):
        CAIParams(min_changed_share=1.5)
    with pytest.raises(ValueError, match="min_contrast"):
        CAIParams(min_contrast=-1)
