"""Odd and hostile image files, made here, through the one decode path.

| file | outcome |
|---|---|
| header declaring more than ``max_pixels`` (or Pillow's bomb limit) | DecodeError naming the size |
| text named .jpg, zero bytes, truncated | DecodeError, the same message every run |
| animated GIF, multi-page TIFF | DecodeError: "N frames ... not one image" |
| JPEG with EXIF orientation 6 | decoded upright (as a viewer shows it); header size swapped too |
| float32 TIFF in [0, 1] | scaled by 255, not cast |
| 16-bit PNG | scaled from its full range |
| mask stored as 0/1 | read as the defect, not as empty |
| target under 16 px a side | DecodeError from load_image |
"""

import io

import numpy as np
import pytest
from PIL import Image

from cai_ray.io.codecs import (
    DecodeError,
    decode_image,
    decode_mask,
    image_size,
    load_image,
)
from tests.conftest import DEMO

TILE = sorted((DEMO / "normal").glob("*.jpg"))[0]


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_a_decompression_bomb_header_is_a_decode_error():
    small = Image.new("L", (8, 8))
    data = bytearray(_saved(small, "PNG"))
    # patch the IHDR width and height to 20000 x 20000 (400 million pixels), then the CRC
    import struct
    import zlib

    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(DecodeError, match="too many pixels"):
        decode_image(bytes(data))
    tile = TILE.read_bytes()
    with pytest.raises(DecodeError, match=r"more than max_pixels \(1000\)"):
        decode_image(tile, max_pixels=1000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is text, not a JPEG", "not a format Pillow recognises"),
        (TILE.read_bytes()[:300], "unreadable image"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_unreadable_files_say_why_the_same_way_every_time(data, message):
    with pytest.raises(DecodeError, match=message) as first:
        decode_image(data)
    with pytest.raises(DecodeError) as second:
        decode_image(data)
    assert str(first.value) == str(second.value) and " at 0x" not in str(first.value)


def test_animations_and_multi_page_files_are_refused_with_their_frame_count():
    frames = [Image.new("L", (32, 32), value) for value in (0, 128, 255)]
    gif = _saved(frames[0], "GIF", save_all=True, append_images=frames[1:])
    tiff = _saved(frames[0], "TIFF", save_all=True, append_images=frames[1:2])
    with pytest.raises(DecodeError, match="3 frames"):
        decode_image(gif)
    with pytest.raises(DecodeError, match="2 frames"):
        decode_image(tiff)
    assert decode_image(_saved(frames[1], "GIF"), "grey").shape == (32, 32)  # a still GIF


def test_exif_orientation_is_applied_to_pixels_and_header_size():
    tile = np.array(Image.open(TILE).convert("L"))[:100, :160]
    tile[:10, :10] = 255  # a marker in the top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = _saved(Image.fromarray(tile), "JPEG", exif=exif, quality=95)
    shown = decode_image(data)
    assert shown.shape == (160, 100) and image_size(data) == (160, 100)
    assert shown[:10, -10:].mean() > 200  # the marker is now top-right, as a viewer shows it
    # a mask made on the upright photo (no EXIF of its own) pairs with it
    mask = np.zeros((160, 100), np.uint8)
    mask[20:40, 30:60] = 1
    assert decode_mask(_saved(Image.fromarray(mask), "PNG")).shape == shown.shape


def test_float_and_16_bit_images_are_scaled_not_cast():
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    decoded = decode_image(_saved(Image.fromarray(ramp, "F"), "TIFF"))
    assert decoded.min() == 0 and decoded.max() == 255
    deep = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    decoded = decode_image(_saved(Image.fromarray(deep), "PNG"))
    assert decoded.min() == 0 and decoded.max() == 255


def test_masks_stored_as_zero_and_one_are_read():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:15] = 1
    assert decode_mask(_saved(Image.fromarray(mask), "PNG")).sum() == 50
    assert decode_mask(_saved(Image.fromarray(mask * 255), "PNG")).sum() == 50


def test_a_target_too_small_to_use_is_a_decode_error(tmp_path):
    tiny = tmp_path / "one.png"
    tiny.write_bytes(_saved(Image.new("L", (1, 1)), "PNG"))
    with pytest.raises(DecodeError, match="1x1 is smaller than 16 pixels a side"):
        load_image(str(tiny), 256, "grey")
