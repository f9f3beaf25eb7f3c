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
