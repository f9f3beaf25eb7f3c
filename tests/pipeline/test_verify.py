"""``cai-ray verify`` accounts for every input of a shard's range from what the shard holds (its
samples' and failed samples' keys, its skips), not from the counts its own entry states: a shard
that lost an input, its entry's counts and checksum lowered to match, is caught (in-process
executor: the same stages Ray runs)."""

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cai_ray.config import SynthConfig
from cai_ray.io.tar import build_tar, iter_tar
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.conftest import DEMO


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for image in sorted((DEMO / "normal").glob("*.jpg"))[:5]:
        shutil.copy(image, folder / image.name)
    # input 0, skipped as unreadable: verify places a skip in its shard by its path
    (folder / "broken.jpg").write_bytes((folder / image.name).read_bytes()[:500])
    return folder


def _run(inputs: Path, out: Path, **geometry) -> Path:
    config = SynthConfig.model_validate(
        {
            "seed": 2,
            "image_size": 128,
            "inputs": {"paths": [str(inputs)], "geometry": geometry or {"mode": "resize"}},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 2},
            "output": {"path": str(out), "targets_per_shard": 3, "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    run_synth(config, show_progress=False)
    assert verify_output(str(out)).ok, verify_output(str(out)).problems
    return out


def _drop(out: Path, shard: int, target: int, view: int | None = None, *, per_target: int = 2):
    """Remove input ``target`` (or one ``view`` of it) from a shard: its samples from the tar,
    its failures from the entry, and every count and checksum lowered to match, so the entry
    agrees with its tar and the manifest with the entries."""

    def gone(key: str) -> bool:
        _, index, sample = key.rsplit("-", 2)
        return int(index) == target and (view is None or int(sample) // per_target == view)

    tar, entry_file = out / f"shard-{shard:06d}.tar", out / f"shard-{shard:06d}.json"
    entry = json.loads(entry_file.read_text())
    kept, dropped = [], Counter()
    for key, files in iter_tar(tar.read_bytes()):
        if gone(key):
            meta = json.loads(files["json"])
            for name in ("method", "scale", "anomaly_class"):
                if name in meta:
                    dropped[(name, meta[name])] += 1
            dropped[("label", str(meta["label"]))] += 1
        else:
            kept.append((key, files))
    failed = [f for f in entry["failed_samples"] if not gone(f["key"])]
    views = len(
        {
            (k.rsplit("-", 2)[1], int(k.rsplit("-", 2)[2]) // per_target)
            for k in ([key for key, _ in kept] + [f["key"] for f in failed])
        }
    )
    data = build_tar(kept)
    tar.write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    for (name, value), number in dropped.items():
        for counts in (entry["counts"][name], manifest["counts"][name]):
            counts[value] -= number
            if not counts[value]:
                del counts[value]
    manifest["samples"] -= entry["samples"] - len(kept)
    entry.update(
        samples=len(kept),
        views=views,
        failed_samples=failed,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    if view is None:
        entry["targets"] -= 1
    entry_file.write_text(json.dumps(entry))
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_verify_finds_an_input_missing_from_its_shard(inputs, tmp_path):
    out = _run(inputs, tmp_path / "out")
    assert (
        "unreadable"
        in json.loads((out / "shard-000000.json").read_text())["skipped_inputs"][0]["reason"]
    )
    _drop(out, shard=0, target=1)
    problems = verify_output(str(out)).problems
    assert any(
        p.startswith("shard-000000.tar: input 1 (")
        and "is neither kept nor skipped (in its range [0, 3)," in p
        for p in problems
    ), problems
    assert any(
        p == "shard-000000.tar: its entry accounts for 2 inputs, its range [0, 3) holds 3"
        for p in problems
    ), problems
    assert not any("shard-000001" in p for p in problems)


def test_verify_finds_a_tile_missing_from_its_image(inputs, tmp_path):
    """Tiles: each image is several targets; one of them dropped with the entry's views
    lowered still leaves every input with samples, but not every view of it."""
    out = _run(inputs, tmp_path / "out", mode="tile")
    entry = json.loads((out / "shard-000001.json").read_text())
    assert entry["views"] > 2  # the bundled tiles (364x481) make several 128 px tiles each
    _drop(out, shard=1, target=5, view=1)
    problems = verify_output(str(out)).problems
    assert any(
        p.startswith("shard-000001.tar: input 5 (") and "views [1] of its" in p for p in problems
    ), problems
    assert not any("shard-000000" in p for p in problems)
