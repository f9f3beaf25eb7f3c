"""The stages are plain callables: run them on dicts of numpy arrays, without Ray."""

import hashlib
import json

import cv2
import numpy as np
import pytest

from cai_ray.core.synthesis import Failure, Patched
from cai_ray.core.views import Geometry
from cai_ray.io import storage
from cai_ray.io.inputs import ListReader, ShardList, write_list
from cai_ray.io.layout import committed_shards
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.stages import ForegroundStage, InjectionStage, _outside_padding
from cai_ray.pipeline.synth import plan_job
from tests.conftest import DEMO


def test_stages_chain_without_ray(make_config, tmp_path):
    config = make_config()
    plan = plan_job(config, str(tmp_path))
    targets = ListReader(plan.inputs).targets(0, plan.count, plan.inputs_root)
    assert [t["index"] for t in targets] == list(range(13))
    assert plan.mode == "grey"
    broken = [t for t in targets if t["key"] == "broken.jpg"]
    readable = [t for t in targets if t["key"] != "broken.jpg"][:2]
    shard_list = str(tmp_path / "shard.parquet")
    write_list([t["path"] for t in readable + broken], shard_list)
    shards = ShardList(shard_list, plan.inputs_root, per_shard=3, count=3)
    batch = {"shard": np.array([0])}

    foreground = ForegroundStage(
        image_size=256,
        mode="grey",
        method="full",
        model_path=None,
        min_fraction=0.01,
        shards=shards,
    )
    prepared = foreground(batch)
    assert [s["path"] for s in json.loads(prepared["skipped"][0])] == [broken[0]["path"]]

    injection = InjectionStage(
        synthesizer=config.method_settings,
        daad=config.daad.model_copy(update={"cache_mb": 64}),
        image_size=256,
        mode="grey",
        seed=7,
        key_prefix="s",
        image_format="png",
        include_normal=True,
        out=str(tmp_path / "o"),
    )
    committed = injection(prepared)
    entry = json.loads(committed["entry"][0])
    assert entry["targets"] == 3 and entry["samples"] + len(entry["failed_samples"]) == 2 * 7
    tar = (tmp_path / "o" / "shard-000000.tar").read_bytes()
    assert hashlib.sha256(tar).hexdigest() == entry["sha256"]
    samples = list(iter_tar(tar))
    assert len(samples) == entry["samples"]
    normal = [json.loads(f["json"]) for _, f in samples if json.loads(f["json"])["label"] == 0]
    assert len(normal) == 2 and entry["counts"]["label"]["0"] == 2
    assert committed_shards(str(tmp_path / "o"))[0] == entry


@pytest.fixture(scope="module")
def belt(tmp_path_factory, tile_targets) -> tuple[str, np.ndarray]:
    """A 100x300 conveyor belt (grey, textured) with a bright real tile on it covering 8.3% of
    the image, as a file, and where the object is."""
    rng = np.random.default_rng(0)
    belt = rng.integers(80, 110, (100, 300)).astype(np.uint8)
    tile = cv2.resize(tile_targets[0], (50, 50), interpolation=cv2.INTER_AREA)
    belt[25:75, 125:175] = 170 + tile // 3
    truth = np.zeros(belt.shape, bool)
    truth[25:75, 125:175] = True
    path = tmp_path_factory.mktemp("belt") / "belt.png"
    cv2.imwrite(str(path), belt)
    return str(path), truth


@pytest.mark.parametrize("method", ["otsu", "grabcut"])
@pytest.mark.parametrize(
    "geometry", [Geometry(mode="letterbox"), Geometry(mode="crop", position="centre")]
)
def test_the_foreground_of_a_padded_target_is_found_in_the_image_not_the_padding(
    belt, method, geometry
):
    """Fails on a4045c6: the extractors saw the black padding, and Otsu marked the whole
    letterboxed belt as object (100% of the image region instead of 8%)."""
    path, truth = belt
    stage = ForegroundStage(
        image_size=256,
        mode="grey",
        method=method,
        model_path=None,
        min_fraction=0.01,
        geometry=geometry,
    )
    shard = stage.process_shard([{"index": 0, "key": "belt.png", "path": path}])
    [target] = json.loads(shard["targets"])
    foreground = np.unpackbits(shard["foregrounds"], count=256 * 256).reshape(256, 256) > 0
    y0, x0, y1, x1 = target["view"]["placed"]
    assert not foreground[:y0].any() and not foreground[y1:].any()  # padding: never
    shown = foreground[y0:y1, x0:x1]
    by0, bx0, by1, bx1 = target["view"]["box"]
    box_truth = truth[by0:by1, bx0:bx1]
    if shown.shape != box_truth.shape:  # letterbox: the image scaled into the placed box
        box_truth = cv2.resize(box_truth.astype(np.uint8), shown.shape[::-1]) > 0
    iou = (shown & box_truth).sum() / (shown | box_truth).sum()
    assert shown.mean() < 0.2 and iou > 0.8, (shown.mean(), iou)


def test_a_label_mostly_on_the_padding_is_given_up_when_too_small_to_keep():
    """Fails on a4045c6: a patch over the letterbox bar kept a 4-pixel label on the image,
    below the 10 pixels any sample's label must have."""
    target = np.zeros((32, 32), np.uint8)
    target[8:24] = 100  # a letterboxed image: rows 8-23 are the image, the rest padding
    image, mask = target.copy(), np.zeros((32, 32), np.uint8)
    image[2:10, 4:6], mask[2:10, 4:6] = 200, 1  # 16 labelled pixels, 4 of them on the image
    patched = Patched(image, mask, "cutpaste", attempts=1)
    result = _outside_padding(patched, target, [8, 0, 24, 32], label_floor=10)
    assert isinstance(result, Failure) and "below 10 pixels" in result.reason
    kept = _outside_padding(patched, target, [8, 0, 24, 32], label_floor=4)
    assert isinstance(kept, Patched) and np.count_nonzero(kept.mask) == 4
    assert (kept.image[:8] == 0).all() and kept.image[8, 4] == 200


def test_an_input_the_store_cannot_serve_fails_the_shard_not_skipped(s3_server, s3_bucket):
    """An input missing from the store is skipped (the data says so); a store that gave up
    after its retries is not the input's fault: the stage raises, naming the endpoint, so the
    job stops and a rerun makes the shard, rather than the input's samples lost as
    'unreadable'."""
    tile = sorted((DEMO / "normal").glob("*.jpg"))[0]
    storage.write_bytes_atomic(f"{s3_bucket}/in/a.jpg", tile.read_bytes())
    targets = [
        {"index": 0, "key": "a.jpg", "path": f"{s3_bucket}/in/a.jpg"},
        {"index": 1, "key": "gone.jpg", "path": f"{s3_bucket}/in/gone.jpg"},
    ]
    settings = {"image_size": 64, "mode": "grey", "method": "full", "model_path": None}

    served = ForegroundStage(
        **settings, min_fraction=0.01, storage_options={"endpoint_url": s3_server.endpoint}
    ).process_shard(targets)
    assert [t["key"] for t in json.loads(served["targets"])] == ["a.jpg"]
    [skip] = json.loads(served["skipped"])
    assert skip["path"].endswith("gone.jpg") and "not found" in skip["reason"]

    closed = "http://127.0.0.1:9"  # nothing listens there (tests/conftest.py)
    down = ForegroundStage(
        **settings,
        min_fraction=0.01,
        storage_options={"endpoint_url": closed, "request_attempts": 2},
    )
    with pytest.raises(storage.StorageError, match=f"a.jpg at {closed}"):
        down.process_shard(targets)
