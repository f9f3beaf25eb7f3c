"""Non-square inputs through the whole job: a 1130x460 camera frame and a tile-sized image, both
made of real magnetic-tile images, under each ``inputs.geometry`` (in-process executor: the same
stages Ray runs; one test runs them on Ray)."""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter

from cai_ray.cli import main
from cai_ray.config import SynthConfig
from cai_ray.core.views import Geometry, plan_views
from cai_ray.io.codecs import decode_image
from cai_ray.io.samples import decode_sample
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from cai_ray.synthesizers.registry import SynthesizerConfig
from tests.conftest import DEMO

SIZE = 128


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """``frame.png``: a 1130x460 frame of three real tiles side by side (a ball-screw camera's
    shape); ``tile.jpg``: one bundled tile as it is (364x481)."""
    folder = tmp_path_factory.mktemp("frames")
    tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(DEMO.glob("normal/*.jpg"))]
    scaled = [cv2.resize(t, (round(t.shape[1] * 460 / t.shape[0]), 460)) for t in tiles[:4]]
    frame = np.concatenate(scaled, axis=1)[:, :1130]
    assert frame.shape == (460, 1130)
    cv2.imwrite(str(folder / "frame.png"), frame)
    (folder / "tile.jpg").write_bytes(sorted(DEMO.glob("normal/*.jpg"))[2].read_bytes())
    return folder


def _config(frames: Path, demo_daad: str, out: Path, geometry: dict, **inputs) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "name": "geometry",
            "seed": 3,
            "image_size": SIZE,
            "inputs": {"paths": [str(frames)], "geometry": geometry, **inputs},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 1, "medium": 1, "small": 1}},
            "output": {
                "path": str(out),
                "targets_per_shard": 1,
                "include_normal": True,
                "preview_samples": 2,
            },
            "resources": {"executor": "local"},
        }
    )


def _samples(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    found = {}
    for shard in sorted(out.glob("shard-*.tar")):
        for key, files in iter_tar(shard.read_bytes()):
            image, mask = decode_sample(files, "grey")
            found[key] = (image, mask, json.loads(files["json"]))
    return found


def test_letterbox_keeps_the_aspect_ratio_and_injects_nothing_into_the_padding(
    frames, demo_daad, tmp_path
):
    config = _config(frames, demo_daad, tmp_path / "out", {"mode": "letterbox"})
    manifest = run_synth(config, show_progress=False)
    assert manifest["views"] == 2 and verify_output(config.output.path).ok
    samples = _samples(tmp_path / "out")
    frame = [s for s in samples.values() if s[2]["target"] == "frame.png"]
    assert len(frame) == 4  # 3 pseudo-anomalies and the normal
    for image, mask, meta in frame:
        y0, x0, y1, x1 = meta["view"]["placed"]
        assert meta["view"]["image_size"] == [460, 1130]
        assert meta["view"]["box"] == [0, 0, 460, 1130]
        assert (x1 - x0, y1 - y0) == (128, 52)  # 1130:460, not squashed to 1:1
        padding = np.ones((SIZE, SIZE), bool)
        padding[y0:y1, x0:x1] = False
        assert not image[padding].any() and not mask[padding].any()
    normal = next(s for s in frame if s[2]["label"] == 0)[0]
    frame_pixels = cv2.imread(str(frames / "frame.png"), cv2.IMREAD_GRAYSCALE)
    shown = cv2.resize(frame_pixels, (128, 52), interpolation=cv2.INTER_AREA)
    assert np.array_equal(normal[38:90], shown)


def test_tiles_are_targets_with_their_own_keys_and_boxes(frames, demo_daad, tmp_path):
    geometry = {"mode": "tile", "overlap": 16}
    config = _config(frames, demo_daad, tmp_path / "out", geometry)
    manifest = run_synth(config, show_progress=False)
    report = verify_output(config.output.path)
    assert report.ok, report.problems
    frame_views = plan_views(460, 1130, SIZE, Geometry(mode="tile", overlap=16))
    tile_views = plan_views(481, 364, SIZE, Geometry(mode="tile", overlap=16))
    assert len(frame_views) == 4 * 10 and len(tile_views) == 5 * 4
    assert manifest["views"] == 60 and manifest["targets"] == 2
    assert manifest["samples"] + len(manifest["failed_samples"]) == 60 * 4
    samples = _samples(tmp_path / "out")
    original = cv2.imread(str(frames / "frame.png"), 0)
    boxes = set()
    for key, (image, _, meta) in samples.items():
        view = meta["view"]
        assert view["mode"] == "tile" and int(key.rsplit("-", 1)[1]) // 4 == view["index"]
        if meta["target"] != "frame.png":
            continue
        y0, x0, y1, x1 = view["box"]
        assert (y1 - y0, x1 - x0) == (SIZE, SIZE)  # the frame's own resolution
        boxes.add(tuple(view["box"]))
        if meta["label"] == 0:
            assert np.array_equal(image, original[y0:y1, x0:x1])
        else:  # outside the label's blend box the tile is the frame's pixels
            by0, bx0, by1, bx1 = meta["blend_box"]
            outside = np.ones((SIZE, SIZE), bool)
            outside[by0:by1, bx0:bx1] = False
            assert np.array_equal(image[outside], original[y0:y1, x0:x1][outside])
    assert boxes == {v.box for v in frame_views}
    assert decode_image((tmp_path / "out" / "preview.png").read_bytes()).shape[0] == 2 * SIZE


def test_random_crops_are_the_same_bytes_run_after_run(frames, demo_daad, tmp_path):
    geometry = {"mode": "crop", "crops": 3}
    first = _config(frames, demo_daad, tmp_path / "a", geometry)
    second = _config(frames, demo_daad, tmp_path / "b", geometry)
    manifest = run_synth(first, show_progress=False)
    run_synth(second, show_progress=False)
    assert manifest["views"] == 6 and verify_output(first.output.path).ok

    def digests(out: Path) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("shard-*"))]

    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    boxes = {
        tuple(meta["view"]["box"])
        for _, _, meta in _samples(tmp_path / "a").values()
        if meta["target"] == "frame.png"
    }
    assert len(boxes) == 3
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (SIZE, SIZE) and y1 <= 460 and x1 <= 1130


def test_an_image_over_max_pixels_is_a_counted_skip_that_names_the_limit(
    frames, demo_daad, tmp_path
):
    config = _config(frames, demo_daad, tmp_path / "out", {"mode": "tile"}, max_pixels=200_000)
    manifest = run_synth(config, show_progress=False)
    (skip,) = manifest["skipped_inputs"]
    assert skip["path"].endswith("frame.png") and "max_pixels (200000)" in skip["reason"]
    assert manifest["targets"] == 2 and verify_output(config.output.path).ok


def test_a_tile_overlap_as_large_as_the_tile_is_a_config_error(frames, demo_daad, tmp_path):
    with pytest.raises(ValueError, match="smaller than the tile"):
        _config(frames, demo_daad, tmp_path / "out", {"mode": "tile", "overlap": SIZE})


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_local")
def test_ray_makes_the_same_tiles_as_the_local_executor(frames, demo_daad, tmp_path):
    geometry = {"mode": "tile", "overlap": 16}
    local = _config(frames, demo_daad, tmp_path / "local", geometry)
    on_ray = local.model_copy(deep=True)
    on_ray.output.path = str(tmp_path / "ray")
    on_ray.resources.executor = "ray"
    on_ray.resources.cpus_per_injection_actor = 0.5
    run_synth(local, show_progress=False)
    run_synth(on_ray, show_progress=False)
    for shard in sorted((tmp_path / "local").glob("shard-*.tar")):
        assert shard.read_bytes() == (tmp_path / "ray" / shard.name).read_bytes()


def test_a_baseline_never_pastes_into_the_letterbox_padding(frames, demo_daad, tmp_path):
    """CutPaste keeps only its patch's centre on the foreground; near the image's edge the patch
    would reach over the black bars. The padding stays black and unlabelled all the same."""
    config = _config(frames, demo_daad, tmp_path / "out", {"mode": "letterbox"})
    config.synthesizer = TypeAdapter(SynthesizerConfig).validate_python(
        {"method": "cutpaste", "anomalies_per_target": 12}
    )
    manifest = run_synth(config, show_progress=False)
    assert verify_output(config.output.path).ok
    frame = [s for s in _samples(tmp_path / "out").values() if s[2]["target"] == "frame.png"]
    assert len(frame) + len(manifest["failed_samples"]) >= 12 + 1  # and the normal
    for image, mask, meta in frame:
        y0, x0, y1, x1 = meta["view"]["placed"]
        padding = np.ones((SIZE, SIZE), bool)
        padding[y0:y1, x0:x1] = False
        assert not image[padding].any() and not mask[padding].any()


def test_the_cli_says_how_many_targets_the_images_were_cut_into(
    frames, demo_daad, tmp_path, capsys
):
    config = _config(frames, demo_daad, tmp_path / "out", {"mode": "tile", "overlap": 16})
    path = tmp_path / "tiles.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["synth", "--config", str(path), "--no-progress"]) == 0
    assert "60 targets cut from 2 input images" in capsys.readouterr().out
