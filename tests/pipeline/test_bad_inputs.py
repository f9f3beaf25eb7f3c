"""Hostile input folders through the whole job (in-process executor: the same stages Ray runs):
every file is either used or listed in the manifest's skips with its reason, the same reasons
on every run, and a job that can use nothing fails with a message, not exit 0.

| input file | outcome |
|---|---|
| a link to nothing | skipped: "broken link (points to nothing)" |
| README.txt in the folder | skipped: "not an image file name (.txt)" |
| a file name that is not UTF-8 | skipped: "file name is not valid UTF-8" |
| an animated GIF | skipped: "3 frames ... not one image" |
| a PNG declaring 400 million pixels | skipped: "too many pixels" |
| text named .jpg | skipped: "not a format Pillow recognises" (no object address) |
| a 1x1 image | skipped: "smaller than 16 pixels a side" |
| a phone photo with EXIF orientation 6 | used, upright |
"""

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cai_ray.cli import main
from cai_ray.config import SynthConfig
from cai_ray.pipeline.synth import run_synth
from tests.conftest import DEMO


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    data = bytearray(_png(Image.new("L", (8, 8))))
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def hostile(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for image in sorted((DEMO / "normal").glob("*.jpg"))[:2]:
        shutil.copy(image, folder / image.name)
    os.symlink(tmp_path / "gone.jpg", folder / "link.jpg")
    (folder / "README.txt").write_text("tiles from line 3")
    os.close(os.open(os.fsencode(folder) + b"/caf\xe9.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    frames = [Image.new("L", (64, 64), v) for v in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    (folder / "anim.gif").write_bytes(buffer.getvalue())
    (folder / "bomb.png").write_bytes(_bomb())
    (folder / "text.jpg").write_bytes(b"not a picture")
    (folder / "dot.png").write_bytes(_png(Image.new("L", (1, 1))))
    tile = (
        Image.open(sorted((DEMO / "normal").glob("*.jpg"))[2]).convert("L").crop((0, 0, 300, 200))
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    tile.save(folder / "phone.jpg", "JPEG", exif=exif)
    return folder


def _config(inputs: Path, out: Path) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(inputs)]},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 2},
            "output": {"path": str(out), "targets_per_shard": 4, "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )


def test_every_file_is_used_or_skipped_with_its_reason(hostile, tmp_path):
    manifest = run_synth(_config(hostile, tmp_path / "out"), show_progress=False)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped_inputs"]}
    assert reasons["link.jpg"] == "broken link (points to nothing)"
    assert reasons["README.txt"] == "not an image file name (.txt)"
    assert reasons["caf\\xe9.jpg"] == "file name is not valid UTF-8"
    assert "3 frames" in reasons["anim.gif"]
    assert "too many pixels" in reasons["bomb.png"]
    assert "not a format Pillow recognises" in reasons["text.jpg"]
    assert "smaller than 16 pixels a side" in reasons["dot.png"]
    assert len(reasons) == 7
    assert manifest["samples"] + len(manifest["failed_samples"]) == 3 * 2  # two tiles, the photo
    again = run_synth(_config(hostile, tmp_path / "again"), show_progress=False)
    entries = sorted((tmp_path / "out").glob("shard-*.json"))
    for entry in entries:
        assert entry.read_bytes() == (tmp_path / "again" / entry.name).read_bytes()
    assert again["skipped_inputs"] == manifest["skipped_inputs"]


def test_a_job_that_can_use_no_input_fails_with_why(tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "text.jpg").write_bytes(b"not a picture")
    (folder / "dot.png").write_bytes(_png(Image.new("L", (1, 1))))
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "inputs": {"paths": [str(folder)]},
                "synthesizer": {"method": "cutpaste"},
                "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
                "resources": {"executor": "local"},
            }
        )
    )
    assert main(["synth", "--config", str(config), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no samples in" in err and "all 2 inputs were skipped" in err and "dot.png" in err


def test_a_damaged_daad_record_is_redrawn_and_reported(tmp_path, demo_daad):
    """A record whose image bytes are damaged inside its shard (its source image and, where
    it keeps one, its crop): draws that meet it draw again, the job completes, and the manifest
    names the record's shard and offset."""
    import pyarrow.parquet as pq

    daad = tmp_path / "daad"
    shutil.copytree(demo_daad, daad)
    table = pq.read_table(daad / "records.parquet").to_pylist()
    shard = daad / f"daad-{table[0]['shard']:06d}.tar"
    data = bytearray(shard.read_bytes())
    image_at = data.index(b"\xff\xd8\xff", table[0]["start"])  # the first record's JPEG
    data[image_at : image_at + 3] = b"XXX"
    crop = table[0]["pattern_start"] >= 0
    if crop:
        png_at = data.index(b"\x89PNG", table[0]["pattern_start"])
        data[png_at : png_at + 4] = b"XXXX"
    shard.write_bytes(bytes(data))
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 6},
            "daad": {"path": str(daad)},
            "cai": {
                "stm": False,
                "blend": "paste",
                "quotas": {"large": 10, "medium": 0, "small": 0},
            },
            "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and manifest["samples"] >= 50
    where = f"{shard}#{table[0]['start']}"
    assert list(manifest["damaged_sources"]) == [where]
    why = "damaged PNG" if crop else "not a format Pillow recognises"
    assert why in manifest["damaged_sources"][where]


def test_a_class_filter_that_leaves_no_source_fails_in_the_driver(tmp_path, demo_daad):
    """Before any Ray worker starts (the default executor), in one line."""
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")]},
            "daad": {"path": demo_daad, "include_classes": ["orifice"]},
            "output": {"path": str(tmp_path / "out")},
        }
    )
    with pytest.raises(ValueError, match="no source patterns left"):
        run_synth(config, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_an_error_inside_a_ray_worker_reaches_the_user_in_one_line(
    ray_local, tmp_path, demo_daad, capsys
):
    """A DAAD shard missing under its index: the driver's checks pass (they read the index and
    the records table), the injection actors fail reading it; the CLI prints the worker's own
    error in one line, not Ray's traceback."""
    daad = tmp_path / "daad"
    shutil.copytree(demo_daad, daad)
    (daad / "daad-000000.tar").unlink()
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "inputs": {"paths": [str(DEMO / "normal")], "limit": 2},
                "daad": {"path": str(daad)},
                "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
                "resources": {"cpus_per_injection_actor": 0.5},
            }
        )
    )
    assert main(["synth", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("cai-ray: error: a worker failed: FileNotFoundError: cannot read")
    assert "daad-000000.tar" in err[0]


def test_one_line_errors_before_anything_starts(tmp_path, demo_daad):
    """Quotas all 0, a damaged daad.json, an output path that is a file."""
    raw = {
        "inputs": {"paths": [str(DEMO / "normal")]},
        "daad": {"path": demo_daad},
        "output": {"path": str(tmp_path / "out")},
        "resources": {"executor": "local"},
    }
    with pytest.raises(ValueError, match="quotas are all 0"):
        SynthConfig.model_validate(
            {**raw, "cai": {"quotas": {"large": 0, "medium": 0, "small": 0}}}
        )
    damaged = tmp_path / "daad"
    shutil.copytree(demo_daad, damaged)
    (damaged / "daad.json").write_text('{"shards": [')
    config = SynthConfig.model_validate({**raw, "daad": {"path": str(damaged)}})
    with pytest.raises(ValueError, match=r"daad.json is damaged \(not valid JSON.*rebuild"):
        run_synth(config, show_progress=False)
    (tmp_path / "a-file").write_text("not a folder")
    config = SynthConfig.model_validate({**raw, "output": {"path": str(tmp_path / "a-file")}})
    with pytest.raises(NotADirectoryError, match="a-file is a file, not a folder"):
        run_synth(config, show_progress=False)


def test_a_daad_mask_covering_the_whole_image_is_a_reported_skip(tmp_path):
    from cai_ray.daad.builders import DaadSpec, build_daad

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    tile = sorted((DEMO / "defects" / "MT_Crack" / "Imgs").glob("*.jpg"))[0]
    for name in ("a", "b"):
        shutil.copy(tile, root / "images" / f"{name}.jpg")
    size = Image.open(tile).size
    (root / "images" / "a.png").write_bytes(_png(Image.new("L", size, 255)))
    shutil.copy(tile.with_suffix(".png"), root / "images" / "b.png")
    spec = DaadSpec.model_validate(
        {
            "name": "x",
            "sources": [
                {
                    "layout": "folder",
                    "domain": "d",
                    "license": "test",
                    "anomaly_class": "crack",
                    "images": "images",
                    "image_glob": "*.jpg",
                }
            ],
        }
    )
    index = build_daad(spec, root, str(tmp_path / "daad"))
    assert index["report"]["records"] == 1
    assert index["report"]["skipped"] == [
        {
            "path": "images/a.jpg",
            "reason": "mask covers the whole image (an inverted mask, or no defect outlined)",
        }
    ]


def test_an_exif_rotated_photo_pairs_with_its_upright_mask_in_a_daad(tmp_path):
    """A non-square photo stored landscape with EXIF orientation 6 and a mask drawn on the
    upright photo: the pair is accepted, and the pattern read back lies on its defect."""
    from cai_ray.daad.builders import DaadSpec, build_daad
    from cai_ray.daad.shards import PatternBank

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    stored = Image.new("L", (120, 80), 100)  # landscape as stored
    stored.paste(255, (10, 20, 30, 60))  # a bright defect, in stored coordinates
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(root / "images" / "photo.jpg", "JPEG", exif=exif, quality=95)
    upright = stored.transpose(Image.Transpose.ROTATE_270)  # what a viewer shows (80 x 120)
    mask = Image.fromarray(((np.asarray(upright) > 200) * 255).astype(np.uint8))
    mask.save(root / "images" / "photo.png")
    spec = DaadSpec.model_validate(
        {
            "name": "x",
            "sources": [
                {
                    "layout": "folder",
                    "domain": "d",
                    "license": "test",
                    "anomaly_class": "stain",
                    "images": "images",
                    "image_glob": "*.jpg",
                }
            ],
        }
    )
    index = build_daad(spec, root, str(tmp_path / "daad"))
    assert index["report"]["records"] == 1, index["report"]["skipped"]
    pattern = PatternBank(str(tmp_path / "daad"), mode="grey")[0]
    y0, x0, y1, x1 = pattern.box
    assert pattern.image[y0:y1, x0:x1][pattern.mask[y0:y1, x0:x1]].mean() > 200
