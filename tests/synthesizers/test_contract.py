"""The contract every registered synthesizer keeps, tested once for all (as diffusers tests every
scheduler with one mixin): samples are a pure function of (settings, seed, key, index); masks are
uint8 {0, 255} of the image's size; every pixel a sample changed lies in the ``blend_box`` it
records (the raw difference outside it is exactly 0); the mask covers what visibly changed, or,
under a label rule that labels the pattern, the pattern's regions where it visibly changed them,
with no holes the pattern does not have; grey and RGB
targets; samples that cannot be made are reported, not raised; provenance is JSON-ready."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from cai_ray import api
from cai_ray.core.cai import CAIInjector, CAIParams, Quotas
from cai_ray.core.synthesis import Failure
from cai_ray.daad.shards import PatternBank
from cai_ray.io.codecs import to_mode
from cai_ray.synthesizers.registry import METHODS
from tests.cdm.conftest import cai_output, tiny_cdm  # noqa: F401  (fixtures the CDM case uses)
from tests.conftest import DEMO

# id: (method, its settings, the cai section). Every registered method appears at least once.
CASES: dict[str, tuple[str, dict, dict]] = {
    "cai-normal": ("cai", {}, {}),
    "cai-mixed": ("cai", {}, {"blend": "mixed"}),
    "cai-published": ("cai", {}, {"label_rule": "published"}),
    "cai-connected": ("cai", {}, {"label_rule": "connected"}),
    "paste": ("cai", {}, {"blend": "paste"}),
    "cutpaste": ("cutpaste", {}, {}),
    "cutpaste-scar": ("cutpaste", {"variant": "scar"}, {}),
    "nsa": ("nsa", {}, {}),
    "nsa-mixed": ("nsa", {"blend": "mixed"}, {}),
    "draem": ("draem", {"textures": [str(DEMO / "defects" / "MT_Crack" / "Imgs" / "*.jpg")]}, {}),
    "cdm": ("cdm", {"steps": 3, "batch_size": 4}, {}),
    "fpi": ("fpi", {}, {}),
    "glass": ("glass", {"textures": [str(DEMO / "defects" / "MT_Crack" / "Imgs" / "*.jpg")]}, {}),
    "glass-self": ("glass", {}, {}),
    "mixture": (
        "mixture",
        {
            "components": [
                {"method": "cai", "weight": 0.5},
                {"method": "fpi", "weight": 0.3},
                {"method": "cutpaste", "weight": 0.2, "variant": "scar"},
            ]
        },
        {},
    ),
}
SMALL = {"quotas": {"large": 1, "medium": 1, "small": 1}}


def test_every_registered_method_is_covered():
    assert {method for method, _, _ in CASES.values()} == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_answers_the_job_hooks(method):
    """The job asks each method how many samples a target gets and the fewest label pixels a
    sample may have; the base class has no answer, so a method that forgets one would fail
    every sample on a cluster, not here."""
    from cai_ray.synthesizers.base import MethodSettings

    for hook in ("anomaly_count", "label_floor"):
        assert getattr(METHODS[method], hook) is not getattr(MethodSettings, hook), hook


def _tiles(mode: str) -> list[np.ndarray]:
    files = sorted((DEMO / "normal").glob("*.jpg"))[:3]
    grey = [cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (256, 256)) for f in files]
    return [to_mode(tile, mode) for tile in grey]


def outside_box_changes(image: np.ndarray, target: np.ndarray, box) -> int:
    """How many pixels of ``image`` differ from ``target`` (in any channel, by any amount)
    outside ``box`` (y0, x0, y1, x1)."""
    y0, x0, y1, x1 = box
    assert 0 <= y0 < y1 <= target.shape[0] and 0 <= x0 < x1 <= target.shape[1], box
    changed = image != target
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    changed[y0:y1, x0:x1] = False
    return int(np.count_nonzero(changed))


def test_the_blend_box_check_sees_a_one_pixel_line():
    """The check above can fail: one changed pixel, or a one-pixel line (which a 7x7 median
    would erase), outside the box is counted; changes inside it are not."""
    tile = _tiles("rgb")[0]
    box = (100, 100, 140, 160)
    inside = tile.copy()
    inside[100:140, 100:160] = 255 - inside[100:140, 100:160]
    assert outside_box_changes(inside, tile, box) == 0
    line = inside.copy()
    line[20, 10:200] = np.where(tile[20, 10:200] > 127, 0, 255)  # a one-pixel line, far off
    assert outside_box_changes(line, tile, box) == 190
    visible = ((cv2.absdiff(to_mode(line, "grey"), to_mode(tile, "grey")) > 7) * 255).astype(
        np.uint8
    )
    assert visible[20, 10:200].all()
    assert not cv2.medianBlur(visible, 7)[20].any()  # gone after the 7x7 median
    speck = inside.copy()
    speck[139, 160, 2] ^= 1  # one level in one channel, just right of the box
    assert outside_box_changes(speck, tile, box) == 1


def _make(case: str, request, demo_daad: str, **overrides) -> api.OnTheFly:
    method, settings, cai = CASES[case]
    settings = dict(settings)
    if method == "cdm":
        settings["checkpoint"] = request.getfixturevalue("tiny_cdm")
    if method in ("cai", "cdm"):
        cai = {**SMALL, **cai, **overrides}
    elif method == "mixture":  # the overrides reach every component: CAI's through its section
        cai = {**SMALL, **cai, **overrides}
        components = [
            c if c["method"] == "cai" else {**c, **overrides} for c in settings["components"]
        ]
        settings = {"anomalies_per_target": 3, "components": components}
    else:
        settings = {"anomalies_per_target": 3, **settings, **overrides}
    needs_daad = method == "mixture" or METHODS[method].needs_daad  # the mixture has CAI
    daad = demo_daad if needs_daad else None
    return api.synthesizer(method, daad=daad, seed=5, cai=cai, **settings)


def _run(synth: api.OnTheFly, tiles: list[np.ndarray], index: int, key: str) -> list:
    others = [(tile, np.ones(tile.shape[:2], bool)) for j, tile in enumerate(tiles) if j != index]
    return synth(tiles[index], key=key, donors=others)


def _modes(case: str) -> list[str]:
    # the CDM paints the colour it was trained on (grey here); the others take both
    return ["grey"] if case == "cdm" else ["grey", "rgb"]


@pytest.mark.parametrize(
    ("case", "mode"), [(case, mode) for case in CASES for mode in _modes(case)]
)
def test_samples_keep_the_contract(case, mode, request, demo_daad):
    tiles = _tiles(mode)
    synth = _make(case, request, demo_daad)
    made = [_run(synth, tiles, i, f"tile-{i}") for i in range(len(tiles))]
    anomalies = [a for results in made for a in results if not isinstance(a, Failure)]
    assert len(anomalies) >= 6, [r for results in made for r in results]
    for tile, results in zip(tiles, made, strict=True):
        assert len(results) == synth.anomalies_per_target
        for anomaly in results:
            if isinstance(anomaly, Failure):
                continue
            assert anomaly.image.shape == tile.shape and anomaly.image.dtype == np.uint8
            assert anomaly.mask.shape == tile.shape[:2] and anomaly.mask.dtype == np.uint8
            assert set(np.unique(anomaly.mask)) <= {0, 255} and anomaly.mask.any()
            provenance = anomaly.provenance
            # every pixel the sample changed, in any channel and by any amount, lies inside the
            # blend box it records: checked on the raw difference, no threshold, no filter
            assert outside_box_changes(anomaly.image, tile, provenance["blend_box"]) == 0
            difference = cv2.absdiff(to_mode(anomaly.image, "grey"), to_mode(tile, "grey"))
            if provenance.get("label_rule", "published") == "published":
                # what visibly changed (grey difference > 7, speckle removed by a 7x7 median, as
                # the published label rule does: a change the median erases is left unlabelled
                # by design) lies on or within 3 px of the mask
                changed = cv2.medianBlur(((difference > 7) * 255).astype(np.uint8), 7) > 0
                near_mask = cv2.dilate(anomaly.mask, np.ones((7, 7), np.uint8)) > 0
                assert (changed & ~near_mask).sum() <= 0.01 * max(changed.sum(), 100)
            else:
                # a rule that labels the pattern: its regions where the blend visibly changed
                # them, closed and hole-filled, so not every labelled pixel changed visibly; all
                # lie in the blend box (the holes: test_labels_have_no_holes_the_pattern_lacks)
                assert (
                    outside_box_changes(
                        anomaly.mask, np.zeros_like(anomaly.mask), provenance["blend_box"]
                    )
                    == 0
                )
                assert (difference[anomaly.mask > 0] > 7).any()
                assert provenance["label_rule"] in ("pattern", "connected")
            assert json.loads(json.dumps(provenance)) == provenance
            # a mixture's sample: its component's method, the component named
            made_by = provenance["component"] if case == "mixture" else case
            assert provenance["method"].startswith(made_by.split("-")[0])

    # the same samples from a fresh synthesizer, targets in the opposite order
    again = _make(case, request, demo_daad)
    for i in reversed(range(len(tiles))):
        for first, second in zip(made[i], _run(again, tiles, i, f"tile-{i}"), strict=True):
            assert type(first) is type(second)
            if not isinstance(first, Failure):
                assert np.array_equal(first.image, second.image)
                assert np.array_equal(first.mask, second.mask)
                assert first.provenance == second.provenance
    # another key gives other samples
    other = _run(again, tiles, 0, "another-key")
    assert any(
        not np.array_equal(a.image, b.image)
        for a, b in zip(made[0], other, strict=True)
        if not isinstance(a, Failure) and not isinstance(b, Failure)
    )


@pytest.mark.parametrize("case", ["cai-normal", "cai-mixed", "cai-connected", "paste"])
@pytest.mark.parametrize("mode", ["grey", "rgb"])
def test_labels_have_no_holes_the_pattern_lacks(case, mode, demo_daad):
    """A label is the pattern's regions, never a pixel spray: every hole of a label
    (background enclosed by it) is a hole of the placed pattern's mask as the rule dilates it."""
    _, _, cai = CASES[case]
    params = CAIParams(**{**cai, "quotas": Quotas(large=2, medium=2, small=2)})
    injector = CAIInjector(PatternBank(demo_daad, mode=mode), params)
    kernel = np.ones((params.pattern_dilation,) * 2, np.uint8)
    checked = 0
    for index, tile in enumerate(_tiles(mode)):
        foreground = np.ones(tile.shape[:2], bool)
        for made in injector.synthesize(tile, foreground, seed=5, target_key=f"tile-{index}"):
            if isinstance(made, Failure):
                continue
            placed = np.zeros(tile.shape[:2], np.uint8)
            y0, x0, y1, x1 = made.blend_box
            placed[y0:y1, x0:x1] = made.pattern_mask
            near = cv2.dilate(placed, kernel) > 0
            label = made.mask > 0
            assert not (
                (binary_fill_holes(label) & ~label) & ~(binary_fill_holes(near) & ~near)
            ).any()
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize("case", list(CASES))
def test_samples_that_cannot_be_made_are_reported(case, request, demo_daad):
    """No label mask can reach a million pixels on a 256x256 image: every sample fails, with its
    reason, and nothing is raised."""
    synth = _make(case, request, demo_daad, min_mask_pixels=10**6)
    tiles = _tiles("grey")
    results = _run(synth, tiles, 0, "tile-0")
    assert len(results) == synth.anomalies_per_target
    assert all(isinstance(r, Failure) and r.reason for r in results)


@pytest.mark.parametrize("case", ["cai-normal", "cai-connected"])
def test_labels_stay_on_a_foreground_with_gaps(case, demo_daad):
    """Within the foreground a solid label never closes over background the pattern spans: a
    foreground striped by 3-pixel gaps and holed by 4x4 ones keeps every label on it (106
    labelled, unchanged background pixels before a review caught it)."""
    _, _, cai = CASES[case]
    params = CAIParams(**{**cai, "quotas": Quotas(large=3, medium=2, small=1)})
    injector = CAIInjector(PatternBank(demo_daad, mode="grey"), params)
    checked = 0
    for index, tile in enumerate(_tiles("grey")):
        foreground = np.ones(tile.shape, bool)
        for gap in range(10, tile.shape[1], 13):
            foreground[:, gap : gap + 3] = False
        for y in range(40, tile.shape[0] - 4, 30):
            for x in range(4, tile.shape[1] - 4, 13):
                foreground[y : y + 4, x : x + 4] = False
        for made in injector.synthesize(tile, foreground, seed=5, target_key=f"tile-{index}"):
            if isinstance(made, Failure):
                continue
            assert not (made.mask > 0)[~foreground].any()
            checked += 1
    assert checked >= 12
