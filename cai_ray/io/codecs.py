"""Image and mask codecs that turn the odd files real datasets hold into plain uint8 arrays.

One decode path for every image the project reads (targets, DAAD sources and masks, test
sets), which shows an image as a viewer does:

* EXIF orientation is applied (a phone photo taken upright is upright), to images and masks
  alike, each by its own tag;
* 16-bit and 32-bit integer grey above 255 are scaled from their full range to 8 bits; float
  images in [0, 1] are scaled by 255 (others by their maximum); palette images are expanded;
  alpha is dropped;
* masks stored as 0/1 read as 0/255 would; any other mask is thresholded at 128 (any channel);
* more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`), an animated or
  multi-page file (it is not one image), a truncated or unreadable file: :class:`DecodeError`,
  whose message is deterministic (no object addresses) and which every stage counts as a skip.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import replace
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cai_ray.core.views import (
    Geometry,
    View,
    crop_rng,
    placed_region,
    plan_views,
    render_view,
    resize,
)
from cai_ray.io import storage
from cai_ray.io.png import DamagedPng, decode_own_png, encode_png

ColorMode = Literal["grey", "rgb"]
ImageFormat = Literal["png", "jpg"]

DEFAULT_MAX_PIXELS = 100_000_000
"""About 300 MB once decoded as RGB. Pillow's own limit (179 million pixels, against
decompression bombs) stays in force above it."""
_ORIENTATION_TAG = 0x0112
_SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class DecodeError(ValueError):
    """A file that is not a readable image or mask; the message says why."""


class ChangedInputError(RuntimeError):
    """An input whose size is not the size its list recorded: it changed since it was listed,
    so its samples would not be those the job's identity promises. Not a skip: the job stops,
    and a run with ``--relist`` names every input that changed."""


def _header(data: bytes, max_pixels: int) -> Image.Image:
    """The image, lazily opened, after the checks that need no pixels."""
    if not data:
        raise DecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("unreadable image (not a format Pillow recognises)") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"unreadable image ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(
            f"{width}x{height} is {width * height} pixels, more than max_pixels ({max_pixels})"
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise DecodeError(f"{frames} frames (an animation or multi-page file), not one image")
    return image


def _sideways(image: Image.Image) -> bool:
    """Whether the EXIF orientation swaps width and height (an unreadable tag: no)."""
    try:
        return image.getexif().get(_ORIENTATION_TAG) in _SIDEWAYS
    except (OSError, SyntaxError, ValueError):
        return False


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) as a viewer shows the lazily opened ``image``."""
    width, height = image.size
    return (width, height) if _sideways(image) else (height, width)


def _load(image: Image.Image, at_least: tuple[int, int] | None = None) -> Image.Image:
    """The pixels of a lazily opened image, upright; see :func:`decode_image` for
    ``at_least``."""
    try:
        if at_least is not None:  # JPEG decodes at 1/2, 1/4 or 1/8 scale where that is enough
            height, width = at_least
            image.draft(None, (height, width) if _sideways(image) else (width, height))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # a no-op, not a copy, when upright
        return image
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"unreadable image ({exc})") from exc


def _open(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return _load(_header(data, max_pixels))


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    """(M, N) or (M, N, 3) uint8 from any Pillow mode."""
    mode = image.mode
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DecodeError("float image with NaN or infinite values")
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 else 255.0 / peak if peak > 255 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if values.size else 0
        if peak > 255:
            values = values * (255.0 / (65535.0 if peak <= 65535 else peak))
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if mode in ("L", "1", "LA"):
        return np.asarray(image if mode == "L" else image.convert("L"), dtype=np.uint8)
    return np.asarray(image if mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def is_grey_content(image: np.ndarray) -> bool:
    """True for (M, N) images and for RGB images whose three channels are equal."""
    if image.ndim == 2:
        return True
    return bool(np.array_equal(image[..., 0], image[..., 1])) and bool(
        np.array_equal(image[..., 1], image[..., 2])
    )


def to_mode(image: np.ndarray, mode: ColorMode) -> np.ndarray:
    if mode == "grey":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def decode_image(
    data: bytes,
    mode: ColorMode | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    at_least: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode to (M, N) grey or (M, N, 3) RGB uint8 as a viewer shows it; ``mode=None`` keeps
    what the file holds. ``at_least`` (height, width): the decoder may return a smaller image
    no smaller than this, where its format can decode at reduced scale (JPEG: 1/2, 1/4, 1/8),
    so a huge photo that is about to be shrunk is never decoded at full size."""
    return _decode(_header(data, max_pixels), mode, at_least)


def _decode(
    image: Image.Image, mode: ColorMode | None, at_least: tuple[int, int] | None = None
) -> np.ndarray:
    array = _to_uint8_array(_load(image, at_least))
    return array if mode is None else to_mode(array, mode)


def decode_png(data: bytes, mode: ColorMode | None = None) -> np.ndarray:
    """A PNG, for the DAAD's pattern crops: read by hand where it has the layout that
    :func:`~cai_ray.io.png.encode_png` writes (about twice OpenCV's speed), else by
    :func:`decode_image`, whatever wrote it (an optimiser, Pillow, OpenCV): the same pixels
    either way. A file that is not a whole PNG (truncated, a chunk's CRC wrong) or that neither
    reads is a :class:`DecodeError`."""
    try:
        image = decode_own_png(data)
    except DamagedPng as exc:
        raise DecodeError(f"damaged PNG ({exc})") from None
    if image is None:
        return decode_image(data, mode)
    return image if mode is None else to_mode(image, mode)


def decode_mask(data: bytes) -> np.ndarray:
    """Decode a mask image to (M, N) bool: a pixel is set when any channel is >= 128, or, for
    a mask stored as 0 and 1 (a common export), when it is 1.

    128 is the rule for masks that are not strictly binary (interpolated or JPEG-damaged values),
    and it also reads palette masks whose defect colour is, e.g., (128, 0, 0).
    """
    array = _to_uint8_array(_open(data))
    threshold = 1 if array.size and array.max() == 1 else 128
    set_pixels = array >= threshold
    return np.asarray(set_pixels if array.ndim == 2 else set_pixels.any(axis=2))


def decode_class_mask(data: bytes) -> np.ndarray:
    """Decode a mask of class values (0 background, 1, 2, ... one per defect class) as they
    are: (M, N) uint8, no thresholding."""
    array = _to_uint8_array(_open(data))
    if array.ndim != 2:
        raise DecodeError(f"a class-value mask has one channel, not shape {array.shape}")
    return array


def image_size(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) as a viewer shows the image (EXIF orientation applied), from its header
    only, without decoding its pixels."""
    return _oriented_size(_header(data, max_pixels))


def decode_mat_mask(data: bytes, *, field_path: str, foreground_value: int) -> np.ndarray:
    """A mask stored in a MATLAB file, e.g. CrackForest's ``groundTruth.Segmentation == 2``."""
    from scipy.io import loadmat

    try:
        content = loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises several unrelated types for bad files
        raise DecodeError(f"unreadable MATLAB file ({exc})") from exc
    value: object = content
    for name in field_path.split("."):
        try:
            value = value[name]  # type: ignore[index]
            while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
                value = value.flat[0]
            if isinstance(value, np.ndarray) and value.dtype.names and value.size == 1:
                value = value.flat[0]
        except (KeyError, ValueError, IndexError) as exc:
            raise DecodeError(f"MATLAB file has no field {field_path!r}") from exc
    array = np.asarray(value)
    if array.ndim != 2:
        raise DecodeError(f"MATLAB field {field_path!r} is not a 2-D array (shape {array.shape})")
    return array == foreground_value


MIN_TARGET_SIDE = 16
"""A smaller target (a 1x1 placeholder, an icon) would be blown up to a blur: a skip."""


def load_views(
    url: str,
    size: int,
    mode: ColorMode,
    geometry: Geometry,
    *,
    seed: int = 0,
    key: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    listed_bytes: int | None = None,
) -> list[tuple[View, np.ndarray, np.ndarray]]:
    """The targets ``geometry`` makes of one image: (view, ``size x size`` target, bool region
    of the target that shows the image). Views are in the input's own coordinates; random
    crops are placed from (``seed``, ``key``), the image's key. An image that will be shrunk
    (``resize``, ``letterbox``) is decoded at a reduced scale where the format allows and at
    least twice the size it is shrunk to remains. Raises ``OSError`` or :class:`DecodeError`
    (above ``max_pixels``, or a side under :data:`MIN_TARGET_SIDE`), and
    :class:`ChangedInputError` where the file is not ``listed_bytes`` long."""
    data = storage.read_bytes(url)
    if listed_bytes is not None and len(data) != listed_bytes:
        raise ChangedInputError(
            f"{url} is {len(data)} bytes, {listed_bytes} when it was listed: it changed since; "
            "run again with --relist (a resume then names every input that changed)"
        )
    header = _header(data, max_pixels)  # opened once: size, then pixels
    height, width = _oriented_size(header)
    if min(height, width) < MIN_TARGET_SIDE:
        raise DecodeError(f"{width}x{height} is smaller than {MIN_TARGET_SIDE} pixels a side")
    rng = crop_rng(seed, key) if geometry.draws_views else None
    views = plan_views(height, width, size, geometry, rng)
    at_least = None
    if geometry.one_view_per_image:
        py0, px0, py1, px1 = views[0].placed
        at_least = (2 * (py1 - py0), 2 * (px1 - px0))
    image = _decode(header, mode, at_least)
    if image.shape[:2] != (height, width):  # decoded at reduced scale: the box is all of it
        rendered = [replace(views[0], box=(0, 0, *image.shape[:2]))]
    else:
        rendered = views
    return [
        (view, render_view(image, shown, size), placed_region(view, size))
        for view, shown in zip(views, rendered, strict=True)
    ]


def load_image(url: str, size: int, mode: ColorMode) -> np.ndarray:
    """An image as a job sees it by default: read (local or s3://), decoded in ``mode``,
    resized to ``size x size`` (:func:`load_views` with the ``resize`` geometry)."""
    return load_views(url, size, mode, Geometry())[0][1]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A bool mask resized like its image (:func:`resize`), then thresholded at half, so it
    stays binary and aligned with the image."""
    return np.asarray(resize(mask.astype(np.uint8) * 255, size) > 127)


def encode_image(image: np.ndarray, fmt: ImageFormat, *, jpeg_quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of a grey or RGB uint8 image."""
    if fmt == "png":
        return encode_png(image)
    if fmt != "jpg":
        raise ValueError(f"unknown image format {fmt!r}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return buffer.tobytes()
