from pathlib import Path

import numpy as np
import pytest

from cai_ray.core.foreground import (
    RembgForeground,
    full_foreground,
    grabcut_foreground,
    make_foreground_extractor,
    otsu_foreground,
)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.fixture(scope="module")
def tile_on_background(tile_targets):
    """A real tile (the object) on a plain dark background, and where the tile is."""
    canvas = np.full((256, 256), 12, np.uint8)
    tile = tile_targets[0][::2, ::2]
    canvas[60:188, 40:168] = 160 + tile // 4  # a bright textured object
    truth = np.zeros((256, 256), bool)
    truth[60:188, 40:168] = True
    return canvas, truth


def test_full_foreground_is_everything(tile_targets):
    assert full_foreground(tile_targets[0]).all()


def test_otsu_finds_the_object(tile_on_background):
    image, truth = tile_on_background
    assert _iou(otsu_foreground(image), truth) > 0.95


def test_grabcut_finds_the_object(tile_on_background):
    image, truth = tile_on_background
    assert _iou(grabcut_foreground(image), truth) > 0.9


def _tiny_onnx_model(path: Path) -> Path:
    """A stand-in for U2-Net with its interface: (1, 3, 320, 320) in, (1, 1, 320, 320) out.
    It outputs the mean of the normalised channels, so bright regions become foreground."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input.1", "axes"], ["matte"], keepdims=1)],
        "tiny_salient",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("matte", TensorProto.FLOAT, [1, 1, 320, 320])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_rembg_runs_a_local_model_file(tmp_path, tile_on_background):
    image, truth = tile_on_background
    extractor = make_foreground_extractor(
        "rembg", model_path=str(_tiny_onnx_model(tmp_path / "m.onnx"))
    )
    assert isinstance(extractor, RembgForeground)
    mask = extractor(image)
    assert mask.shape == image.shape and mask.dtype == bool
    assert _iou(mask, truth) > 0.8


def test_rembg_without_a_model_names_what_is_missing(tmp_path):
    missing = tmp_path / "u2net.onnx"
    with pytest.raises(FileNotFoundError, match="u2net.onnx"):
        RembgForeground(missing)
    with pytest.raises(ValueError, match="model_path"):
        make_foreground_extractor("rembg")
