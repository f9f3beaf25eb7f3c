"""The DST solver against an exact sparse solve (built independently, pixel by pixel) and
against cv2.seamlessClone on real images."""

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndimage
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
from scipy import fft

from cai_ray.core.poisson import _edge_terms, _eigenvalues, fast_rect_length, poisson_blend
from cai_ray.io.codecs import decode_image, decode_mask
from tests.conftest import DEMO


def sparse_reference(source, target, omega, mode):
    """Direct sparse solve of the same discrete equation, one pixel's row at a time."""
    height, width = omega.shape
    src, tgt = source.astype(np.float64), target.astype(np.float64)
    interior = [(y, x) for y in range(1, height - 1) for x in range(1, width - 1)]
    index = {p: i for i, p in enumerate(interior)}

    def guidance(p, q):
        """v_pq = g_p - g_q, with the edge owned by its upper or left pixel."""
        origin = min(p, q)
        s_diff, t_diff = src[p] - src[q], tgt[p] - tgt[q]
        if not omega[origin]:
            return t_diff
        if mode == "mixed" and abs(t_diff) >= abs(s_diff):
            return t_diff
        return s_diff

    rows, cols, vals = [], [], []
    rhs = np.zeros(len(interior))
    for i, (y, x) in enumerate(interior):
        rows.append(i)
        cols.append(i)
        vals.append(4.0)
        for q in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            rhs[i] += guidance((y, x), q)
            if q in index:
                rows.append(i)
                cols.append(index[q])
                vals.append(-1.0)
            else:
                rhs[i] += tgt[q]
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(interior),) * 2)
    solution = sparse_linalg.spsolve(matrix, rhs)
    result = tgt.copy()
    for (y, x), value in zip(interior, solution, strict=True):
        result[y, x] = value
    return result


@pytest.mark.parametrize("mode", ["normal", "mixed"])
@pytest.mark.parametrize("shape", [(9, 13), (16, 11), (20, 20)])
def test_matches_exact_sparse_solution(mode, shape):
    rng = np.random.default_rng(sum(shape))
    source = rng.uniform(0, 255, shape)
    target = rng.uniform(0, 255, shape)
    omega = rng.random(shape) < 0.4
    expected = sparse_reference(source, target, omega, mode)
    result = poisson_blend(source, target, omega, mode)
    np.testing.assert_allclose(result, expected, atol=1e-3)


def test_colour_channels_are_solved_independently():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 255, (12, 14, 3))
    target = rng.uniform(0, 255, (12, 14, 3))
    omega = rng.random((12, 14)) < 0.5
    result = poisson_blend(source, target, omega, "mixed")
    for channel in range(3):
        expected = sparse_reference(source[..., channel], target[..., channel], omega, "mixed")
        np.testing.assert_allclose(result[..., channel], expected, atol=1e-3)


def test_a_brightness_offset_in_the_source_disappears():
    """Guidance depends only on gradients: source = target + c changes nothing."""
    rng = np.random.default_rng(2)
    target = rng.uniform(50, 200, (40, 50)).astype(np.float32)
    omega = np.zeros((40, 50), bool)
    omega[10:30, 10:40] = True
    np.testing.assert_allclose(poisson_blend(target + 37.0, target, omega), target, atol=1e-3)


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        poisson_blend(np.zeros((5, 5)), np.zeros((5, 6)), np.zeros((5, 5), bool))
    with pytest.raises(ValueError):
        poisson_blend(np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        poisson_blend(np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 5), bool), "other")


def test_fast_rect_length_gives_smooth_transform_sizes():
    for length in range(3, 300):
        fast = fast_rect_length(length)
        assert fast >= length
        interior_plus_one = fast - 1
        for prime in (2, 3, 5):
            while interior_plus_one % prime == 0:
                interior_plus_one //= prime
        assert interior_plus_one == 1


def test_agrees_with_cv2_seamless_clone_on_real_images(tile_targets):
    """Normal mode, same rectangle and region as cv2 (mask bounding box; cv2 erodes its mask by
    three 3x3 steps first). Tolerance: 1 grey level, the rounding of two float32 solutions of
    the same equation (cv2 uses its own DFT-based solver)."""
    target = tile_targets[0]
    for image_path in sorted((DEMO / "defects").glob("MT_*/Imgs/*.jpg"))[::3]:
        source = cv2.resize(decode_image(image_path.read_bytes(), "grey"), (256, 180))
        label = decode_mask(image_path.with_suffix(".png").read_bytes())
        mask = cv2.resize(label.astype(np.uint8) * 255, (256, 180)) > 127
        placed = target.copy()
        placed[40:220] = source
        region = np.zeros((256, 256), np.uint8)
        region[50:210, 20:236] = mask[10:170, 20:236] * 255
        kernel = np.ones((8, 8), np.uint8)
        region = cv2.dilate(cv2.morphologyEx(region, cv2.MORPH_CLOSE, kernel), kernel)
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        centre = (int(x0 + (x1 - x0) // 2), int(y0 + (y1 - y0) // 2))
        expected = cv2.seamlessClone(
            cv2.cvtColor(placed, cv2.COLOR_GRAY2BGR),
            cv2.cvtColor(target, cv2.COLOR_GRAY2BGR),
            region.copy(),
            centre,
            cv2.NORMAL_CLONE,
        )[..., 0].astype(np.float32)
        omega = ndimage.binary_erosion(region > 0, structure=np.ones((3, 3)), iterations=3)
        rect = (slice(y0, y1), slice(x0, x1))
        result = target.astype(np.float32)
        result[rect] = np.clip(
            np.rint(poisson_blend(placed[rect], target[rect], omega[rect])), 0, 255
        )
        assert np.abs(result - expected).max() <= 1.0
        assert np.abs(expected - target).max() > 20  # the crack really was blended in


def full_rectangle_blend(source, target, omega, mode):
    """The solver as it was before it was optimised: edge terms formed over the whole rectangle and
    the eigenvalues computed afresh, to pin the optimised one to."""
    tgt, src = target.astype(np.float32), source.astype(np.float32)
    dh = _edge_terms(src, tgt, omega[:, :-1], axis=1, mode=mode)
    dv = _edge_terms(src, tgt, omega[:-1, :], axis=0, mode=mode)
    rhs = np.zeros_like(tgt)
    rhs[:, :-1] -= dh
    rhs[:, 1:] += dh
    rhs[:-1, :] -= dv
    rhs[1:, :] += dv
    height, width = omega.shape[0] - 2, omega.shape[1] - 2
    ky = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, height + 1) / (height + 1))
    kx = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, width + 1) / (width + 1))
    eig = (ky[:, None] + kx[None, :]).astype(np.float32)
    spectrum = fft.dstn(rhs[1:-1, 1:-1], type=1, axes=(0, 1), norm="ortho")
    spectrum /= eig[..., None] if spectrum.ndim == 3 else eig
    result = tgt.copy()
    result[1:-1, 1:-1] += fft.idstn(spectrum, type=1, axes=(0, 1), norm="ortho")
    return result


@pytest.mark.parametrize("mode", ["normal", "mixed"])
@pytest.mark.parametrize("shape", [(30, 41), (64, 25, 3), (5, 5)])
def test_edge_terms_on_omegas_box_give_the_same_floats(mode, shape):
    """Forming the right-hand side on Omega's box only is exact, bit for bit, for
    small and large, grey and colour, empty and edge-touching Omegas."""
    rng = np.random.default_rng(7)
    for trial in range(6):
        source = rng.integers(0, 256, shape, dtype=np.uint8)
        target = rng.integers(0, 256, shape, dtype=np.uint8)
        omega = np.zeros(shape[:2], bool)
        if trial:  # trial 0: an empty Omega
            y0, x0 = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
            y1, x1 = rng.integers(y0 + 1, shape[0] + 1), rng.integers(x0 + 1, shape[1] + 1)
            omega[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
        expected = full_rectangle_blend(source, target, omega, mode)
        assert np.array_equal(poisson_blend(source, target, omega, mode), expected)


def test_cached_eigenvalues_are_the_laplacians_and_read_only():
    """The per-shape cache hands out the same float32 array the formula gives, and callers
    cannot change it for the next solve."""
    for height, width in ((3, 5), (61, 97), (3, 5)):
        ky = 2 - 2 * np.cos(np.pi * np.arange(1, height + 1) / (height + 1))
        kx = 2 - 2 * np.cos(np.pi * np.arange(1, width + 1) / (width + 1))
        cached = _eigenvalues(height, width)
        assert cached.dtype == np.float32
        assert np.array_equal(cached, (ky[:, None] + kx[None, :]).astype(np.float32))
        with pytest.raises(ValueError):
            cached[0, 0] = 1
    assert _eigenvalues(61, 97) is _eigenvalues(61, 97)
