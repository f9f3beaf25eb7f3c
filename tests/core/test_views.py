"""Views: how an input image of any shape becomes size x size targets."""

import numpy as np
import pytest

from cai_ray.core.views import (
    Geometry,
    crop_rng,
    placed_region,
    plan_views,
    render_view,
    resize,
    window_starts,
)


def _strip(height: int, width: int) -> np.ndarray:
    """A grey ramp whose value encodes each pixel's column and row, so crops can be traced."""
    rows = np.arange(height)[:, None] % 7
    cols = np.arange(width)[None, :] % 31
    return (rows * 31 + cols).astype(np.uint8)


def test_resize_is_one_squashed_view():
    image = _strip(460, 1130)
    (view,) = plan_views(460, 1130, 256, Geometry())
    assert view.box == (0, 0, 460, 1130) and view.placed == (0, 0, 256, 256)
    assert np.array_equal(render_view(image, view, 256), resize(image, 256))


def test_letterbox_keeps_the_aspect_ratio_and_pads_black():
    image = np.full((460, 1130, 3), 200, np.uint8)
    (view,) = plan_views(460, 1130, 256, Geometry(mode="letterbox"))
    y0, x0, y1, x1 = view.placed
    assert (x1 - x0, y1 - y0) == (256, 104)  # 1130:460 is 256:104.2
    assert abs((x1 - x0) / (y1 - y0) - 1130 / 460) < 0.02
    target = render_view(image, view, 256)
    region = placed_region(view, 256)
    assert target.shape == (256, 256, 3)
    assert (target[region] == 200).all() and (target[~region] == 0).all()
    assert region.sum() == 256 * 104
    # a portrait image pads left and right instead
    (tall,) = plan_views(1130, 460, 256, Geometry(mode="letterbox"))
    assert tall.placed == (0, 76, 256, 180)


def test_tiles_cover_the_image_at_its_own_resolution_with_the_overlap_asked():
    image = _strip(460, 1130)
    views = plan_views(460, 1130, 256, Geometry(mode="tile", overlap=32))
    covered = np.zeros((460, 1130), int)
    for view in views:
        y0, x0, y1, x1 = view.box
        assert (y1 - y0, x1 - x0) == (256, 256)
        assert np.array_equal(render_view(image, view, 256), image[y0:y1, x0:x1])
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert [v.index for v in views] == list(range(len(views)))
    xs = sorted({v.box[1] for v in views})
    ys = sorted({v.box[0] for v in views})
    assert xs[0] == 0 and xs[-1] == 1130 - 256 and ys == [0, 460 - 256]
    assert all(b - a <= 256 - 32 for a, b in zip(xs, xs[1:], strict=False))
    assert len(views) == 2 * 5  # the fewest: ceil((1130 - 32) / 224) = 5 columns


def test_window_starts_are_the_fewest_that_keep_the_overlap():
    for length in range(256, 3000, 37):
        for overlap in (0, 1, 16, 100, 255):
            starts = window_starts(length, 256, overlap)
            assert starts[0] == 0 and starts[-1] == length - 256
            steps = np.diff(starts)
            assert (steps <= 256 - overlap).all() and (steps > 0).all()
            if len(starts) > 2:  # one window fewer would leave a gap or too little overlap
                assert (len(starts) - 2) * (256 - overlap) < length - 256
    assert window_starts(100, 256, 10) == [0]


def test_a_side_shorter_than_the_window_is_taken_whole_and_padded():
    image = _strip(200, 4096)  # a line-scan strip lower than the target
    views = plan_views(200, 4096, 256, Geometry(mode="tile"))
    assert len(views) == 16
    for view in views:
        assert view.box[0] == 0 and view.box[2] == 200
        assert view.placed == (28, 0, 228, 256)
        target = render_view(image, view, 256)
        y0, x0, y1, x1 = view.box
        assert np.array_equal(target[28:228], image[y0:y1, x0:x1])
        assert not target[:28].any() and not target[228:].any()


def test_random_crops_are_a_pure_function_of_seed_and_key():
    geometry = Geometry(mode="crop", crops=5)
    first = plan_views(460, 1130, 256, geometry, crop_rng(3, "a/b.png"))
    again = plan_views(460, 1130, 256, geometry, crop_rng(3, "a/b.png"))
    other_key = plan_views(460, 1130, 256, geometry, crop_rng(3, "a/c.png"))
    other_seed = plan_views(460, 1130, 256, geometry, crop_rng(4, "a/b.png"))
    assert first == again
    assert first != other_key and first != other_seed
    for view in first:
        y0, x0, y1, x1 = view.box
        assert min(y0, x0) >= 0 and y1 <= 460 and x1 <= 1130
        assert (y1 - y0, x1 - x0) == (256, 256) and view.placed == (0, 0, 256, 256)
    (centre,) = plan_views(460, 1130, 256, Geometry(mode="crop", position="centre"))
    assert centre.box == (102, 437, 358, 693)


def test_bad_geometry_settings_are_refused():
    with pytest.raises(ValueError, match="crops"):
        Geometry(mode="crop", crops=0)
    with pytest.raises(ValueError, match="overlap"):
        Geometry(mode="tile", overlap=-1)
    with pytest.raises(ValueError, match="centre"):
        Geometry(mode="crop", crops=3, position="centre")
    with pytest.raises(ValueError, match="smaller than the tile"):
        plan_views(500, 500, 64, Geometry(mode="tile", overlap=64))
    with pytest.raises(ValueError, match="smaller than the tile"):  # crops are scored as tiles
        Geometry(mode="crop", overlap=64).check_size(64)
    with pytest.raises(ValueError, match="random generator"):
        plan_views(500, 500, 64, Geometry(mode="crop"))


EVERY_MODE = [
    Geometry(),
    Geometry(mode="letterbox"),
    Geometry(mode="crop", crops=3, overlap=16),
    Geometry(mode="crop", position="centre"),
    Geometry(mode="tile", overlap=16),
]


@pytest.mark.parametrize("geometry", EVERY_MODE, ids=lambda g: f"{g.mode}-{g.position}")
def test_what_a_mode_needs_is_what_plan_views_does(geometry):
    """``draws_views`` says whether views need a generator; ``one_view_per_image`` how many
    views an image makes."""
    if geometry.draws_views:
        with pytest.raises(ValueError, match="random generator"):
            plan_views(460, 1130, 256, geometry)
        views = plan_views(460, 1130, 256, geometry, crop_rng(0, "k"))
        assert views != plan_views(460, 1130, 256, geometry, crop_rng(1, "k"))
    else:  # no generator needed, and one would change nothing
        views = plan_views(460, 1130, 256, geometry)
        assert views == plan_views(460, 1130, 256, geometry, crop_rng(0, "k"))
    assert (len(views) == 1 and views[0].box == (0, 0, 460, 1130)) == geometry.one_view_per_image


@pytest.mark.parametrize("geometry", EVERY_MODE, ids=lambda g: f"{g.mode}-{g.position}")
def test_a_mode_is_scored_whole_or_by_tiles_covering_every_pixel(geometry):
    scoring = geometry.scoring()
    assert not scoring.draws_views  # a test image is scored the same on every run
    assert scoring.one_view_per_image == geometry.one_view_per_image
    covered = np.zeros((460, 1130), bool)
    for view in plan_views(460, 1130, 256, scoring):
        y0, x0, y1, x1 = view.box
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert scoring.overlap == geometry.overlap or scoring.one_view_per_image
    # only resize scores on the squashed target; the other modes stitch back to the image
    assert geometry.scored_on_target == (geometry.mode == "resize") == (not geometry.records_view)
