"""The DAAD contact sheet: a row per class, its patterns with their masks outlined."""

import numpy as np

from cai_ray.cli import main
from cai_ray.daad.preview import LABEL_WIDTH, contact_sheet
from cai_ray.io.codecs import decode_image


def test_a_row_per_class_with_outlined_patterns(demo_daad, tmp_path, capsys):
    sheet = contact_sheet(demo_daad, per_class=3, cell=64)
    # the demo DAAD: abrasion, crack, hole, stain
    assert sheet.shape == (4 * 64, LABEL_WIDTH + 3 * 64, 3) and sheet.dtype == np.uint8
    pixels = sheet.astype(int)
    outline = pixels[..., 0] - np.maximum(pixels[..., 1], pixels[..., 2]) > 60  # red on grey tiles
    for row in range(4):
        assert outline[row * 64 : (row + 1) * 64, LABEL_WIDTH:].sum() > 20  # masks drawn
    out = tmp_path / "sheet.png"
    assert main(["daad", "preview", demo_daad, "--out", str(out), "--per-class", "3"]) == 0
    assert decode_image(out.read_bytes()).shape == (4 * 128, LABEL_WIDTH + 3 * 128, 3)
    assert "a row per class" in capsys.readouterr().out
