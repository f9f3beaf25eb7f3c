"""The benchmark scores each run at the scale its detector was trained at: with tiles, test
images are cut at the run's training data image_size (the shared synth settings', a row's own
override, or a ready-made output's) and resized to the detector's, as training resized them.
No Ray and no training here: the end-to-end run is in test_benchmark.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cai_ray.benchmark.config import BenchmarkConfig, SynthesizerEntry
from cai_ray.benchmark.run import RunTestSets
from cai_ray.detector.target_specs import load_target_spec
from cai_ray.detector.target_splits import load_target_split
from tests.conftest import DEMO

ROOT = Path(__file__).resolve().parents[1]


def _tests(tmp_path: Path, **changes) -> tuple[BenchmarkConfig, RunTestSets]:
    """The demo benchmark cut into 64 px tiles (its synth image_size) for a detector at 32."""
    raw = yaml.safe_load((ROOT / "configs/benchmark/demo.yaml").read_text())
    raw |= {"out": str(tmp_path), "target": str(ROOT / raw["target"]), "data_root": str(DEMO)}
    raw |= {"geometry": {"mode": "tile", "overlap": 8}, **changes}
    raw["detector"]["image_size"] = 32
    config = BenchmarkConfig.model_validate(raw)
    split = load_target_split(load_target_spec(config.target), config.data_root)
    return config, RunTestSets(config, split, str(tmp_path / "train-normals.txt"))


def test_the_shared_synth_image_size_cuts_the_test_tiles(tmp_path):
    config, tests = _tests(tmp_path)
    test = tests.of(config.synthesizers[1], 0)
    assert test is tests.shared and test.view_size == 64 and test.targets.shape[1:] == (32, 32)
    assert {view.box[2] - view.box[0] for views in test.views for view in views} == {64}


def test_a_row_that_sets_its_own_image_size_is_scored_at_it(tmp_path):
    rows = [{"name": "cai-normal"}, {"name": "large", "settings": {"image_size": 96}}]
    config, tests = _tests(tmp_path, synthesizers=rows)
    shared, large = (tests.of(entry, 0) for entry in config.synthesizers)
    assert shared is tests.shared and shared.view_size == 64
    assert large.view_size == 96 and large.targets.shape[1:] == (32, 32)
    assert large.items == shared.items  # the same images: a picked example is the same one
    assert tests.of(config.synthesizers[1], 1) is large  # each cut loaded once


def test_a_ready_made_output_is_scored_at_the_image_size_it_was_cut_at(tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    cut = {"seed": 0, "image_size": 48, "inputs": {"geometry": {"mode": "tile", "overlap": 8}}}
    (made / "job.json").write_text(json.dumps({"config": cut}))
    _, tests = _tests(tmp_path)
    test = tests.of(SynthesizerEntry(name="given", data=str(made)), 0)
    assert test.view_size == 48 and test.targets.shape[1:] == (32, 32)
    maps = test.stitch(test.target_masks.astype(np.float32))
    assert [m.shape for m in maps] == [m.shape for m in test.masks]


def test_whole_image_modes_score_one_test_set_at_the_detector_size(tmp_path):
    rows = [{"name": "cai-normal"}, {"name": "large", "settings": {"image_size": 96}}]
    config, tests = _tests(tmp_path, synthesizers=rows, geometry={"mode": "letterbox"})
    assert tests.of(config.synthesizers[1], 0) is tests.shared
    assert tests.shared.view_size == 32


def test_a_tile_overlap_must_fit_the_synth_image_size(tmp_path):
    with pytest.raises(ValueError, match="overlap 64 must be smaller than the tile 64"):
        _tests(tmp_path, geometry={"mode": "tile", "overlap": 64})
