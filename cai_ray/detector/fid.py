"""Fréchet Inception Distance between two image sets, with Inception weights the user supplies.

No weights are downloaded. ``load_inception`` takes a local TorchScript file with the calling
convention of the widely used ``inception-2015-12-05.pt`` (the TF-Inception port that StyleGAN
and clean-fid use): ``model(images, return_features=True)`` on uint8 tensors (N, 3, H, W) gives
(N, 2048) pool features (the model resizes to 299 itself). FID is then Heusel et al.'s
``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg


class InceptionWeightsError(FileNotFoundError):
    """The FID feature network is missing or not a TorchScript file."""


def load_inception(path: str | Path) -> torch.jit.ScriptModule:
    file = Path(path)
    if not file.is_file():
        raise InceptionWeightsError(
            f"FID needs local Inception weights and {file} does not exist: download "
            "'inception-2015-12-05.pt' (TorchScript, as used by StyleGAN3 and clean-fid) where "
            "you have internet access and set fid.weights to its path"
        )
    try:
        model = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise InceptionWeightsError(f"{file} is not a TorchScript model: {exc}") from exc
    return model.eval()


@torch.no_grad()
def inception_features(
    model: torch.jit.ScriptModule, images: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """(N, D) float64 features of uint8 images (N, H, W) grey or (N, H, W, 3) RGB."""
    features = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if batch.ndim == 3:
            batch = np.repeat(batch[..., None], 3, axis=-1)
        tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        features.append(model(tensor, return_features=True).double().numpy())
    return np.concatenate(features)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D), N, M >= 2."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # SciPy warns of a singular product (fewer images than
        warnings.simplefilter("error", linalg.LinAlgWarning)  # features): regularise it then
        try:
            root = linalg.sqrtm(cov_a @ cov_b)
        except linalg.LinAlgWarning:
            root = np.full_like(cov_a, np.nan)
    if not np.isfinite(root).all():  # singular product: regularise as pytorch-fid does
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def fid_of(model: torch.jit.ScriptModule, images_a: np.ndarray, images_b: np.ndarray) -> float:
    return frechet_distance(
        inception_features(model, images_a), inception_features(model, images_b)
    )
