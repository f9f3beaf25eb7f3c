"""Poisson image editing on a rectangle, solved exactly with the type-I discrete sine transform.

The problem (the discretisation ``cv2.seamlessClone`` uses, which the CAI reference code calls):
on a rectangle R, find f with f = target on the border of R and, at every interior pixel p,

    4 f_p - sum_{q ~ p} f_q = sum_{q ~ p} v_pq

where each edge from a pixel p to its right or lower neighbour q carries the guidance
s_q - s_p when p is in the region Omega (the mask) and t_q - t_p otherwise. In mixed mode an edge
from Omega takes whichever of the source and target differences is larger in magnitude, per edge
and channel, as Perez et al. define it (cv2's MIXED_CLONE instead compares |gx - gy| of source
and target and picks both directions together; we keep the paper's rule).

Writing f = t + u, u vanishes on the border and solves a 5-point Poisson equation with zero
Dirichlet boundary whose right-hand side is non-zero only next to Omega; the DST-I diagonalises
that operator, so two transforms give the exact discrete solution.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from scipy import fft

BlendMode = Literal["normal", "mixed"]


def _edge_terms(
    source: np.ndarray, target: np.ndarray, edges: np.ndarray, axis: int, mode: BlendMode
) -> np.ndarray:
    """Guidance minus target difference on each edge along ``axis`` (zero off Omega)."""
    target_diff = np.diff(target, axis=axis)
    source_diff = np.diff(source, axis=axis)
    if mode == "mixed":
        source_diff = np.where(np.abs(source_diff) > np.abs(target_diff), source_diff, target_diff)
    term = source_diff - target_diff
    if term.ndim == 3:
        return term * edges[..., None]
    return term * edges


@functools.lru_cache(maxsize=1024)
def _laplacian_eigenvalues_1d(length: int) -> np.ndarray:
    values = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, length + 1) / (length + 1))
    values.flags.writeable = False
    return values


@functools.lru_cache(maxsize=256)
def _eigenvalues(height: int, width: int) -> np.ndarray:
    """Eigenvalues of the negative 5-point Laplacian with zero Dirichlet boundary, kept per
    shape (callers use fast rectangle sides, so few shapes repeat; at most 256 x 256 KiB)."""
    ky = _laplacian_eigenvalues_1d(height)
    kx = _laplacian_eigenvalues_1d(width)
    values = (ky[:, None] + kx[None, :]).astype(np.float32)
    values.flags.writeable = False
    return values


def poisson_blend(
    source: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    mode: BlendMode = "normal",
) -> np.ndarray:
    """Blend ``source`` into ``target`` over ``mask`` by Poisson editing on the whole rectangle.

    Parameters
    ----------
    source, target : (M, N[, C]) ndarray
        Same shape; any real dtype. Border pixels of ``target`` are kept as they are.
    mask : (M, N) ndarray of bool
        Omega. Pixels on the rectangle's border are ignored (they are Dirichlet values).
    mode : {"normal", "mixed"}
        Guidance from the source gradient, or the stronger of source and target gradients.

    Returns
    -------
    (M, N[, C]) ndarray of float32
        The blended rectangle, not clipped or rounded.
    """
    if source.shape != target.shape:
        raise ValueError(f"source {source.shape} and target {target.shape} differ in shape")
    if mask.shape != source.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {source.shape[:2]}")
    if mode not in ("normal", "mixed"):
        raise ValueError(f"mode must be 'normal' or 'mixed', got {mode!r}")
    height, width = mask.shape
    tgt = target.astype(np.float32, copy=False)
    if height < 3 or width < 3:
        return tgt.copy()
    src = source.astype(np.float32, copy=False)
    omega = mask.astype(bool, copy=False)

    # The edge from p to its right (lower) neighbour takes the source guidance when p is in
    # Omega; every other edge's term is zero, so they are formed on Omega's box (plus the
    # neighbours to its right and below) only: the same values, a fraction of the work.
    rhs = np.zeros_like(tgt)
    rows = np.flatnonzero(omega.any(axis=1))
    if rows.size:
        cols = np.flatnonzero(omega.any(axis=0))
        box = np.s_[rows[0] : rows[-1] + 2, cols[0] : cols[-1] + 2]
        src_box, tgt_box, omega_box, rhs_box = src[box], tgt[box], omega[box], rhs[box]
        dh = _edge_terms(src_box, tgt_box, omega_box[:, :-1], axis=1, mode=mode)
        dv = _edge_terms(src_box, tgt_box, omega_box[:-1, :], axis=0, mode=mode)
        # rhs_p = sum_q (v_pq - (t_p - t_q)); an edge's term enters p with - and q with +.
        rhs_box[:, :-1] -= dh
        rhs_box[:, 1:] += dh
        rhs_box[:-1, :] -= dv
        rhs_box[1:, :] += dv
    interior = rhs[1:-1, 1:-1]

    axes = (0, 1)
    spectrum = fft.dstn(interior, type=1, axes=axes, norm="ortho")
    eig = _eigenvalues(height - 2, width - 2)
    spectrum /= eig[..., None] if spectrum.ndim == 3 else eig
    correction = fft.idstn(spectrum, type=1, axes=axes, norm="ortho")

    result = tgt.copy()
    result[1:-1, 1:-1] += correction
    return result


def fast_rect_length(length: int) -> int:
    """The smallest rectangle side >= ``length`` whose DST-I is fast.

    A DST-I over n interior points runs an FFT of length 2(n + 1); for n + 1 with a large prime
    factor that is several times slower, so callers widen their rectangle to a 5-smooth n + 1.
    """
    interior = max(length - 2, 1)
    return fft.next_fast_len(interior + 1, real=True) - 1 + 2
