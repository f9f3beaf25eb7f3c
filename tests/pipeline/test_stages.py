"""The stages are plain callables: run them on dicts of numpy arrays, without Ray."""

import hashlib
import json

import numpy as np

from cai_ray.io.layout import committed_shards
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.stages import ForegroundStage, InjectionStage
from cai_ray.pipeline.synth import plan_job


def test_stages_chain_without_ray(make_config, tmp_path):
    config = make_config()
    plan = plan_job(config)
    assert [t["index"] for t in plan.targets] == list(range(13))
    assert plan.mode == "grey"
    broken = [t for t in plan.targets if t["key"] == "broken.jpg"]
    readable = [t for t in plan.targets if t["key"] != "broken.jpg"][:2]
    batch = {"shard": np.array([0]), "targets": np.array([json.dumps(readable + broken)])}

    foreground = ForegroundStage(
        image_size=256, mode="grey", method="full", model_path=None, min_fraction=0.01
    )
    prepared = foreground(batch)
    assert [s["path"] for s in json.loads(prepared["skipped"][0])] == [broken[0]["path"]]

    injection = InjectionStage(
        synthesizer=config.synthesizer,
        daad=config.daad.model_copy(update={"cache_mb": 64}),
        cai=config.cai,
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
