"""Foreground extraction: where on a normal image an anomaly may be injected.

``rembg`` runs a salient-object ONNX model from a local file (no download ever); ``otsu`` and
``grabcut`` are classical fallbacks for objects on a plain background; ``full`` is for textures,
where every pixel is the object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from cai_ray.extras import require

ForegroundMethod = Literal["rembg", "otsu", "grabcut", "full"]
ForegroundExtractor = Callable[[np.ndarray], np.ndarray]


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected region and fill its holes: objects are one solid piece."""
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def full_foreground(image: np.ndarray) -> np.ndarray:
    """Every pixel is foreground (textures)."""
    return np.ones(image.shape[:2], dtype=bool)


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Otsu threshold; the side that owns most of the image border is the background."""
    grey = cv2.GaussianBlur(_grey(image), (5, 5), 0)
    _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    foreground = bright if border.mean() < 0.5 else 1 - bright
    return _largest_component_filled(foreground)


def grabcut_foreground(
    image: np.ndarray, *, iterations: int = 3, margin: float = 0.05
) -> np.ndarray:
    """GrabCut initialised with the image minus a ``margin`` frame as the probable object."""
    colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    height, width = colour.shape[:2]
    dy, dx = max(1, int(height * margin)), max(1, int(width * margin))
    rect = (dx, dy, width - 2 * dx, height - 2 * dy)
    labels = np.zeros((height, width), np.uint8)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    cv2.grabCut(colour, labels, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


class RembgForeground:
    """rembg salient-object matting with a local ONNX model file (a U2-Net export or compatible).

    Parameters
    ----------
    model_path : str or Path
        A local ``.onnx`` file. rembg would download weights for named models; this never does.
    threshold : int
        Matte value (0-255) above which a pixel is foreground.
    """

    def __init__(self, model_path: str | Path, *, threshold: int = 128) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"rembg model file not found: {path}. Foreground 'rembg' needs a local ONNX model "
                "(e.g. u2net.onnx copied from a machine with internet access); or choose "
                "foreground method 'otsu', 'grabcut' or 'full'."
            )
        require("rembg", ("onnxruntime", "rembg"), "foreground method 'rembg'")
        from rembg import new_session

        self.threshold = threshold
        # rembg >= 2.0.80 accepts model files only under its home folder, read from REMBG_HOME
        # while the session is created: point it at the model's folder for that moment only.
        previous = os.environ.get("REMBG_HOME")
        os.environ["REMBG_HOME"] = str(path.resolve().parent)
        try:
            self._session: Any = new_session("u2net_custom", model_path=str(path.resolve()))
        finally:
            if previous is None:
                del os.environ["REMBG_HOME"]
            else:
                os.environ["REMBG_HOME"] = previous

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        matte = self._session.predict(Image.fromarray(colour))[0]
        return np.asarray(matte, dtype=np.uint8) > self.threshold


def foreground_in_placed(
    extract: ForegroundExtractor, target: np.ndarray, placed: tuple[int, int, int, int]
) -> np.ndarray:
    """The foreground of a padded target (letterbox, or a crop or tile wider than its image):
    ``extract`` sees only the ``placed`` rectangle that shows the image, never the padding.
    Padding would otherwise dominate Otsu's histogram and GrabCut's border model and turn the
    whole image into "object". Padding is never foreground."""
    y0, x0, y1, x1 = placed
    if (y0, x0, y1, x1) == (0, 0, *target.shape[:2]):
        return extract(target)
    foreground = np.zeros(target.shape[:2], dtype=bool)
    foreground[y0:y1, x0:x1] = extract(np.ascontiguousarray(target[y0:y1, x0:x1]))
    return foreground


def make_foreground_extractor(
    method: ForegroundMethod, *, model_path: str | None = None
) -> ForegroundExtractor:
    """The extractor for a configured method; ``rembg`` requires ``model_path``."""
    if method == "full":
        return full_foreground
    if method == "otsu":
        return otsu_foreground
    if method == "grabcut":
        return grabcut_foreground
    if method == "rembg":
        if not model_path:
            raise ValueError(
                "foreground method 'rembg' needs foreground.model_path: a local ONNX model file"
            )
        return RembgForeground(model_path)
    raise ValueError(f"unknown foreground method {method!r}")
