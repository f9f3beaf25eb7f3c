"""``cai-ray export``: a synthesis output written as anomalib's Folder, MVTec AD and COCO, each
read back with the format's own reader and compared sample by sample with the shards."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cai_ray import faults
from cai_ray.cli import main
from cai_ray.io import layout, storage
from cai_ray.io.codecs import decode_image
from cai_ray.io.export import (
    COCO_FILE,
    FORMATS,
    PARTS_FOLDER,
    STATE_FILE,
    ExportConfig,
    export_shard,
)
from cai_ray.io.samples import META_MEMBER, SampleError, decode_sample, read_meta
from cai_ray.io.tar import build_tar, iter_tar
from cai_ray.pipeline.synth import run_synth
from tests.conftest import DEMO, REPO
from tests.docs import code_blocks, doc_section
from tests.pipeline.conftest import job_config
from tests.s3server import local_s3


def _synthesise(daad: str, out: Path, **output) -> str:
    """A small output made here (no Ray): 5 tiles, 2 a shard, 6 anomalies and the normal each."""
    config = job_config(
        daad,
        DEMO / "normal",
        out,
        inputs={"limit": 5},
        output={"targets_per_shard": 2, "preview_samples": 0, "include_normal": True, **output},
        resources={"executor": "local"},
    )
    run_synth(config, show_progress=False)
    return str(out)


@pytest.fixture(scope="module")
def output(demo_daad, tmp_path_factory) -> str:
    return _synthesise(demo_daad, tmp_path_factory.mktemp("synth") / "out")


def _samples(out: str) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """Every sample of the output's shards: key -> (image, bool mask, metadata)."""
    found = {}
    for index in sorted(layout.committed_indices(out)):
        for key, files in iter_tar(storage.read_bytes(storage.join(out, layout.shard_name(index)))):
            assert key not in found
            found[key] = (*decode_sample(files), read_meta(files))
    return found


def _class(meta: dict) -> str:
    return meta.get("anomaly_class") or meta["method"]


def _files(root: Path) -> dict[str, Path]:
    """The files under ``root`` but the export's own bookkeeping, by relative path."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != STATE_FILE and PARTS_FOLDER not in path.parts
    }


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, temporaries and bookkeeping too."""
    files = (path for path in sorted(root.rglob("*")) if path.is_file())
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}


def _export(source: str, dest, *options: str) -> None:
    """``cai-ray export``, as a user runs it."""
    assert main(["export", source, str(dest), *options]) == 0


def _mask_file(path: Path) -> np.ndarray:
    """A mask file as the readers take it, after checking it is uint8 {0, 255}."""
    pixels = decode_image(path.read_bytes())
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and set(np.unique(pixels)) <= {0, 255}
    return pixels == 255


def test_folder_holds_every_sample_once_as_anomalib_reads_it(output, tmp_path, capsys):
    samples = _samples(output)
    dest = tmp_path / "folder"
    _export(output, dest, "--format", "folder")
    printed = capsys.readouterr().out
    normals = {key for key, (_, _, meta) in samples.items() if meta["label"] == 0}
    anomalies = set(samples) - normals
    assert normals and anomalies
    files = _files(dest)
    assert set(files) == {f"good/{key}.png" for key in normals} | {
        f"{folder}/{key}.png" for key in anomalies for folder in ("anomaly", "mask")
    }
    for key, (image, mask, _) in samples.items():
        folder = "good" if key in normals else "anomaly"
        np.testing.assert_array_equal(
            decode_image(files[f"{folder}/{key}.png"].read_bytes()), image
        )
        if key in anomalies:
            np.testing.assert_array_equal(_mask_file(files[f"mask/{key}.png"]), mask)
            assert mask.any()
    shards = len(layout.committed_indices(output))
    assert f"{len(samples)} samples ({len(normals)} normal, {len(anomalies)} anomalous)" in printed
    assert f"{shards} shard(s) exported now, 0 before" in printed
    assert printed.count(" samples -> ") == shards  # a line per shard


def test_mvtec_files_each_anomaly_under_its_class(output, tmp_path):
    samples = _samples(output)
    dest = tmp_path / "mvtec"
    _export(output, dest, "--format", "mvtec", "--category", "tiles", "--test-normals", "0.5")
    files = _files(dest)
    assert all(name.startswith("tiles/") for name in files)
    train = {Path(n).stem for n in files if n.startswith("tiles/train/good/")}
    test_good = {Path(n).stem for n in files if n.startswith("tiles/test/good/")}
    normals = {key for key, (_, _, meta) in samples.items() if meta["label"] == 0}
    assert train | test_good == normals and not train & test_good
    assert train and test_good  # 5 normals split by a hash of their keys: both get some
    expected = {f"tiles/train/good/{key}.png" for key in train}
    expected |= {f"tiles/test/good/{key}.png" for key in test_good}
    for key, (image, mask, meta) in samples.items():
        folder = "good" if key in normals else _class(meta)
        split = "train" if key in train else "test"
        np.testing.assert_array_equal(
            decode_image(files[f"tiles/{split}/{folder}/{key}.png"].read_bytes()), image
        )
        if key not in normals:
            expected |= {f"tiles/test/{folder}/{key}.png"}
            expected |= {f"tiles/ground_truth/{folder}/{key}_mask.png"}
            mask_file = files[f"tiles/ground_truth/{folder}/{key}_mask.png"]
            np.testing.assert_array_equal(_mask_file(mask_file), mask)
    assert set(files) == expected
    again = tmp_path / "again"
    _export(output, again, "--format", "mvtec", "--category", "tiles", "--test-normals", "0.5")
    assert _tree(again) == _tree(dest)  # the same split, the same bytes


def test_mvtec_category_defaults_to_the_jobs_name(output, tmp_path):
    _export(output, tmp_path / "mvtec", "--format", "mvtec")
    folders = sorted(p.name for p in (tmp_path / "mvtec").iterdir() if p.is_dir())
    assert folders == sorted([PARTS_FOLDER, "test"])  # the tests' job is named 'test'
    state = json.loads((tmp_path / "mvtec" / STATE_FILE).read_text())
    assert state["settings"]["category"] == "test" and state["complete"]


@pytest.mark.parametrize("instances", ["sample", "region"])
def test_coco_masks_read_back_with_pycocotools(instances, output, tmp_path):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    samples = _samples(output)
    dest = tmp_path / "coco"
    _export(output, dest, "--format", "coco", "--coco-instances", instances)
    coco = COCO(str(dest / COCO_FILE))
    assert set(_files(dest)) == {f"images/{key}.png" for key in samples} | {COCO_FILE}
    names = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
    classes = {_class(meta) for _, _, meta in samples.values() if meta["label"] == 1}
    assert sorted(names.values()) == sorted(classes)
    assert len(coco.getImgIds()) == len(samples)
    seen = set()
    for image in coco.loadImgs(coco.getImgIds()):
        key = image["file_name"].removesuffix(".png")
        seen.add(key)
        pixels, mask, meta = samples[key]
        assert (image["height"], image["width"]) == mask.shape
        np.testing.assert_array_equal(
            decode_image((dest / "images" / image["file_name"]).read_bytes()), pixels
        )
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        if meta["label"] == 0:
            assert annotations == []
            continue
        regions = [coco.annToMask(a).astype(bool) for a in annotations]
        assert all(names[a["category_id"]] == _class(meta) for a in annotations)
        assert all(isinstance(a["segmentation"]["counts"], str) for a in annotations)
        for annotation, region in zip(annotations, regions, strict=True):
            rle = coco.annToRLE(annotation)
            assert annotation["bbox"] == coco_mask.toBbox(rle).tolist()
            assert annotation["area"] == coco_mask.area(rle) == region.sum() > 0
            assert annotation["iscrowd"] == 0
        np.testing.assert_array_equal(np.logical_or.reduce(regions), mask)
        if instances == "sample":
            assert len(annotations) == 1
        else:  # disjoint 8-connected regions, as scipy counts them
            assert sum(r.sum() for r in regions) == mask.sum()
            assert len(regions) == ndimage.label(mask, structure=np.ones((3, 3)))[1]
    assert seen == set(samples)


def test_a_jpeg_output_is_exported_as_png_of_the_same_pixels(demo_daad, tmp_path):
    jpeg = _synthesise(demo_daad, tmp_path / "jpeg", image_format="jpg")
    samples = _samples(jpeg)
    _export(jpeg, tmp_path / "folder", "--format", "folder")
    files = _files(tmp_path / "folder")
    assert len(files) == sum(1 + (meta["label"] == 1) for _, _, meta in samples.values())
    for key, (image, _, meta) in samples.items():
        data = files[f"{'anomaly' if meta['label'] else 'good'}/{key}.png"].read_bytes()
        assert data.startswith(b"\x89PNG")
        np.testing.assert_array_equal(decode_image(data), image)


def _killed_export(source: str, dest: Path, *options: str) -> subprocess.CompletedProcess:
    """``cai-ray export`` in a process killed at its first shard's commit."""
    env = {k: v for k, v in os.environ.items() if k != faults.GROUP_VARIABLE}
    env |= {faults.KILL_AT_VARIABLE: faults.EXPORTING, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "export", source, str(dest), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def test_a_killed_export_resumes_to_the_same_files_without_redoing_a_shard(output, tmp_path):
    options = ("--format", "coco", "--coco-instances", "region")
    whole = tmp_path / "whole"
    _export(output, whole, *options)
    dest = tmp_path / "dest"
    _export(output, dest, *options, "--shards", "1")
    first = {name: path.stat().st_mtime_ns for name, path in _files(dest).items()}
    state = json.loads((dest / STATE_FILE).read_text())
    assert state["shards"] == 1 and not state["complete"]

    killed = _killed_export(output, dest, *options)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    parts = dest / PARTS_FOLDER
    assert sorted(p.name for p in parts.glob("*.json")) == [layout.entry_name(0)]
    assert list(parts.glob(f".{layout.entry_name(1)}.*.tmp"))  # died committing shard 1
    partial = dest / "images" / ".s-0000009-00.png.abcd1234.tmp"
    partial.write_bytes(b"\x89PNG half of an image")  # as a write killed midway leaves it

    printed = subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "export", output, str(dest), *options],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    shards = len(layout.committed_indices(output))
    assert f"{shards - 1} shard(s) exported now, 1 before" in printed
    assert _tree(dest) == _tree(whole)  # no temporary left, every file whole, the same JSON
    after = {name: path.stat().st_mtime_ns for name, path in _files(dest).items()}
    assert all(after[name] == stamp for name, stamp in first.items() if name != COCO_FILE)


def test_an_export_to_s3_equals_the_local_one_and_resumes_there(
    output, s3_bucket, s3_server, tmp_path
):
    local = tmp_path / "folder"
    _export(output, local, "--format", "folder")
    dest = f"{s3_bucket}/exports/folder"
    endpoint = ("--s3-endpoint-url", s3_server.endpoint)
    _export(output, dest, "--format", "folder", *endpoint)
    fs = local_s3(s3_server.endpoint)
    root = dest.removeprefix("s3://")
    remote = {name.removeprefix(root + "/"): fs.cat_file(name) for name in fs.find(root)}
    assert remote == _tree(local)  # the state file too: it names the source, not the dest
    assert main(["export", output, dest, "--format", "folder", *endpoint]) == 0
    state = json.loads(fs.cat_file(f"{root}/{STATE_FILE}"))
    assert state["complete"] and state["counts"]["samples"] == len(_samples(output))


def test_bad_sources_and_destinations_are_clear_errors(output, demo_daad, tmp_path, capsys):
    assert main(["export", demo_daad, str(tmp_path / "a"), "--format", "coco"]) == 2
    assert "is not a synthesis output (no job.json)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / layout.JOB_FILE).write_bytes((Path(output) / layout.JOB_FILE).read_bytes())
    assert main(["export", str(empty), str(tmp_path / "b"), "--format", "coco"]) == 2
    assert "no committed shards in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", output, str(tmp_path / "c"), "--format", "yolo"])
    assert "invalid choice: 'yolo'" in capsys.readouterr().err
    assert main(["export", output, str(tmp_path / "d"), "--format", "coco", "--category", "x"]) == 2
    assert "options of the mvtec format" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("the user's own file")
    assert main(["export", output, str(busy), "--format", "folder"]) == 2
    assert "is not empty and holds no export.json" in capsys.readouterr().err
    assert not (busy / STATE_FILE).exists()
    done = tmp_path / "done"
    _export(output, done, "--format", "mvtec")
    assert main(["export", output, str(done), "--format", "mvtec", "--test-normals", "0.2"]) == 2
    assert "other settings (test_normals 0.0 there, 0.2 now)" in capsys.readouterr().err
    assert main(["export", output, str(done), "--format", "coco"]) == 2
    assert "other settings (format mvtec there, coco now" in capsys.readouterr().err


def _one_shard_with(output: str, change) -> tuple[str, bytes]:
    """The output's first shard, its first anomalous sample's metadata changed by ``change``."""
    shard = list(iter_tar(storage.read_bytes(storage.join(output, layout.shard_name(0)))))
    key, files = next((k, f) for k, f in shard if read_meta(f)["label"] == 1)
    meta = read_meta(files)
    change(meta)
    changed = [
        (k, {**f, META_MEMBER: json.dumps(meta).encode()} if k == key else f) for k, f in shard
    ]
    return key, build_tar(changed)


def test_a_sample_without_a_label_or_a_safe_class_is_named(output):
    key, unlabelled = _one_shard_with(output, lambda meta: meta.pop("label"))
    for format in FORMATS:
        with pytest.raises(SampleError, match=f"sample {key}: 'label'"):
            export_shard(
                unlabelled,
                ExportConfig(format=format, category="tiles" if format == "mvtec" else None),
            )
    key, escaping = _one_shard_with(output, lambda meta: meta.update(anomaly_class="../../up"))
    mvtec = ExportConfig(format="mvtec", category="tiles")
    with pytest.raises(
        SampleError, match=rf"sample {key}: its anomaly class '../../up' cannot name a folder"
    ):
        export_shard(escaping, mvtec)
    key, trailing = _one_shard_with(output, lambda meta: meta.update(anomaly_class="crack\n"))
    with pytest.raises(SampleError, match=re.escape(f"sample {key}: its anomaly class 'crack\\n'")):
        export_shard(trailing, mvtec)
    coco = export_shard(escaping, ExportConfig(format="coco"))  # a category name, not a path
    assert "../../up" in coco.part["classes"]


def test_a_source_without_a_fingerprint_is_refused(output, tmp_path, capsys):
    """The fingerprint tells one export's source from another's: without it, two outputs could
    share a destination."""
    source = tmp_path / "source"
    shutil.copytree(output, source)
    job = json.loads((source / layout.JOB_FILE).read_text())
    del job["fingerprint"]
    (source / layout.JOB_FILE).write_text(json.dumps(job))
    assert main(["export", str(source), str(tmp_path / "dest"), "--format", "folder"]) == 2
    assert "job.json holds no fingerprint" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def _docs_commands() -> list[str]:
    block = code_blocks(doc_section("docs/API.md", "Export: anomalib, MVTec AD, COCO"), "bash")[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_docs_export_commands_run_as_written(output, tmp_path, monkeypatch, capsys):
    """From a folder whose out/demo is a synthesis output, as after the README's first command."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "demo").symlink_to(output)
    monkeypatch.chdir(tmp_path)
    commands = _docs_commands()
    assert len(commands) >= 2
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "cai-ray"
        assert main(words[1:]) == 0, command
        dest = Path(words[-1])
        assert json.loads((dest / STATE_FILE).read_text())["complete"]
    assert "annotations:" in capsys.readouterr().out


@pytest.mark.anomalib
def test_anomalib_reads_the_folder_and_mvtec_exports(output, tmp_path):
    """anomalib's own Folder and MVTecAD datamodules over the exports: every sample once, with
    its label, pixels and mask."""
    data = pytest.importorskip("anomalib.data")
    samples = _samples(output)
    _export(output, tmp_path / "folder", "--format", "folder")
    _export(output, tmp_path / "mvtec", "--format", "mvtec", "--category", "tiles")
    common = {"num_workers": 0, "val_split_mode": "same_as_test", "seed": 0}
    modules = [
        data.Folder(
            name="cai",
            root=tmp_path / "folder",
            normal_dir="good",
            abnormal_dir="anomaly",
            mask_dir="mask",
            **common,
        ),
        data.MVTecAD(root=tmp_path / "mvtec", category="tiles", **common),
    ]
    for module in modules:
        module.setup()
        seen = []
        for dataset in (module.train_data, module.test_data):
            for index in range(len(dataset)):
                item = dataset[index]
                key = Path(item.image_path).stem
                seen.append(key)
                image, mask, meta = samples[key]
                assert int(item.gt_label) == meta["label"]
                pixels = np.rint(item.image.numpy() * 255).astype(np.uint8)
                np.testing.assert_array_equal(pixels[0], image)  # grey, read as RGB
                if meta["label"]:
                    np.testing.assert_array_equal(item.gt_mask.numpy(), mask)
        assert sorted(seen) == sorted(samples)
