"""Annotation exports read strictly: YOLO label files, labelme shapes, COCO polygons and run
lengths (against pycocotools on the bundled real masks), and a clear error for each malformed
input."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from cai_ray.io.annotations import (
    Shape,
    mask_box,
    mask_rle,
    parse_coco,
    parse_labelme,
    read_yolo_shapes,
    rle_counts_from_string,
    rle_mask,
    shapes_mask,
)
from cai_ray.io.codecs import DecodeError, decode_mask

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
REAL_MASKS = sorted(DEMO.glob("defects/*/Imgs/*.png"))


@pytest.mark.parametrize("path", REAL_MASKS[::3], ids=lambda p: p.stem)
def test_compressed_and_plain_run_lengths_decode_to_the_real_mask(path):
    mask = decode_mask(path.read_bytes())
    height, width = mask.shape
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = encoded["counts"].decode()
    assert rle_counts_from_string(counts) == _plain_counts(mask)
    assert np.array_equal(
        rle_mask({"size": [height, width], "counts": counts}, height, width), mask
    )
    plain = {"size": [height, width], "counts": _plain_counts(mask)}
    assert np.array_equal(rle_mask(plain, height, width), mask)


def _plain_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO runs, column by column, starting with background (written here by
    hand from the definition, independently of the decoder)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def _edge_masks() -> list[np.ndarray]:
    """Masks where an encoder slips: empty, full, the first or last pixel set, one pixel, long
    runs whose differences are negative, and random ones."""
    rng = np.random.default_rng(0)
    first, last, stripes = np.zeros((7, 5), bool), np.zeros((7, 5), bool), np.zeros((300, 90), bool)
    first[0, 0] = last[-1, -1] = True
    stripes[:, ::7] = True
    stripes[120:, 40:] = True
    randoms = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 60, (40, 2))]
    return [
        np.zeros((3, 4), bool),
        np.ones((4, 3), bool),
        first,
        last,
        np.ones((1, 1), bool),
        stripes,
        *randoms,
    ]


@pytest.mark.parametrize(
    "mask", [decode_mask(p.read_bytes()) for p in REAL_MASKS[::3]] + _edge_masks()
)
def test_masks_encode_as_pycocotools_encodes_them(mask):
    """mask_rle writes pycocotools' bytes; mask_box its box; rle_mask reads them back."""
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = mask_rle(mask)
    assert ours == {"size": list(mask.shape), "counts": theirs["counts"].decode()}
    assert np.array_equal(rle_mask(ours, *mask.shape), mask)
    if mask.any():
        assert mask_box(mask) == coco_mask.toBbox(theirs).tolist()


def test_run_lengths_that_do_not_fit_the_image_are_errors():
    with pytest.raises(DecodeError, match="RLE size"):
        rle_mask({"size": [4, 5], "counts": [20]}, 5, 4)
    with pytest.raises(DecodeError, match="cover 19 pixels, not 20"):
        rle_mask({"size": [4, 5], "counts": [19]}, 4, 5)
    with pytest.raises(DecodeError, match="bad character"):
        rle_counts_from_string("a b")
    with pytest.raises(DecodeError, match="ends inside a number"):
        rle_counts_from_string("0o")  # 'o' carries the continuation bit


def test_labelme_polygons_rectangles_and_circles_have_area_points_do_not():
    text = json.dumps(
        {
            "imagePath": "..\\images\\a.png",
            "imageHeight": 40,
            "imageWidth": 60,
            "shapes": [
                {"label": "thread", "shape_type": "polygon", "points": [[2, 2], [10, 2], [2, 10]]},
                {"label": "hole", "shape_type": "rectangle", "points": [[20, 5], [29, 14]]},
                {"label": "hole", "shape_type": "circle", "points": [[45, 20], [45, 26]]},
                {"label": "dust", "shape_type": "point", "points": [[50, 30]]},
            ],
        }
    )
    header, shapes, notes = parse_labelme(text)
    assert header == {"imagePath": "..\\images\\a.png", "imageHeight": 40, "imageWidth": 60}
    assert [s.label for s in shapes] == ["thread", "hole", "hole"]
    assert notes == ["point shape 'dust' has no area"]
    rectangle = shapes_mask([shapes[1]], 40, 60)
    assert rectangle.sum() == 100 and rectangle[5:15, 20:30].all()
    circle = shapes_mask([shapes[2]], 40, 60)
    assert np.pi * 6**2 <= circle.sum() <= np.pi * 7**2 and circle[20, 45]  # rim included
    assert not circle[20, 52] and not circle[27, 45]
    assert shapes_mask(shapes, 40, 60).sum() == (
        shapes_mask(shapes[:1], 40, 60).sum() + rectangle.sum() + circle.sum()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"imagePath": "a.png"}', "no 'shapes' list"),
        ('{"shapes": []}', "no 'imagePath'"),
        ('{"imagePath": "a", "shapes": [{"points": [[1, 1]]}]}', "shape 0 has no label"),
        (
            '{"imagePath": "a", "shapes": [{"label": "x", "points": [[1, 1], [2, 2]]}]}',
            "a polygon needs 3\\+ points",
        ),
        (
            '{"imagePath": "a", "shapes": [{"label": "x", "shape_type": "mask", "points": []}]}',
            "shape_type 'mask' with 0 points is not read",
        ),
        (
            '{"imagePath": "a", "shapes": [{"label": "x", "points": [["a", 1], [2, 2]]}]}',
            "not numbers",
        ),
    ],
)
def test_malformed_labelme_files_say_what_is_wrong(content, message):
    with pytest.raises(DecodeError, match=message):
        parse_labelme(content)


def test_coco_keeps_every_readable_annotation_and_notes_the_rest():
    square = [[10, 10, 20, 10, 20, 20, 10, 20]]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
        "categories": [{"id": 3, "name": "stain"}, {"id": 4, "name": "belt"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": square},
            {
                "id": 2,
                "image_id": 1,
                "category_id": 4,
                "segmentation": {"size": [30, 40], "counts": [1199, 1]},
            },
            {"id": 3, "image_id": 1, "category_id": 9, "segmentation": square},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2]},
            {
                "id": 5,
                "image_id": 1,
                "category_id": 3,
                "segmentation": {"size": [3, 4], "counts": [12]},
            },
        ],
    }
    parsed = parse_coco(json.dumps(coco))
    assert parsed.categories == {"stain", "belt"}
    assert [s.label for s in parsed.shapes[1]] == ["stain", "belt"]
    assert parsed.shapes[1][1].mask is not None and parsed.shapes[1][1].mask[29, 39]
    assert [note.split(":")[0] for note in parsed.notes] == [
        "annotation 3",
        "annotation 4",
        "annotation 5",
    ]
    assert "no segmentation" in parsed.notes[1] and "RLE size" in parsed.notes[2]
    assert shapes_mask([Shape("stain", polygon=np.array(square[0], float).reshape(-1, 2))], 30, 40)[
        10:21, 10:21
    ].all()
    with pytest.raises(DecodeError, match="not a COCO file"):
        parse_coco('{"images": []}')


NAMES = ["belt", "thread", "packet"]


def test_a_yolo_label_file_gives_named_polygons_in_pixels(tmp_path):
    path = tmp_path / "frame.txt"
    path.write_text("1 0 0 1 0 1 0.5\n\n  \n2 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n")
    shapes = read_yolo_shapes(path, NAMES, 41, 81)
    assert [s.label for s in shapes] == ["thread", "packet"]
    assert np.array_equal(shapes[0].polygon, [[0, 0], [80, 0], [80, 20]])  # (w-1, h-1) scale
    assert np.array_equal(shapes[1].polygon, [[20, 10], [60, 10], [60, 30], [20, 30]])
    filled = shapes_mask(shapes[1:], 41, 81)
    ys, xs = np.nonzero(filled)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 30, 20, 60)


def test_an_empty_yolo_label_file_has_no_shapes(tmp_path):
    path = tmp_path / "frame.txt"
    path.write_text("")
    assert read_yolo_shapes(path, NAMES, 10, 10) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("thread 0 0 1 0 1 1", "line 2 is not 'label x y x y ...'"),
        ("1 0 0 1 0 x 1", "line 2 is not 'label x y x y ...'"),
        ("1 0 0 1 0 1", r"line 2 has 5 coordinates, not 3\+ points"),
        ("1 0 0 1 0", r"line 2 has 4 coordinates, not 3\+ points"),
        ("1 0 0 1.5 0 1 1", r"line 2 has coordinates outside \[0, 1\]"),
        ("1 -0.2 0 1 0 1 1", r"line 2 has coordinates outside \[0, 1\]"),
        ("3 0 0 1 0 1 1", r"line 2 has label index 3, not in the names list \(3\)"),
        ("-1 0 0 1 0 1 1", r"line 2 has label index -1, not in the names list \(3\)"),
    ],
)
def test_one_bad_yolo_line_makes_the_file_an_error_naming_it(tmp_path, line, message):
    """The good line is not returned alone: the bad one's defect would go unlabelled."""
    path = tmp_path / "frame.txt"
    path.write_text(f"1 0 0 1 0 1 1\n{line}\n")
    with pytest.raises(DecodeError, match=message):
        read_yolo_shapes(path, NAMES, 10, 10)


def test_yolo_coordinates_just_outside_the_image_are_clipped(tmp_path):
    """Exports round polygon points a hair past the border: up to 0.01 is kept, clipped."""
    path = tmp_path / "frame.txt"
    path.write_text("0 -0.005 0 1.005 0 1 1\n")
    (shape,) = read_yolo_shapes(path, NAMES, 11, 11)
    assert np.array_equal(shape.polygon, [[0, 0], [10, 0], [10, 10]])


def test_a_missing_or_binary_yolo_label_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_yolo_shapes(tmp_path / "missing.txt", NAMES, 10, 10)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DecodeError, match="not a text file"):
        read_yolo_shapes(binary, NAMES, 10, 10)
