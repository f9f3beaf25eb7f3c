"""Our own PNG codec (cai_ray/io/png.py) and the crop decoder on it: our own PNGs read by hand,
any other PNG by the general decoder (the same pixels), and every short, truncated or corrupt
file a DecodeError."""

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from cai_ray.io.codecs import DecodeError, decode_image, decode_png
from cai_ray.io.png import decode_own_png, encode_png
from tests.conftest import DEMO

TILE = next(iter(sorted((DEMO / "normal").glob("*.jpg"))))


def _image(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] //= 7  # a smooth half as well as noise
    return image


def _pillow(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", **options)
    return buffer.getvalue()


def _opencv(image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image, params)
    assert ok
    return buffer.tobytes()


WRITERS = {
    "ours": encode_png,
    "pillow": _pillow,
    "pillow-optimize": lambda image: _pillow(image, optimize=True),
    "pillow-level-0": lambda image: _pillow(image, compress_level=0),
    "pillow-level-9": lambda image: _pillow(image, compress_level=9),
    "opencv": _opencv,
    "opencv-level-0": lambda image: _opencv(image, cv2.IMWRITE_PNG_COMPRESSION, 0),
    "opencv-level-9": lambda image: _opencv(image, cv2.IMWRITE_PNG_COMPRESSION, 9),
    "opencv-rle": lambda image: _opencv(
        image, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE
    ),
    "opencv-filter-sub": lambda image: _opencv(
        image, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB
    ),
    "opencv-filter-paeth": lambda image: _opencv(
        image, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH
    ),
    # "Up" on every row, as ours, but split over several IDAT chunks
    "opencv-filter-up-small-chunks": lambda image: _opencv(
        image,
        cv2.IMWRITE_PNG_FILTER,
        cv2.IMWRITE_PNG_FILTER_UP,
        cv2.IMWRITE_PNG_ZLIBBUFFER_SIZE,
        64,
    ),
}
SHAPES = [(1, 1), (17, 33), (20, 9, 3), (300, 257, 3)]


@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (20, 9, 3)])
def test_png_round_trips_exactly(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(image)), image)
    with pytest.raises(ValueError):
        encode_png(image.astype(np.uint16))


@pytest.mark.parametrize("writer", ["ours", "opencv-filter-up-small-chunks"])
@pytest.mark.parametrize("shape", SHAPES[1:])
def test_pngs_in_our_layout_are_read_by_hand(writer, shape):
    """The DAAD's pattern crops take the fast path, whoever wrote them in its layout (8-bit,
    every row filtered "Up"), with the general decoder's pixels; another layout is left to the
    general decoder."""
    image = _image(shape)
    png = WRITERS[writer](image)
    got = decode_own_png(png)
    assert got is not None and got.dtype == np.uint8
    np.testing.assert_array_equal(got, decode_image(png))
    np.testing.assert_array_equal(got, image)
    assert decode_own_png(WRITERS["pillow"](image)) is None


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_pngs_any_encoder_wrote_decode_to_the_same_pixels(writer, shape):
    image = _image(shape)
    png = WRITERS[writer](image)
    for mode in (None, "grey", "rgb"):
        got = decode_png(png, mode)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, decode_image(encode_png(image), mode))
    np.testing.assert_array_equal(decode_png(png), image)


def test_bilevel_and_palette_pngs_decode_to_the_same_pixels():
    """What a PNG optimiser makes of a mask (1 bit a pixel) or of a few-colour crop (a
    palette) reads back as the same grey or RGB pixels."""
    mask = np.where(_image((31, 40)) > 128, 255, 0).astype(np.uint8)
    bilevel = io.BytesIO()
    Image.fromarray(mask).convert("1").save(bilevel, "PNG", optimize=True)
    np.testing.assert_array_equal(decode_png(bilevel.getvalue(), "grey"), mask)
    np.testing.assert_array_equal(
        decode_png(_opencv(mask, cv2.IMWRITE_PNG_BILEVEL, 1), "grey"), mask
    )
    few = np.stack([mask, mask // 2, 255 - mask], axis=2)
    palette = io.BytesIO()
    Image.fromarray(few).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(
        palette, "PNG", optimize=True
    )
    np.testing.assert_array_equal(decode_png(palette.getvalue(), "rgb"), few)


@pytest.mark.parametrize("writer", ["ours", "pillow", "opencv"])
def test_every_truncation_is_a_decode_error(writer):
    """A PNG cut short anywhere, the 16-28 bytes that hold only the signature and part of the
    header included, is a DecodeError, never struct's or zlib's error."""
    png = WRITERS[writer](_image((12, 10, 3)))
    for size in range(len(png)):
        with pytest.raises(DecodeError):
            decode_png(png[:size])


def _chunk_offsets(png: bytes) -> dict[bytes, int]:
    """Chunk type -> the offset of its first chunk's length field."""
    offsets: dict[bytes, int] = {}
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        offsets.setdefault(png[at + 4 : at + 8], at)
        at += length + 12
    return offsets


@pytest.mark.parametrize("writer", ["ours", "pillow", "opencv"])
@pytest.mark.parametrize("where", ["IDAT data", "IDAT crc", "IHDR data", "IHDR crc"])
def test_a_corrupt_chunk_is_a_decode_error(writer, where):
    """One byte changed in a chunk or its CRC: a DecodeError, also where the deflate stream
    still inflates and a general decoder, which skips the image data's CRC, would read it."""
    png = bytearray(WRITERS[writer](_image((12, 10, 3))))
    kind, part = where.split()
    at = _chunk_offsets(bytes(png))[kind.encode()]
    (length,) = struct.unpack(">I", png[at : at + 4])
    png[at + 8 + length // 2 if part == "data" else at + 8 + length + 1] ^= 0x10
    with pytest.raises(DecodeError, match="damaged PNG"):
        decode_png(bytes(png))


def test_a_png_with_its_pixels_zeroed_is_a_decode_error():
    png = bytearray(encode_png(np.full((40, 40, 3), 90, np.uint8)))
    png[45:-12] = bytes(len(png) - 57)
    with pytest.raises(DecodeError, match="damaged PNG"):
        decode_png(bytes(png))


def test_not_a_png_is_a_decode_error():
    for data in (b"", b"\x89PNG", b"GIF89a" + bytes(40), _opencv(_image((9, 9)))[8:]):
        with pytest.raises(DecodeError):
            decode_png(data)


def test_png_deflate_keeps_pixels_and_stays_near_zlib_level_1_on_real_images():
    """ISA-L's deflate changes the file bytes, never the pixels, and on a grey
    texture and a mask its files (level 0, its deterministic one: fixed Huffman codes) are
    within 60% of zlib's level 1."""
    import zlib

    grey = decode_image(TILE.read_bytes())
    mask = np.where(grey > grey.mean() + 2 * grey.std(), 255, 0).astype(np.uint8)
    for image in (grey, mask, decode_image(TILE.read_bytes(), "rgb")):
        png = encode_png(image)
        assert np.array_equal(decode_image(png, "rgb" if image.ndim == 3 else "grey"), image)
        ok, reference = cv2.imencode(".png", image if image.ndim == 2 else image[..., ::-1])
        assert ok and np.array_equal(decode_image(png), decode_image(reference.tobytes()))
    for image in (grey, mask):
        filtered = np.diff(image.astype(np.int16), axis=0, prepend=0).astype(np.uint8)
        rows = np.hstack([np.full((image.shape[0], 1), 2, np.uint8), filtered])
        default_size = len(zlib.compress(rows.tobytes(), 1)) + 57  # PNG signature and chunks
        assert len(encode_png(image)) < 1.6 * default_size
