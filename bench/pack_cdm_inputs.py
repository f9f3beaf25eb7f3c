"""Pack what the magnetic-tile CDM run needs into .benchdata/ (git-ignored) for a GPU machine
that has neither ../shared/data nor room for the full crack DAAD (a call carries 64 MiB):

- the CDM's training data (configs/cdm/magnetic_tile_data.yaml's output);
- the benchmark's 254 normal training images and their list;
- a crack DAAD for the CDM's masks, built from the same DeepCrack and CrackForest files with the
  images re-encoded at JPEG quality 5. The CDM reads only a record's mask and box, which come
  from the untouched mask files: checked here against out/daad-cracks record by record.

    python bench/pack_cdm_inputs.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pyarrow.parquet as pq

from cai_ray.daad.builders import DaadSpec, build_daad

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PACK = REPO / ".benchdata"


def lite_sources(folder: Path) -> None:
    """DeepCrack and CrackForest with small images and the same masks."""
    for images in ("deepcrack/train_img", "deepcrack/test_img", "crackforest/image"):
        (folder / images).mkdir(parents=True, exist_ok=True)
        for path in sorted((SHARED / images).glob("*.jpg")):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(folder / images / path.name), image, [cv2.IMWRITE_JPEG_QUALITY, 5])
    for masks in ("deepcrack/train_lab", "deepcrack/test_lab", "crackforest/groundTruth"):
        shutil.copytree(SHARED / masks, folder / masks, dirs_exist_ok=True)


def main() -> None:
    if PACK.exists():
        shutil.rmtree(PACK)
    shutil.copytree(
        REPO / "out/cdm-data/magnetic_tile",
        PACK / "cdm-data",
        ignore=shutil.ignore_patterns("preview.png"),
    )
    normals = (REPO / "out/benchmark/magnetic_tile/train-normals.txt").read_text().split()
    (PACK / "mt_free").mkdir()
    for path in normals:
        shutil.copy(path, PACK / "mt_free")
    (PACK / "train-normals.txt").write_text("".join(f"{p}\n" for p in normals))
    sources = Path("/tmp/cracks-lite")
    lite_sources(sources)
    spec = DaadSpec.from_yaml(REPO / "configs/daad/cracks.yaml")
    build_daad(spec, str(sources), str(PACK / "daad-cracks"))
    columns = ["record_id", "anomaly_class", "domain", "y0", "x0", "y1", "x1"]
    lite = pq.read_table(PACK / "daad-cracks/records.parquet").select(columns)
    full = pq.read_table(REPO / "out/daad-cracks/records.parquet").select(columns)
    assert lite.equals(full), "the lite DAAD's records differ from out/daad-cracks"
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    print(f"packed {size / 2**20:.1f} MiB into {PACK}")


if __name__ == "__main__":
    main()
