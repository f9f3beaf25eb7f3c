"""The synthesis job end to end on a local Ray: real images in, shards read back by webdataset."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from cai_ray.cli import main
from cai_ray.io.codecs import decode_image
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline import synth
from cai_ray.pipeline.synth import OutputMismatchError, run_synth
from cai_ray.pipeline.verify import verify_output
from tests.s3server import local_s3

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("ray_local")]


def _digests(out: str) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(out).glob("shard-*"))
    }


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, demo_daad, normals_with_a_corrupt_file):
    """One job with two injection actors, shared by the tests that only read its output."""
    from cai_ray.config import SynthConfig

    out = tmp_path_factory.mktemp("run") / "out"
    config = SynthConfig.model_validate(
        {
            "name": "test",
            "seed": 7,
            "inputs": {"paths": [str(normals_with_a_corrupt_file)]},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 2, "medium": 2, "small": 2}},
            "output": {"path": str(out), "targets_per_shard": 3, "preview_samples": 3},
            "resources": {"injection_actors": 2, "cpus_per_injection_actor": 0.5},
        }
    )
    return config, run_synth(config, show_progress=False)


def test_job_writes_shards_that_webdataset_reads(reference_run, normals_with_a_corrupt_file):
    config, manifest = reference_run
    out = Path(config.output.path)
    assert manifest["complete"] and len(manifest["shards"]) == 5  # 13 inputs, 3 per shard
    assert [s["reason"][:10] for s in manifest["skipped_inputs"]] == ["unreadable"]
    assert manifest["samples"] + len(manifest["failed_samples"]) == 12 * 6
    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("l8"))
    assert len(samples) == manifest["samples"]
    assert len({s["__key__"] for s in samples}) == len(samples)
    for sample in samples:
        assert sample["png"].shape == sample["mask.png"].shape == (256, 256)
        assert set(np.unique(sample["mask.png"])) <= {0, 255}
        assert sample["json"]["label"] == 1 and sample["json"]["method"] == "cai-normal"
        # no host path in a shard: the target is named relative to the inputs' folder
        assert (normals_with_a_corrupt_file / sample["json"]["target"]).is_file()
        assert "/" not in sample["json"]["target"]
    assert decode_image((out / "preview.png").read_bytes()).shape == (3 * 256, 3 * 256, 3)
    assert verify_output(str(out)).ok


def test_same_samples_whatever_the_parallelism(reference_run, make_config, monkeypatch):
    config, _ = reference_run
    single = make_config(out="single", resources={"injection_actors": 1, "foreground_actors": 1})
    run_synth(single, show_progress=False)
    assert _digests(single.output.path) == _digests(config.output.path)
    # two blocks of several shards each, as a run of many shards is handed to Ray Data
    monkeypatch.setattr(synth, "shard_blocks", lambda shards, _: 2)
    blocks = make_config(out="blocks", resources={"injection_actors": 2})
    manifest = run_synth(blocks, show_progress=False)
    assert manifest["complete"] and len(manifest["shards"]) == 5
    assert _digests(blocks.output.path) == _digests(config.output.path)


def test_resume_after_a_crash_rebuilds_only_the_missing_shard(reference_run, make_config, tmp_path):
    config, _ = reference_run
    copy = make_config(out="resumed", resources={"injection_actors": 1})
    run_synth(copy, show_progress=False)
    out = Path(copy.output.path)
    (out / "shard-000002.json").unlink()  # a crash between the tar and its entry
    (out / "shard-000003.tar").unlink()  # a crash before the tar
    (out / "shard-000003.json").unlink()
    (out / "manifest.json").unlink()
    (out / ".shard-000003.tar.x1y2.tmp").write_bytes(b"half a shard")  # killed mid-write
    untouched = (out / "shard-000001.tar").stat().st_mtime_ns
    manifest = run_synth(copy, show_progress=False)
    assert manifest["complete"]
    assert (out / "shard-000001.tar").stat().st_mtime_ns == untouched
    assert _digests(str(out)) == _digests(config.output.path)
    assert not list(out.glob(".*.tmp"))
    assert verify_output(str(out)).ok


def test_a_different_job_cannot_resume_into_the_output(reference_run, make_config):
    config, _ = reference_run
    other = make_config(seed=8)
    other.output.path = config.output.path
    with pytest.raises(OutputMismatchError, match="different job"):
        run_synth(other, show_progress=False)


def test_verify_finds_damage(reference_run, tmp_path, capsys):
    import shutil

    config, _ = reference_run
    damaged = tmp_path / "damaged"
    shutil.copytree(config.output.path, damaged)
    tar = damaged / "shard-000001.tar"
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF
    tar.write_bytes(bytes(data))
    (damaged / "shard-000004.tar").unlink()
    problems = verify_output(str(damaged)).problems
    assert any("checksum" in p for p in problems)
    assert any("missing" in p for p in problems)
    assert main(["verify", str(damaged)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cli_synth_reports_and_verifies(make_config, tmp_path, capsys):
    config = make_config(out="cli")
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    assert main(["synth", "--config", str(path), "--no-progress"]) == 0
    assert main(["verify", config.output.path]) == 0
    assert "OK:" in capsys.readouterr().out


def test_the_job_reads_and_writes_s3(
    reference_run, s3_bucket, s3_server, normals_with_a_corrupt_file, demo_daad, capsys
):
    """Inputs, DAAD and output on a real S3 server: the same shards as the local run, a resumed
    run on S3 completes, and verify accepts the result."""

    from cai_ray.daad.builders import DaadSpec, build_daad
    from cai_ray.io import storage
    from tests.conftest import DEMO, REPO

    config, _ = reference_run
    for image in sorted(normals_with_a_corrupt_file.iterdir()):
        storage.write_bytes_atomic(f"{s3_bucket}/normals/{image.name}", image.read_bytes())
    spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "demo.yaml")
    build_daad(spec, DEMO / "defects", f"{s3_bucket}/daad")
    remote = config.model_copy(deep=True)
    remote.inputs.paths = [f"{s3_bucket}/normals/"]
    remote.daad.path = f"{s3_bucket}/daad"
    remote.output.path = f"{s3_bucket}/out"
    remote.storage.endpoint_url = s3_server.endpoint
    remote.resources.injection_actors = 1
    manifest = run_synth(remote, show_progress=False)
    assert manifest["complete"] and manifest["samples"] > 0

    fs = local_s3(s3_server.endpoint)
    bucket = s3_bucket.removeprefix("s3://")

    def contents(read) -> list:
        """Every sample's key, image and mask bytes, and label (its target relative to the
        inputs' folder, so the same wherever the inputs live)."""
        samples = []
        for index in range(5):
            for key, files in iter_tar(read(f"shard-{index:06d}.tar")):
                samples.append((key, files["png"], files["mask.png"], json.loads(files["json"])))
        return samples

    local = contents(lambda name: (Path(config.output.path) / name).read_bytes())
    assert contents(lambda name: fs.cat_file(f"{bucket}/out/{name}")) == local

    fs.rm(f"{bucket}/out/shard-000002.json")  # as if the job died before committing shard 2
    fs.rm(f"{bucket}/out/manifest.json")
    assert run_synth(remote, show_progress=False)["complete"]
    assert main(["--s3-endpoint-url", s3_server.endpoint, "verify", f"{s3_bucket}/out"]) == 0
    assert "OK:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("synthesizer", "methods"),
    [
        ({"method": "nsa", "blend": "mixed", "anomalies_per_target": 3}, {"nsa-mixed"}),
        ({"method": "draem", "anomalies_per_target": 3, "textures": ["TEXTURES"]}, {"draem"}),
        ({"method": "cutpaste", "variant": "scar", "anomalies_per_target": 3}, {"cutpaste-scar"}),
        ({"method": "fpi", "anomalies_per_target": 3}, {"fpi"}),
        ({"method": "glass", "anomalies_per_target": 3, "textures": ["TEXTURES"]}, {"glass"}),
    ],
)
def test_baselines_run_as_the_synth_job(synthesizer, methods, make_config, shared_data):
    textures = str(shared_data / "deepcrack" / "train_img" / "1*.jpg")
    synthesizer = {k: ([textures] if v == ["TEXTURES"] else v) for k, v in synthesizer.items()}
    config = make_config(out=synthesizer["method"], synthesizer=synthesizer, daad=None)
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and manifest["counts"]["method"].keys() == methods
    assert manifest["samples"] + len(manifest["failed_samples"]) == 12 * 3
    for failure in manifest["failed_samples"]:  # NSA, FPI: a shard with one readable target
        assert "needs another normal image" in failure["reason"]
    assert manifest["samples"] >= 12 * 3 - 3
    assert verify_output(config.output.path).ok
    for _, files in iter_tar(Path(config.output.path, "shard-000000.tar").read_bytes()):
        meta = json.loads(files["json"])
        assert meta["method"] in methods and meta["label"] == 1 and meta["attempts"] >= 1
