import io

import cv2
import numpy as np
import pytest
from PIL import Image

from cai_ray.io.codecs import (
    DecodeError,
    decode_image,
    decode_mask,
    decode_mat_mask,
    encode_image,
    is_grey_content,
)
from cai_ray.io.png import encode_png
from tests.conftest import DEMO

TILE = next(iter(sorted((DEMO / "normal").glob("*.jpg"))))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_truncated_and_garbage_files_raise_decode_errors():
    data = TILE.read_bytes()
    with pytest.raises(DecodeError, match="unreadable"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(DecodeError):
        decode_image(b"not an image")
    with pytest.raises(DecodeError, match="empty"):
        decode_image(b"")


def test_modes_decode_to_plain_uint8():
    grey = decode_image(TILE.read_bytes())
    assert grey.dtype == np.uint8 and is_grey_content(grey)
    rgba = Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 7)], axis=2), "RGBA")
    assert decode_image(_png(rgba)).shape == grey.shape + (3,)
    assert decode_image(_png(rgba), "grey").shape == grey.shape
    wide = Image.fromarray(grey.astype(np.uint16) * 257)
    assert np.array_equal(decode_image(_png(wide)), grey)
    palette = Image.fromarray(grey).convert("P")
    assert decode_image(_png(palette), "grey").shape == grey.shape
    assert decode_image(_png(Image.fromarray(grey).convert("LA"))).shape == grey.shape


def test_masks_threshold_any_channel_at_128():
    values = np.array([[0, 127, 128, 255]], np.uint8)
    assert decode_mask(_png(Image.fromarray(values))).tolist() == [[False, False, True, True]]
    red = np.zeros((1, 2, 3), np.uint8)
    red[0, 1, 0] = 128  # a VOC-style palette colour
    palette = Image.fromarray(red).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode_mask(_png(palette)).tolist() == [[False, True]]
    sixteen = Image.fromarray(values.astype(np.uint16) * 257)
    assert decode_mask(_png(sixteen)).tolist() == [[False, False, True, True]]


def test_crackforest_mat_masks(shared_data):
    data = (shared_data / "crackforest" / "groundTruth" / "001.mat").read_bytes()
    mask = decode_mat_mask(data, field_path="groundTruth.Segmentation", foreground_value=2)
    assert mask.shape == (320, 480) and 0 < mask.sum() < mask.size
    with pytest.raises(DecodeError, match="no field"):
        decode_mat_mask(data, field_path="groundTruth.Missing", foreground_value=2)
    with pytest.raises(DecodeError):
        decode_mat_mask(b"junk", field_path="x", foreground_value=1)


def test_jpeg_encoding_is_close():
    grey = decode_image(TILE.read_bytes())
    assert np.abs(decode_image(encode_image(grey, "jpg")).astype(int) - grey).mean() < 3


def test_a_large_jpeg_about_to_be_shrunk_decodes_at_reduced_scale(tmp_path):
    """A 2400x1800 photo resized to 256 decodes at reduced scale, as far as twice the target
    size remains; a PNG has no reduced decode and comes whole; the target is close to the one
    decoding all of it and shrinking gives."""
    from cai_ray.core.views import Geometry
    from cai_ray.io.codecs import load_views

    tile = cv2.imread(str(TILE), cv2.IMREAD_GRAYSCALE)
    photo = cv2.resize(tile, (2400, 1800), interpolation=cv2.INTER_CUBIC)
    data = encode_image(photo, "jpg")
    assert decode_image(data).shape == (1800, 2400)
    reduced = decode_image(data, at_least=(512, 512))
    assert reduced.shape == (900, 1200)  # 1/4 would give 450 rows, under 512
    assert decode_image(data, at_least=(200, 200)).shape == (225, 300)  # 1/8
    assert decode_image(encode_png(photo), at_least=(200, 200)).shape == (1800, 2400)

    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    ((view, target, region),) = load_views(str(path), 256, "grey", Geometry())
    assert view.box == (0, 0, 1800, 2400) and view.image_shape == (1800, 2400)
    assert target.shape == (256, 256) and region.all()
    full = cv2.resize(decode_image(data), (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(target.astype(int) - full).mean() < 2.0
    ((view, target, _),) = load_views(str(path), 256, "grey", Geometry(mode="letterbox"))
    assert view.placed == (32, 0, 224, 256) and target.shape == (256, 256)


def test_max_pixels_is_checked_before_decoding(tmp_path):
    from cai_ray.core.views import Geometry
    from cai_ray.io.codecs import load_views

    path = tmp_path / "tile.jpg"
    path.write_bytes(TILE.read_bytes())
    height, width = decode_image(TILE.read_bytes()).shape
    with pytest.raises(DecodeError, match=f"more than max_pixels \\({height * width - 1}\\)"):
        load_views(str(path), 64, "grey", Geometry(mode="tile"), max_pixels=height * width - 1)
    assert len(load_views(str(path), 64, "grey", Geometry(mode="tile"), max_pixels=height * width))
