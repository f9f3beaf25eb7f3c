"""The detector scored at the geometry its data was cut by: real magnetic-tile test images of
varied, non-square sizes cut into tiles or letterboxed, the maps stitched back, the metrics
taken on the ground truth at the images' own size."""

import json

import cv2
import numpy as np
import pytest
import torch

from cai_ray.cli import main
from cai_ray.core.views import Geometry
from cai_ray.detector.evaluate import evaluate_network, network_from_checkpoint
from cai_ray.detector.metrics import evaluate
from cai_ray.detector.model import DiscriminativeUNet
from cai_ray.detector.target_specs import load_target_spec
from cai_ray.detector.target_splits import TargetSplit, load_target_split
from cai_ray.detector.target_splits import TestImage as Item  # (a name pytest would collect)
from cai_ray.detector.targets import load_test_set
from cai_ray.io.codecs import encode_image, load_views, resize
from tests.conftest import DEMO, REPO


@pytest.fixture(scope="module")
def split():
    return load_target_split(load_target_spec(REPO / "configs/targets/demo.yaml"), DEMO)


def test_tiles_give_back_every_test_image_and_mask_at_full_size(split):
    test = load_test_set(split, 64, "grey", Geometry(mode="tile", overlap=8))
    shapes = {mask.shape for mask in test.masks}
    assert len(shapes) > 3 and all(h != w for h, w in shapes)  # real, varied, non-square
    assert len(test.targets) == sum(len(v) for v in test.views) > 2 * len(test.masks)
    images = test.stitch(test.targets)
    for image, mask, views, item in zip(images, test.masks, test.views, test.items, strict=True):
        assert image.shape == mask.shape and views[0].image_shape == mask.shape
        assert (item.mask is None) == (not mask.any())
    stitched_masks = test.stitch(test.target_masks.astype(np.float32))
    assert all(np.array_equal(s > 0.5, m) for s, m in zip(stitched_masks, test.masks, strict=True))
    # a detector that marks exactly the defects scores perfectly at full size
    perfect = evaluate(stitched_masks, test.masks)
    assert perfect["pixel_ap"] == 1.0 and perfect["pro"] == pytest.approx(1.0)


def test_crops_are_scored_as_tiles_and_letterbox_as_one_padded_target(split):
    crop = load_test_set(split, 64, "grey", Geometry(mode="crop", crops=2, overlap=8))
    tile = load_test_set(split, 64, "grey", Geometry(mode="tile", overlap=8))
    assert np.array_equal(crop.targets, tile.targets)
    boxed = load_test_set(split, 64, "grey", Geometry(mode="letterbox"))
    assert len(boxed.targets) == len(boxed.masks) == len(boxed.items)
    for mask, views in zip(boxed.masks, boxed.views, strict=True):
        (view,) = views
        y0, x0, y1, x1 = view.placed
        assert max(y1 - y0, x1 - x0) == 64
        assert abs((x1 - x0) / (y1 - y0) - mask.shape[1] / mask.shape[0]) < 0.1
    maps = boxed.stitch(boxed.target_masks.astype(np.float32))
    assert evaluate(maps, boxed.masks)["pixel_auroc"] > 0.95  # through 64 px and back


def test_a_network_is_scored_on_stitched_maps(split):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1))
    test = load_test_set(split, 64, "grey", Geometry(mode="tile"))
    metrics, maps = evaluate_network(network, test)
    assert [m.shape for m in maps] == [m.shape for m in test.masks]
    assert metrics == evaluate(maps, test.masks)
    assert set(metrics) == {"pixel_auroc", "pixel_ap", "pro", "image_auroc"}


@pytest.mark.parametrize("mode", ["resize", "letterbox"])
def test_a_large_jpeg_test_image_is_decoded_as_synthesis_decodes_it(tmp_path, mode):
    """Synthesis decodes a JPEG it shrinks by 2x or more at reduced scale (load_views); the
    test set goes through the same path, so a file gives the same target in both."""
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (600, 900), np.uint8), (0, 0), 1.5)
    (tmp_path / "photo.jpg").write_bytes(encode_image(photo, "jpg"))
    mask = np.zeros(photo.shape, np.uint8)
    mask[200:320, 300:480] = 255
    (tmp_path / "photo_mask.png").write_bytes(encode_image(mask, "png"))
    item = Item(tmp_path / "photo.jpg", tmp_path / "photo_mask.png", "crack")
    test = load_test_set(TargetSplit("photo", [], [item]), 64, "grey", Geometry(mode=mode))
    ((_, target, _),) = load_views(str(item.path), 64, "grey", Geometry(mode=mode))
    assert np.array_equal(test.targets[0], target)
    assert test.masks[0].shape == ((64, 64) if mode == "resize" else photo.shape)


def test_tiles_are_cut_at_the_training_data_size_and_shown_at_the_network_size(split):
    """Data cut into 64 px tiles, a detector taking 32: each test tile is 64 px of the image at
    its own resolution, resized to 32 as training resized its samples (the content at the
    scale the detector learnt), and the maps go back through 64 onto the image."""
    geometry = Geometry(mode="tile", overlap=8)
    test = load_test_set(split, 32, "grey", geometry, data_size=64)
    native = load_test_set(split, 64, "grey", geometry)
    assert test.view_size == 64 and test.targets.shape[1:] == (32, 32)
    assert test.views == native.views
    assert np.array_equal(test.targets, np.stack([resize(t, 32) for t in native.targets]))
    stitched = test.stitch(test.target_masks.astype(np.float32))
    assert [m.shape for m in stitched] == [m.shape for m in test.masks]
    assert evaluate(stitched, test.masks)["pixel_auroc"] > 0.95  # through 32 px and back
    # whole-image modes show the whole image at the network's size, whatever the data's
    boxed = load_test_set(split, 32, "grey", Geometry(mode="letterbox"), data_size=64)
    assert boxed.view_size == 32 and boxed.targets.shape[1:] == (32, 32)


def test_detector_eval_cuts_test_tiles_at_the_training_data_size(split, tmp_path, capsys):
    """'detector eval' reads the training data's geometry and image_size from its job.json:
    a detector at 32 trained on 64 px tiles is scored on 64 px test tiles resized to 32."""
    data = tmp_path / "synth"
    data.mkdir()
    cut = {"image_size": 64, "inputs": {"geometry": {"mode": "tile", "overlap": 8}}}
    (data / "job.json").write_text(json.dumps({"config": cut}))
    torch.manual_seed(0)
    config = {"data": [str(data)], "image_size": 32, "color": "grey", "base_width": 4}
    config["levels"] = 3
    state = {"config": config, "model": DiscriminativeUNet(1, 2, 4, 3).state_dict(), "epoch": 1}
    torch.save(state, tmp_path / "last.pt")
    args = ["detector", "eval", "--checkpoint", str(tmp_path / "last.pt")]
    assert (
        main([*args, "--test", str(REPO / "configs/targets/demo.yaml"), "--data-root", str(DEMO)])
        == 0
    )
    printed = json.loads(capsys.readouterr().out.split("\n  skipped")[0])
    network, tiles = network_from_checkpoint(state), Geometry(mode="tile", overlap=8)
    at_half_scale, _ = evaluate_network(network, load_test_set(split, 32, "grey", tiles))
    assert printed["pixel_ap"] != pytest.approx(at_half_scale["pixel_ap"], abs=1e-6)
    assert printed["geometry"] == "tile" and printed["view_size"] == 64
    metrics, _ = evaluate_network(network, load_test_set(split, 32, "grey", tiles, data_size=64))
    for metric, value in metrics.items():
        assert printed[metric] == pytest.approx(value, abs=1e-6)
