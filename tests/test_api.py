"""The Python API: docs/API.md's example runs as written, and the API makes the job's samples."""

import json

import numpy as np
import pytest
import yaml

from cai_ray import api
from cai_ray.config import SynthConfig
from cai_ray.core.synthesis import Failure
from cai_ray.io.codecs import decode_image, decode_mask, load_image
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.synth import run_synth
from tests.conftest import DEMO
from tests.docs import code_blocks, doc_section, run_python


def test_the_docs_example_runs(tmp_path):
    example = code_blocks(doc_section("docs/API.md", "The Python API"), "python")[0]
    lines = run_python(example, tmp_path, timeout=300).splitlines()
    assert len(lines) == 10 and all(line.endswith(" pixels") for line in lines)
    assert (tmp_path / "out" / "demo-daad" / "daad.json").is_file()


MIXTURE = {
    "method": "mixture",
    "anomalies_per_target": 3,
    "components": [{"method": "cai", "weight": 1}, {"method": "cutpaste", "weight": 1}],
}


@pytest.mark.parametrize("synthesizer", [{"method": "cai"}, MIXTURE], ids=["cai", "mixture"])
def test_the_api_makes_the_jobs_samples(synthesizer, tmp_path, demo_daad):
    """A job (local executor) and the API on the same settings, seed and key: same bytes."""
    raw = {
        "synthesizer": synthesizer,
        "seed": 3,
        "inputs": {"paths": [str(DEMO / "normal")], "limit": 2},
        "daad": {"path": demo_daad},
        "cai": {"quotas": {"large": 1, "medium": 1, "small": 1}, "blend": "mixed"},
        "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
        "resources": {"executor": "local"},
    }
    run_synth(SynthConfig.model_validate(raw), show_progress=False)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    synth = api.synthesizer_from_config(config_file)
    shard = (tmp_path / "out" / "shard-000000.tar").read_bytes()
    samples = {json.loads(f["json"])["target"]: [] for _, f in iter_tar(shard)}
    for _, files in iter_tar(shard):
        samples[json.loads(files["json"])["target"]].append(files)
    assert len(samples) == 2
    for target, stored in samples.items():
        tile = load_image(str(DEMO / "normal" / target), 256, "grey")
        made = synth(tile, key=target)
        assert len(made) == len(stored) == 3
        for anomaly, files in zip(made, stored, strict=True):
            assert np.array_equal(anomaly.image, decode_image(files["png"], "grey"))
            assert np.array_equal(anomaly.mask > 0, decode_mask(files["mask.png"]))
            meta = json.loads(files["json"])
            assert {k: meta[k] for k in anomaly.provenance} == anomaly.provenance


def test_keyword_settings_are_validated_like_a_config():
    with pytest.raises(ValueError, match="unknown synthesizer 'glue'"):
        api.synthesizer("glue")
    with pytest.raises(ValueError, match="needs a DAAD"):
        api.synthesizer("cai")
    with pytest.raises(ValueError, match="variant"):
        api.synthesizer("cutpaste", variant="zigzag")
    synth = api.synthesizer("cutpaste", anomalies_per_target=3)
    with pytest.raises(ValueError, match="uint8"):
        synth(np.zeros((32, 32), np.float32), key="k")
    results = synth(np.zeros((64, 64), np.uint8), key="k")
    assert len(results) == 3  # a flat image: CutPaste changes nothing visible, but masks it
    assert all(not isinstance(r, Failure) for r in results)


def test_indices_pick_samples_of_the_full_set(tile_targets):
    """A sample asked for by number is the one the full set has at that number."""
    synth = api.synthesizer("cutpaste", anomalies_per_target=4, seed=2)
    every = synth(tile_targets[0], key="tile")
    picked = synth(tile_targets[0], key="tile", indices=[3, 1])
    for anomaly, number in zip(picked, [3, 1], strict=True):
        assert np.array_equal(anomaly.image, every[number].image)
        assert anomaly.provenance == every[number].provenance
    assert picked[0].provenance["sample_index"] == 3
    with pytest.raises(ValueError, match="outside"):
        synth(tile_targets[0], key="tile", indices=[4])
