"""Cross-domain Anomaly Injection (CAI): real defect patterns from other domains, scaled to the
target (source-target matching, multi-scale quotas), placed on its foreground (injection location
selection) and blended in with Poisson image editing.

Every draw comes from :func:`~cai_ray.core.synthesis.sample_rng`, so a sample never depends on
which worker made it or in what order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import cv2
import numpy as np

from cai_ray.core.geometry import (
    SYNTHESIS_RANGES,
    BBox,
    Scale,
    bbox_longest_side,
    choose_location,
    fallback_scale,
    mask_bbox,
    quota_schedule,
    scale_classes,
    scale_of,
)
from cai_ray.core.labels import CONTRAST_RING, LabelRule, label_mask, visibility
from cai_ray.core.poisson import fast_rect_length, poisson_blend
from cai_ray.core.synthesis import Donor, Failure, reason_cause, sample_rng

_ERODE_3X3 = np.ones((3, 3), np.uint8)

BlendMethod = Literal["normal", "mixed", "paste"]
METHOD_NAMES: dict[str, str] = {"normal": "cai-normal", "mixed": "cai-mixed", "paste": "paste"}


# Settings are plain dataclasses (core imports no settings library). The job's config validates
# them with pydantic from YAML: field types and these checks, unknown keys refused.
_STRICT = {"extra": "forbid"}

PAPER_NAMES = {"match_scale": "stm", "within_foreground": "ils"}
"""Settings the paper names by acronym (source-target matching, injection location selection):
a settings file may use either name."""
_STRICT_WITH_PAPER_NAMES = {
    **_STRICT,
    "alias_generator": lambda name: PAPER_NAMES.get(name, name),
    "validate_by_name": True,
    "validate_by_alias": True,
}


def _at_least(owner: object, minimum: int, *names: str) -> None:
    for name in names:
        if getattr(owner, name) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {getattr(owner, name)}")


@dataclass(frozen=True)
class Quotas:
    """Pseudo-anomalies per target image and scale (the paper's balanced 4:3:3 by default)."""

    __pydantic_config__ = _STRICT
    large: int = 4
    medium: int = 3
    small: int = 3

    def __post_init__(self) -> None:
        _at_least(self, 0, "large", "medium", "small")
        if self.total == 0:
            raise ValueError("quotas are all 0: no pseudo-anomaly would be made")

    @property
    def total(self) -> int:
        return self.large + self.medium + self.small

    def schedule(self) -> list[Scale]:
        return quota_schedule(
            {Scale.LARGE: self.large, Scale.MEDIUM: self.medium, Scale.SMALL: self.small}
        )

    def scale_at(self, index: int) -> Scale:
        """The scale of sample ``index``: the schedule's, repeated past the total (a
        mixture's later samples)."""
        return self.schedule()[index % self.total]


@dataclass(frozen=True)
class CAIParams:
    """Settings of the injector; the defaults are the published ones, except the label rule.

    ``blend``: Poisson guidance 'normal', 'mixed', or 'paste' (no Poisson). ``match_scale``
    (the paper's source-target matching, ``stm``): each pattern resized to a scale drawn for its
    slot (off: every pattern at its own size, one larger than the target redrawn, no scale
    fallback). ``within_foreground`` (the paper's injection location selection, ``ils``): the
    pattern placed on the foreground, the blend and label clipped to it (off: any location,
    nothing clipped). A settings file may use either name (:data:`PAPER_NAMES`).
    ``min_mask_pixels``: smaller label masks are redrawn; after ``max_draws`` failed draws at a
    scale the slot falls to the next smaller one (with ``match_scale``).
    ``mask_kernel``: close then dilate the pattern mask (8x8).
    ``blend_margin``: pixels of target around the Poisson region.
    ``label_rule``: ``pattern`` (the visible change on and next to the injected pattern) by
    default; the paper's ``published`` rule marks the whole Poisson halo as well, which gave
    lower PRO on both targets benchmarked (docs/BENCHMARKS.md, "The label rule").
    ``label_regions``: the pattern and connected rules' labels as closed, hole-filled regions
    (default); off, the changed pixels themselves (the labels before regions, for comparison).
    ``min_changed_share`` and ``min_contrast``: the visibility gate. An attempt is redrawn when
    under ``min_changed_share`` of the placed pattern's pixels (on the foreground) changed by
    more than ``diff_threshold`` grey levels (reason ``invisible``), or when the label's mean
    grey change is under ``min_contrast`` times the target's grey-level spread around it (reason
    ``low contrast``; :func:`~cai_ray.core.labels.visibility`); 0 turns either check off. The
    defaults cut the faintest few per cent measured on the shipped targets (docs/BENCHMARKS.md,
    "The visibility gate").

    >>> CAIParams().label_rule, CAIParams(match_scale=False).quotas.total
    ('pattern', 10)
    """

    __pydantic_config__ = _STRICT_WITH_PAPER_NAMES
    blend: BlendMethod = "normal"
    quotas: Quotas = field(default_factory=Quotas)
    match_scale: bool = True
    within_foreground: bool = True
    label_rule: LabelRule = "pattern"
    label_regions: bool = True
    diff_threshold: int = 7
    median_size: int = 7
    pattern_dilation: int = 5
    min_mask_pixels: int = 10
    min_changed_share: float = 0.2
    min_contrast: float = 0.4
    max_draws: int = 10
    mask_kernel: int = 8
    blend_margin: int = 8

    def __post_init__(self) -> None:
        if self.blend not in METHOD_NAMES:
            raise ValueError(f"blend must be one of {sorted(METHOD_NAMES)}, got {self.blend!r}")
        if self.label_rule not in get_args(LabelRule):
            raise ValueError(f"label_rule must be one of {get_args(LabelRule)}")
        if not 0 <= self.diff_threshold <= 254:
            raise ValueError(f"diff_threshold must be in [0, 254], got {self.diff_threshold}")
        for name in ("min_changed_share", "min_contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns the check off)")
        if self.min_changed_share > 1:
            raise ValueError(
                f"min_changed_share is a share, at most 1, got {self.min_changed_share}"
            )
        if self.median_size % 2 == 0:
            raise ValueError(
                f"median_size must be odd (a median filter has a centre pixel), got "
                f"{self.median_size}"
            )
        _at_least(
            self,
            1,
            "median_size",
            "pattern_dilation",
            "min_mask_pixels",
            "max_draws",
            "mask_kernel",
            "blend_margin",
        )


@dataclass(frozen=True)
class SourcePattern:
    """A real defect: its image crop with some context, the mask over that crop, and provenance.

    ``box`` is the mask's bounding box inside the crop; the pattern proper is that box.
    """

    image: np.ndarray
    mask: np.ndarray
    box: BBox
    anomaly_class: str
    domain: str
    record_id: str

    @property
    def longest_side(self) -> int:
        return bbox_longest_side(self.box)

    @classmethod
    def from_full_image(
        cls,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        anomaly_class: str,
        domain: str,
        record_id: str,
        context: int = 12,
    ) -> SourcePattern:
        """Crop ``image`` and ``mask`` to the mask's bounding box plus ``context`` pixels."""
        box = mask_bbox(mask)
        if box is None:
            raise ValueError(f"record {record_id} has an empty mask")
        y0, x0, y1, x1 = box
        height, width = mask.shape
        cy0, cx0 = max(0, y0 - context), max(0, x0 - context)
        cy1, cx1 = min(height, y1 + context), min(width, x1 + context)
        return cls(
            image=np.ascontiguousarray(image[cy0:cy1, cx0:cx1]),
            mask=np.ascontiguousarray(mask[cy0:cy1, cx0:cx1] > 0),
            box=(y0 - cy0, x0 - cx0, y1 - cy0, x1 - cx0),
            anomaly_class=anomaly_class,
            domain=domain,
            record_id=record_id,
        )


@dataclass(frozen=True)
class Injection:
    """One pseudo-anomaly: the image, its label mask {0, 255} and how it was made."""

    image: np.ndarray
    mask: np.ndarray
    method: str
    anomaly_class: str
    scale: str
    """The class of the size injected: of ``synthesis_scale``, the placed pattern's longest
    side over the foreground's (a thin crack loses its faint ends when shrunk, a pattern may be
    shrunk to fit the image, and without ``match_scale`` a pattern keeps its own size)."""
    requested_scale: str
    """The quota slot's class; smaller ``scale`` means the slot fell back."""
    source_target_ratio: float
    synthesis_scale: float
    source_record_id: str
    source_domain: str
    center: tuple[int, int]
    blend_box: tuple[int, int, int, int]
    """(y0, x0, y1, x1) of the rectangle the blend changed: every visible change lies in it,
    including the Poisson halo that the ``pattern`` label rule leaves unlabelled."""
    label_rule: str
    attempts: int
    pattern_mask: np.ndarray
    """The placed pattern's own mask within ``blend_box`` (bool): what the ``pattern`` label
    rule covers where the blend visibly changed it (dilated by ``pattern_dilation``)."""
    pattern_footprint: np.ndarray
    """Everywhere the source mask landed within ``blend_box`` (bool), ``pattern_mask`` and the
    thin parts that resizing took below half coverage: what the visibility gate measures."""

    def details(self) -> dict[str, Any]:
        return {
            "anomaly_class": self.anomaly_class,
            "scale": self.scale,
            "requested_scale": self.requested_scale,
            "source_target_ratio": round(self.source_target_ratio, 6),
            "synthesis_scale": round(self.synthesis_scale, 6),
            "source_record_id": self.source_record_id,
            "source_domain": self.source_domain,
            "center": list(self.center),
            "blend_box": list(self.blend_box),
            "label_rule": self.label_rule,
        }


def synthesis_factor(
    scale: Scale, fg_longest: int, pattern_longest: int, rng: np.random.Generator
) -> float:
    """Source-target matching: the resize factor that gives a pattern the drawn synthesis
    scale s ~ U(range of ``scale``), i.e. s / STR."""
    low, high = SYNTHESIS_RANGES[scale]
    return float(rng.uniform(low, high)) * fg_longest / pattern_longest


@dataclass(frozen=True)
class Placement:
    """A pattern crop resized and positioned on the target (injection location selection)."""

    factor: float
    size: tuple[int, int]
    """(width, height) of the resized crop."""
    mask: np.ndarray
    """The resized crop's mask, uint8 0..255 (interpolated: threshold at 127)."""
    box: BBox
    """The pattern's box inside the resized crop."""
    corner: tuple[int, int]
    """Where the box's top-left corner lands on the target."""


def place_pattern(
    mask: np.ndarray,
    box: BBox,
    factor: float,
    allowed: np.ndarray,
    rng: np.random.Generator,
    *,
    shrink_to_fit: bool = True,
) -> Placement | str:
    """Resize a pattern's crop mask by ``factor`` and choose where its box goes: inside the
    image, its centre on an ``allowed`` pixel; a string says why it could not be placed. A
    pattern larger than the image is shrunk to fit (``shrink_to_fit``, ``match_scale``'s
    sizes) or refused (``match_scale`` off: a pattern keeps its own size)."""
    img_h, img_w = allowed.shape
    y0, x0, y1, x1 = box
    fitting = min(img_h / (y1 - y0), img_w / (x1 - x0))
    if factor > fitting:
        if not shrink_to_fit:
            return "pattern larger than the target"
        factor = fitting
    crop_h, crop_w = mask.shape
    size = (max(1, round(crop_w * factor)), max(1, round(crop_h * factor)))
    resized = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_LINEAR)
    resized_box = mask_bbox(resized > 127)
    if resized_box is None:
        return "pattern vanished when resized"
    by0, bx0, by1, bx1 = resized_box
    corner = choose_location(allowed, by1 - by0, bx1 - bx0, rng)
    if corner is None:
        return "no location fits the pattern on the foreground"
    return Placement(factor, size, resized, resized_box, corner)


def draw_by_quota(
    attempt: Callable[[Scale, np.ndarray | None, np.random.Generator], dict | str],
    classes: np.ndarray,
    params: CAIParams,
    rngs: Sequence[np.random.Generator],
    indices: Sequence[int],
) -> list[dict | Failure]:
    """One draw per sample ``indices[i]``, from ``rngs[i]``, at that index's quota scale
    (:meth:`Quotas.scale_at`: large first). With ``match_scale``, the slot's
    scale falls to a smaller one where no pattern of ``classes`` can make it, and again when
    ``params.max_draws`` attempts at a scale all fail (e.g. no large pattern fits the
    foreground); without ``match_scale`` patterns keep their size and there is nothing to fall to.
    ``attempt(scale, eligible, rng)`` returns a dict (given ``attempts`` and the slot's
    ``requested_scale``) or a string reason."""
    results: list[dict | Failure] = []
    for index, rng in zip(indices, rngs, strict=True):
        requested = params.quotas.scale_at(index)
        scale = fallback_scale(requested, classes) if params.match_scale else requested
        if scale is None:
            reason = "no source pattern is at least 'small' for this target"
            results.append(Failure(reason, 0, reason))
            continue
        draws, tried, reason = 0, [], "unknown"
        made: dict | None = None
        while made is None:
            eligible = np.flatnonzero(classes >= scale) if params.match_scale else None
            tried.append(scale.label)
            for _ in range(params.max_draws):
                draws += 1
                outcome = attempt(scale, eligible, rng)
                if isinstance(outcome, str):
                    reason = outcome
                    continue
                made = {**outcome, "attempts": draws, "requested_scale": requested.label}
                break
            if made is None and (not params.match_scale or scale == Scale.SMALL):
                break
            scale = Scale(scale - 1)
        if made is not None:
            results.append(made)
        else:
            at = "/".join(tried)
            results.append(
                Failure(
                    f"gave up after {draws} draws ({at}): {reason}", draws, reason_cause(reason)
                )
            )
    return results


def _slices(y0: int, x0: int, y1: int, x1: int) -> tuple[slice, slice]:
    return slice(y0, y1), slice(x0, x1)


def _around(rect: BBox, pad: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """``rect`` grown by ``pad`` pixels each way, clipped to an image of ``shape``."""
    return _slices(
        max(0, rect[0] - pad),
        max(0, rect[1] - pad),
        min(shape[0], rect[2] + pad),
        min(shape[1], rect[3] + pad),
    )


def class_weights(classes: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Per-pattern sampling weights that draw class ``c`` with probability proportional to
    ``weights[c]`` (then uniformly within it), whatever its number of patterns."""
    names, counts = np.unique(classes, return_counts=True)
    per_class = {name: weights[name] / count for name, count in zip(names, counts, strict=True)}
    return np.array([per_class[name] for name in classes], np.float64)


DrawMode = Literal["records", "classes", "domains"]
"""How a pattern is drawn (a job's ``daad.draw``): every pattern alike (``records``), every
class alike (``classes``), or every source domain alike (``domains``), then a pattern within."""
DRAW_MODES: tuple[str, ...] = get_args(DrawMode)


def _share_equally(groups: np.ndarray) -> np.ndarray:
    """Per-pattern weights that give every distinct value of ``groups`` the same total, 1
    (``groups``: one row per pattern, of one or more columns)."""
    _, inverse, counts = np.unique(groups, axis=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse.ravel()].astype(np.float64)


def draw_weights(
    classes: np.ndarray,
    domains: np.ndarray,
    draw: str = "records",
    weights: dict[str, float] | None = None,
) -> np.ndarray | None:
    """Per-pattern sampling weights of a draw mode (:data:`DRAW_MODES`) and class weights.

    Without ``weights``: ``records`` is None (every pattern alike, drawn as before modes
    existed), ``classes`` gives each class the same share, ``domains`` each domain. With
    ``weights`` (per class; every class in ``classes`` named), each class's share is its
    weight, whatever the mode: under ``records`` and ``classes`` shared out evenly among the
    class's patterns (:func:`class_weights`), under ``domains`` evenly among the domains that
    have patterns of the class, then among each domain's patterns of it."""
    if draw not in DRAW_MODES:
        raise ValueError(f"unknown draw {draw!r}; one of {', '.join(DRAW_MODES)}")
    if weights is None:
        if draw == "records":
            return None
        return _share_equally(np.asarray(classes if draw == "classes" else domains))
    if draw != "domains":
        return class_weights(classes, weights)
    _, class_codes = np.unique(classes, return_inverse=True)
    _, domain_codes = np.unique(domains, return_inverse=True)
    pairs = np.stack([class_codes.ravel(), domain_codes.ravel()], axis=1)
    per_pair = _share_equally(pairs)  # each (class, domain) pair totals 1
    present = np.unique(pairs, axis=0)[:, 0]  # the class of each pair
    domains_per_class = np.bincount(present)[class_codes.ravel()].astype(np.float64)
    share = np.array([weights[str(name)] for name in classes], np.float64)
    return share * per_pair / domains_per_class


def draw_pattern(
    patterns: PatternLibrary | PatternList,
    eligible: np.ndarray | None,
    weights: np.ndarray | None,
    rng: np.random.Generator,
) -> SourcePattern | str:
    """A pattern drawn uniformly over ``eligible`` (all with ``None``), or in proportion to
    ``weights`` (per pattern, e.g. from :func:`class_weights`); for one that cannot be read,
    why (the caller's draw fails and it draws again)."""
    if weights is None:
        if eligible is None:
            index = int(rng.integers(len(patterns)))
        else:
            index = int(eligible[rng.integers(eligible.size)])
    else:
        pool = np.arange(len(patterns)) if eligible is None else eligible
        chances = weights[pool]
        index = int(pool[rng.choice(pool.size, p=chances / chances.sum())])
    try:
        return patterns[index]
    except UnreadablePattern as exc:
        return str(exc)


def check_weights(weights: np.ndarray | None, count: int) -> None:
    if weights is not None and (len(weights) != count or not (weights > 0).all()):
        raise ValueError("weights must be positive, one per pattern")


class UnreadablePattern(ValueError):
    """A library's pattern that cannot be read (a damaged record): the draw fails with this
    message and the slot draws again, so one damaged source never sinks a job."""


@runtime_checkable
class PatternLibrary(Protocol):
    """Source patterns by position, with every pattern's longest side known without loading it
    (what source-target matching needs), e.g. a lazily read DAAD. ``__getitem__`` raises
    :class:`UnreadablePattern` for a pattern that cannot be read."""

    longest_sides: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SourcePattern: ...


@dataclass(frozen=True)
class PatternList:
    """Patterns held in memory, as a :class:`PatternLibrary`."""

    patterns: Sequence[SourcePattern]

    @property
    def longest_sides(self) -> np.ndarray:
        return np.array([p.longest_side for p in self.patterns], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.patterns)

    def __getitem__(self, index: int) -> SourcePattern:
        return self.patterns[index]


class CAIInjector:
    """Injects source patterns into target images.

    Parameters
    ----------
    patterns : sequence of SourcePattern, or a PatternLibrary
        Already in the targets' channel layout ((M, N) grey or (M, N, 3) RGB, uint8). Only the
        patterns drawn are ever accessed.
    params : CAIParams
    weights : per-pattern sampling weights (> 0), e.g. from :func:`class_weights`; None: every
        pattern alike.

    Examples
    --------
    A dark line for a crack, injected into a flat grey target; the large slot falls to the
    scale the short pattern can make:

    >>> import numpy as np
    >>> source = np.full((64, 64), 200, np.uint8)
    >>> source[20:44, 30:34] = 40
    >>> crack = SourcePattern.from_full_image(
    ...     source, source < 100, anomaly_class="crack", domain="synthetic", record_id="c0"
    ... )
    >>> target = np.random.default_rng(0).normal(128, 4, (128, 128)).astype(np.uint8)
    >>> injector = CAIInjector([crack], CAIParams(quotas=Quotas(large=1, medium=1, small=1)))
    >>> first, *others = injector.synthesize(
    ...     target, np.ones(target.shape, bool), seed=0, target_key="tile-17"
    ... )
    >>> first.method, first.details()["requested_scale"], first.scale
    ('cai-normal', 'large', 'small')
    >>> first.image.shape, sorted(np.unique(first.mask).tolist()), len(others)
    ((128, 128), [0, 255], 2)
    """

    def __init__(
        self,
        patterns: Sequence[SourcePattern] | PatternLibrary,
        params: CAIParams | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        if not len(patterns):
            raise ValueError("CAI needs at least one source pattern (is the DAAD empty?)")
        self.patterns = patterns if isinstance(patterns, PatternLibrary) else PatternList(patterns)
        check_weights(weights, len(patterns))
        self.weights = weights
        self.params = params or CAIParams()
        self._longest = np.asarray(self.patterns.longest_sides, dtype=np.float64)
        kernel = self.params.mask_kernel
        self._kernel = np.ones((kernel, kernel), np.uint8)
        self.method = METHOD_NAMES[self.params.blend]
        self.anomalies_per_target = self.params.quotas.total

    def synthesize(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        *,
        seed: int,
        target_key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> list[Injection | Failure]:
        """The pseudo-anomalies of one target, by default all in quota order (large, medium,
        small); CAI's sources are DAAD patterns, so ``donors`` are not used."""
        fg_box = mask_bbox(foreground)
        if fg_box is None:
            raise ValueError("the target foreground is empty")
        fg_longest = bbox_longest_side(fg_box)
        classes = scale_classes(self._longest / fg_longest)
        if indices is None:
            indices = range(self.anomalies_per_target)
        rngs = [sample_rng(seed, target_key, k) for k in indices]

        def attempt(
            scale: Scale, eligible: np.ndarray | None, rng: np.random.Generator
        ) -> dict | str:
            return self._attempt(target, foreground, fg_longest, scale, eligible, rng)

        drawn = draw_by_quota(attempt, classes, self.params, rngs, indices)
        return [Injection(**d) if isinstance(d, dict) else d for d in drawn]

    def _attempt(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        fg_longest: int,
        scale: Scale,
        eligible: np.ndarray | None,
        rng: np.random.Generator,
    ) -> dict | str:
        params = self.params
        img_h, img_w = target.shape[:2]
        pattern = draw_pattern(self.patterns, eligible, self.weights, rng)
        if isinstance(pattern, str):
            return pattern
        factor = 1.0
        if params.match_scale:
            factor = synthesis_factor(scale, fg_longest, pattern.longest_side, rng)
        allowed = foreground if params.within_foreground else np.ones_like(foreground)
        placement = place_pattern(
            pattern.mask, pattern.box, factor, allowed, rng, shrink_to_fit=params.match_scale
        )
        if isinstance(placement, str):
            return placement
        size, corner, mask = placement.size, placement.corner, placement.mask
        by0, bx0, by1, bx1 = placement.box
        interp = cv2.INTER_AREA if placement.factor < 1 else cv2.INTER_LINEAR
        image = cv2.resize(pattern.image, size, interpolation=interp)

        # The crop, placed so its mask box starts at the corner, clipped to the image.
        oy, ox = corner[0] - by0, corner[1] - bx0
        py0, px0 = max(0, oy), max(0, ox)
        py1, px1 = min(img_h, oy + size[1]), min(img_w, ox + size[0])
        crop = _slices(py0 - oy, px0 - ox, py1 - oy, px1 - ox)
        placed = _slices(py0, px0, py1, px1)

        # Rectangle of the Poisson solve: the placed crop plus a margin, widened to fast DST sizes.
        margin = params.blend_margin
        ry0, rx0 = max(0, py0 - margin), max(0, px0 - margin)
        ry1 = min(img_h, ry0 + fast_rect_length(min(img_h, py1 + margin) - ry0))
        rx1 = min(img_w, rx0 + fast_rect_length(min(img_w, px1 + margin) - rx0))
        rect = _slices(ry0, rx0, ry1, rx1)
        inner = _slices(py0 - ry0, px0 - rx0, py1 - ry0, px1 - rx0)

        core_mask = mask[crop] > 127
        target_rect = target[rect]
        if params.blend == "paste":
            blended = target_rect.copy()
            blended[inner][core_mask] = image[crop][core_mask]
        else:
            closed = cv2.morphologyEx(mask[crop], cv2.MORPH_CLOSE, self._kernel)
            # cv2.seamlessClone, which the CAI reference calls, erodes its mask by three 3x3
            # steps before solving; the same here keeps our Omega the reference's.
            grown = cv2.erode(cv2.dilate(closed, self._kernel), _ERODE_3X3, iterations=3) > 127
            # Edges touching Omega must lie on real source pixels: keep Omega off the crop's rim.
            grown[[0, -1], :] = False
            grown[:, [0, -1]] = False
            omega = np.zeros(target_rect.shape[:2], bool)
            omega[inner] = grown
            source_rect = target_rect.copy()
            source_rect[inner] = image[crop]
            solved = poisson_blend(source_rect, target_rect, omega, params.blend)
            blended = np.clip(np.rint(solved), 0, 255).astype(np.uint8)

        result = target.copy()
        if params.within_foreground:  # the blend stays on the foreground; else nothing is clipped
            fg_rect = foreground[rect]
            keep = fg_rect[..., None] if target.ndim == 3 else fg_rect
            result[rect] = np.where(keep, blended, target_rect)
        else:
            result[rect] = blended

        # The placed pattern, and for the gate its footprint: everywhere the source mask lands
        # (a thin crack shrunk below half a pixel's width keeps its footprint, though not its
        # label); with within_foreground, only on the foreground the blend could change, so a
        # solid label never closes over background the pattern spans.
        pattern_mask = np.zeros((img_h, img_w), bool)
        pattern_mask[placed] = core_mask
        footprint = np.zeros((img_h, img_w), bool)
        footprint[placed] = mask[crop] > 0
        if params.within_foreground:
            pattern_mask &= foreground
            footprint &= foreground
        label = self._label(result, target, pattern_mask, (ry0, rx0, ry1, rx1))
        if params.within_foreground:
            label[~foreground] = 0
        if int(np.count_nonzero(label)) < params.min_mask_pixels:
            return "label mask below min_mask_pixels"
        surface = foreground if params.within_foreground else None
        invisible = self._invisible(result, target, footprint, label, surface, (ry0, rx0, ry1, rx1))
        if invisible is not None:
            return invisible
        bh, bw = by1 - by0, bx1 - bx0
        actual = max(bh, bw) / fg_longest
        return {
            "image": result,
            "mask": label,
            "method": self.method,
            "anomaly_class": pattern.anomaly_class,
            "scale": scale_of(actual).label,
            "source_target_ratio": pattern.longest_side / fg_longest,
            "synthesis_scale": actual,
            "source_record_id": pattern.record_id,
            "source_domain": pattern.domain,
            "center": (corner[0] + bh // 2, corner[1] + bw // 2),
            "blend_box": (ry0, rx0, ry1, rx1),
            "label_rule": params.label_rule,
            "pattern_mask": pattern_mask[rect],
            "pattern_footprint": footprint[rect],
        }

    def _invisible(
        self,
        result: np.ndarray,
        target: np.ndarray,
        footprint: np.ndarray,
        label: np.ndarray,
        surface: np.ndarray | None,
        rect: BBox,
    ) -> str | None:
        """Why the visibility gate refuses this attempt (``invisible: ...`` or ``low contrast:
        ...``), None when it passes or is off. Measured around the changed rectangle: outside
        it nothing changed, and the pad covers the contrast ring."""
        params = self.params
        if params.min_changed_share == 0 and params.min_contrast == 0:
            return None
        window = _around(rect, max(params.median_size // 2 + 1, CONTRAST_RING + 1), target.shape)
        share, contrast = visibility(
            result[window],
            target[window],
            footprint[window],
            label[window],
            threshold=params.diff_threshold,
            surface=None if surface is None else surface[window],
        )
        if share < params.min_changed_share:
            return (
                f"invisible: {share:.2f} of the pattern changed visibly, under "
                f"min_changed_share {params.min_changed_share}"
            )
        if contrast < params.min_contrast:
            return f"low contrast: {contrast:.2f}, under min_contrast {params.min_contrast}"
        return None

    def _label(
        self, result: np.ndarray, target: np.ndarray, pattern_mask: np.ndarray, rect: BBox
    ) -> np.ndarray:
        """Label mask computed only around the changed rectangle (identical to a full-image pass:
        outside it the difference is zero, and the pad covers the median filter's reach)."""
        params = self.params
        window = _around(rect, params.median_size // 2 + 1, target.shape)
        label = np.zeros(target.shape[:2], np.uint8)
        label[window] = label_mask(
            result[window],
            target[window],
            rule=params.label_rule,
            pattern_mask=pattern_mask[window],
            threshold=params.diff_threshold,
            median_size=params.median_size,
            pattern_dilation=params.pattern_dilation,
            regions=params.label_regions,
        )
        return label
