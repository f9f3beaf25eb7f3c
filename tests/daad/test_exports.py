"""labelme and COCO exports on real files: the cotton foreign-matter polygons (published as a
YOLO export) written as labelme files and as a COCO file (polygons, and run lengths made by
pycocotools) build the same records, pixel for pixel, as the YOLO export itself."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools import mask as coco_mask

from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.shards import iter_records
from cai_ray.io.annotations import parse_yolo_polygons
from cai_ray.io.codecs import image_size

CLASSES = {"cloth": "impurity", "jute": "impurity", "thread": "impurity", "packet": "stain"}


@pytest.fixture(scope="module")
def cotton(shared_data, tmp_path_factory):
    """A data root holding the real cotton split (linked) and its polygons in pixels."""
    root = tmp_path_factory.mktemp("exports")
    os.symlink(shared_data / "cotton_impurity", root / "cotton")
    names = yaml.safe_load((root / "cotton" / "data.yaml").read_text())["names"]
    images = sorted((root / "cotton" / "valid" / "images").glob("*.jpg"))[:40]
    shapes = {}
    for image in images:
        height, width = image_size(image.read_bytes())
        label_file = root / "cotton" / "valid" / "labels" / f"{image.stem}.txt"
        shapes[image.name] = (
            (height, width),
            [
                (names[label], polygon * [width - 1, height - 1])  # YOLO's rule, by hand
                for label, polygon in parse_yolo_polygons(label_file.read_text())
            ],
        )
    return root, shapes, names


def _source(layout: str, **paths: str) -> dict:
    return {
        "layout": layout,
        "domain": "cotton",
        "license": "CC BY 4.0",
        "classes": CLASSES,
        **paths,
    }


def _records(root: Path, source: dict, out: Path) -> tuple[dict, dict]:
    index = build_daad(DaadSpec.model_validate({"name": "x", "sources": [source]}), root, str(out))
    masks = {
        (label.path, str(label.anomaly_class)): mask for label, _, mask in iter_records(str(out))
    }
    return index["report"], masks


@pytest.fixture(scope="module")
def yolo_records(cotton, tmp_path_factory):
    root, shapes, _ = cotton
    listed = root / "yolo_images"
    listed.mkdir()
    for name in shapes:  # the same 40 images
        os.symlink(root / "cotton" / "valid" / "images" / name, listed / name)
    source = _source(
        "yolo", images="yolo_images", labels="cotton/valid/labels", names="cotton/data.yaml"
    )
    report, masks = _records(root, source, tmp_path_factory.mktemp("yolo"))
    return report, {(f"cotton/valid/images/{Path(p).name}", c): m for (p, c), m in masks.items()}


def test_labelme_files_build_the_yolo_records(cotton, yolo_records, tmp_path):
    root, shapes, _ = cotton
    folder = root / "labelme"
    folder.mkdir(exist_ok=True)
    for name, ((height, width), polygons) in shapes.items():
        document = {
            "version": "5.4.1",
            "imagePath": f"../cotton/valid/images/{name}",  # relative to the JSON file
            "imageData": None,
            "imageHeight": height,
            "imageWidth": width,
            "shapes": [
                {"label": label, "points": polygon.tolist(), "shape_type": "polygon"}
                for label, polygon in polygons
            ],
        }
        (folder / f"{Path(name).stem}.json").write_text(json.dumps(document))
    report, masks = _records(root, _source("labelme", annotations="labelme"), tmp_path / "d")
    expected_report, expected = yolo_records
    assert report["by_class"] == expected_report["by_class"] and masks.keys() == expected.keys()
    for key, mask in masks.items():
        assert np.array_equal(mask, expected[key]), key
    assert report["unmapped_labels"] == expected_report["unmapped_labels"]
    assert {"cotton", "conveyor belt"} & set(report["unmapped_labels"])  # background, counted


@pytest.mark.parametrize("encoding", ["polygons", "rle"])
def test_a_coco_file_builds_the_yolo_records(cotton, yolo_records, tmp_path, encoding):
    root, shapes, names = cotton
    categories = [{"id": number + 1, "name": name} for number, name in enumerate(names)]
    category_id = {c["name"]: c["id"] for c in categories}
    expected_report, expected = yolo_records
    images, annotations = [], []
    for number, (name, ((height, width), polygons)) in enumerate(shapes.items(), start=1):
        images.append({"id": number, "file_name": name, "height": height, "width": width})
        for label, polygon in polygons:
            if encoding == "polygons":
                segmentation: object = [polygon.reshape(-1).tolist()]
            else:  # each polygon as our YOLO build filled it, run-length encoded by pycocotools
                filled = _filled(polygon, height, width)
                rle = coco_mask.encode(np.asfortranarray(filled.astype(np.uint8)))
                segmentation = {"size": [height, width], "counts": rle["counts"].decode()}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": category_id[label],
                    "segmentation": segmentation,
                    "iscrowd": int(encoding == "rle"),
                }
            )
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    (tmp_path / "data").mkdir()
    os.symlink(root / "cotton", tmp_path / "data" / "cotton")
    os.symlink(tmp_path / "instances.json", tmp_path / "data" / "instances.json")
    source = _source("coco", annotations="instances.json", images="cotton/valid/images")
    report, masks = _records(tmp_path / "data", source, tmp_path / "d")
    assert report["by_class"] == expected_report["by_class"] and masks.keys() == expected.keys()
    for key, mask in masks.items():
        assert np.array_equal(mask, expected[key]), key


def _filled(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.rint(polygon).astype(np.int32)], 1)
    return canvas.astype(bool)


def test_export_errors_name_the_file_and_what_is_wrong(cotton, tmp_path):
    root, shapes, _ = cotton
    name = next(iter(shapes))
    (size, polygons) = shapes[name]
    folder = root / "broken_labelme"
    folder.mkdir(exist_ok=True)
    good = {"imagePath": f"../cotton/valid/images/{name}", "shapes": []}
    good["shapes"] = [{"label": "thread", "points": polygons[0][1].tolist()}]
    (folder / "resized.json").write_text(
        json.dumps({**good, "imageHeight": size[0] // 2, "imageWidth": size[1] // 2})
    )
    (folder / "missing.json").write_text(json.dumps({**good, "imagePath": "nowhere.jpg"}))
    (folder / "broken.json").write_text("{")
    (folder / "good.json").write_text(
        json.dumps({**good, "imageHeight": size[0], "imageWidth": size[1]})
    )
    source = _source("labelme", annotations="broken_labelme")
    report, masks = _records(root, source, tmp_path / "d")
    assert report["records"] == 1 and len(masks) == 1
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["broken.json"].startswith("bad labelme file (not JSON")
    assert reasons["missing.json"].startswith("image file not found (")
    half = f"{size[0] // 2}x{size[1] // 2}"
    assert (
        reasons["resized.json"] == f"bad image (annotated for {half}, the image is "
        f"{size[0]}x{size[1]})"
    )
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thread"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    source = _source("coco", annotations="coco.json", images="cotton/valid/images")
    with pytest.raises(ValueError, match=r"categories \['cloth', 'jute', 'packet'\] are not in"):
        build_daad(DaadSpec.model_validate({"name": "x", "sources": [source]}), root, str(tmp_path))
