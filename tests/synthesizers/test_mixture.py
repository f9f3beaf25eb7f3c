"""Mixtures: the component of each sample is a pure function of (seed, key, index) that follows
the weights, a component's sample is the one it makes alone, bad mixtures are refused with the
config, and a mixture runs as a job that verifies, its manifest counting each component."""

import json
import pickle
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from cai_ray import api
from cai_ray.cli import main
from cai_ray.config import SynthConfig
from cai_ray.core.cai import CAIParams
from cai_ray.core.synthesis import Failure
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from cai_ray.synthesizers.base import BuildContext
from cai_ray.synthesizers.mixture import Mixture
from cai_ray.synthesizers.registry import METHODS, tuned
from tests.conftest import DEMO

CAI_AND_FPI = [{"method": "cai", "weight": 0.7}, {"method": "fpi", "weight": 0.3}]


def _mixture(components: list[dict], **settings) -> Mixture:
    chosen = TypeAdapter(METHODS["mixture"]).validate_python(
        {"method": "mixture", "components": components, **settings}
    )
    return tuned(chosen, CAIParams()).build(BuildContext(None, 64, "grey"))


def _tiles() -> list[np.ndarray]:
    files = sorted((DEMO / "normal").glob("*.jpg"))[:3]
    return [cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (256, 256)) for f in files]


def test_the_component_follows_the_weights_and_only_seed_key_and_index():
    components = [
        {"method": "cutpaste", "weight": 7},
        {"method": "cutpaste", "variant": "scar", "weight": 3, "name": "scar"},
    ]
    mixture = _mixture(components)
    drawn = [mixture.component_of(0, "tile", k) for k in range(4000)]
    assert abs(Counter(drawn)[0] / 4000 - 0.7) < 0.03
    again = _mixture(components)
    assert [again.component_of(0, "tile", k) for k in reversed(range(4000))] == drawn[::-1]
    assert [mixture.component_of(1, "tile", k) for k in range(4000)] != drawn
    assert [mixture.component_of(0, "other", k) for k in range(4000)] != drawn
    # a weight of 1 against 1000: still drawn, rarely
    rare = _mixture([{"method": "cutpaste", "weight": 1000}, {"method": "fpi", "weight": 1}])
    assert 0 < Counter(rare.component_of(0, "t", k) for k in range(20000))[1] < 60


def test_a_components_sample_is_the_one_it_makes_alone(demo_daad):
    """Sample k of the mixture, made by component c, is c's sample k alone: same image, mask
    and provenance, plus the component's name; whichever indices are asked, in any order."""
    tiles = _tiles()
    donors = [(tile, np.ones(tile.shape, bool)) for tile in tiles[1:]]
    mixture = api.synthesizer("mixture", daad=demo_daad, seed=4, components=CAI_AND_FPI)
    alone = {
        "cai": api.synthesizer("cai", daad=demo_daad, seed=4),
        "fpi": api.synthesizer("fpi", seed=4),
    }
    made = mixture(tiles[0], key="tile", donors=donors)
    by_alone = {name: synth(tiles[0], key="tile", donors=donors) for name, synth in alone.items()}
    assert len(made) == 10
    components = Counter()
    for k, sample in enumerate(made):
        assert not isinstance(sample, Failure), sample
        component = sample.provenance["component"]
        components[component] += 1
        own = by_alone[component][k]
        assert np.array_equal(sample.image, own.image) and np.array_equal(sample.mask, own.mask)
        assert sample.provenance == {**own.provenance, "component": component}
    assert set(components) == {"cai", "fpi"}
    # CAI's sample k keeps its quota scale past the total: 4 large, 3 medium, 3 small, repeated
    scales = [CAIParams().quotas.scale_at(k).label for k in range(12)]
    assert scales[:4] == ["large"] * 4 and scales[10:] == ["large", "large"]
    synthesizer = mixture._synthesizer(tiles[0])
    some = synthesizer.synthesize(
        tiles[0], np.ones(tiles[0].shape, bool), seed=4, target_key="tile", donors=donors,
        indices=[7, 2],
    )  # fmt: skip
    for k, sample in zip([7, 2], some, strict=True):
        assert np.array_equal(sample.image, made[k].image)


@pytest.mark.parametrize(
    ("components", "error"),
    [
        ([], "at least 1 item"),
        ([{"method": "mixture", "weight": 1, "components": CAI_AND_FPI}], "not mixtures"),
        ([{"method": "cai", "weight": 0}], "greater than 0"),
        ([{"method": "cai"}], "weight\n  Field required"),
        ([{"method": "cai", "weight": 1}, {"method": "cai", "weight": 1}], "distinct 'name'"),
        ([{"method": "fpi", "weight": 1, "blend": "mixed"}], "blend\n  Extra inputs"),
    ],
)
def test_a_bad_mixture_is_refused_with_the_config(components, error):
    raw = {
        "inputs": {"paths": ["normals"]},
        "daad": {"path": "daad"},
        "synthesizer": {"method": "mixture", "components": components},
        "output": {"path": "out"},
    }
    with pytest.raises(ValidationError, match=error):
        SynthConfig.model_validate(raw)


def test_a_mixture_needs_a_daad_only_with_a_component_that_does():
    raw = {"inputs": {"paths": ["normals"]}, "output": {"path": "out"}}
    baselines = [{"method": "cutpaste", "weight": 1}, {"method": "fpi", "weight": 1}]
    SynthConfig.model_validate(
        {**raw, "synthesizer": {"method": "mixture", "components": baselines}}
    )
    with pytest.raises(ValidationError, match="needs a 'daad' section"):
        SynthConfig.model_validate(
            {**raw, "synthesizer": {"method": "mixture", "components": CAI_AND_FPI}}
        )
    with pytest.raises(ValueError, match="needs a DAAD"):
        api.synthesizer("mixture", components=CAI_AND_FPI)


def _job(demo_daad: str, out: Path) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "seed": 2,
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 5},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 2, "medium": 1, "small": 1}},
            "synthesizer": {
                "method": "mixture",
                "anomalies_per_target": 8,
                "components": [
                    {"method": "cai", "weight": 2},
                    {"method": "fpi", "weight": 1},
                    {"method": "cutpaste", "variant": "scar", "weight": 1, "name": "scar"},
                ],
            },
            "output": {
                "path": str(out),
                "targets_per_shard": 3,
                "include_normal": True,
                "preview_samples": 0,
            },
            "resources": {"executor": "local"},
        }
    )


def test_a_mixture_runs_as_a_job_that_verifies(demo_daad, tmp_path):
    config = _job(demo_daad, tmp_path / "out")
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and verify_output(config.output.path).ok
    assert main(["verify", config.output.path]) == 0
    counts = manifest["counts"]
    made = manifest["samples"] - counts["method"]["none"]
    assert made + len(manifest["failed_samples"]) == 5 * 8
    assert set(counts["component"]) == {"cai", "fpi", "scar"}
    assert sum(counts["component"].values()) == made
    assert counts["method"]["fpi"] == counts["component"]["fpi"]
    assert counts["method"]["cutpaste-scar"] == counts["component"]["scar"]
    by_component = Counter()
    for shard in sorted(Path(config.output.path).glob("shard-*.tar")):
        for _, files in iter_tar(shard.read_bytes()):
            meta = json.loads(files["json"])
            if meta["label"] == 1:
                by_component[meta["component"]] += 1
                expected = {"cai": "cai-normal", "fpi": "fpi", "scar": "cutpaste-scar"}
                assert meta["method"] == expected[meta["component"]]
    assert by_component == counts["component"]
    assert pickle.loads(pickle.dumps(config)) == config  # as Ray ships it to its actors
    # the same job again: the same bytes
    run_synth(_job(demo_daad, tmp_path / "again"), show_progress=False)
    for shard in sorted(Path(config.output.path).glob("shard-*.tar")):
        assert shard.read_bytes() == (tmp_path / "again" / shard.name).read_bytes()


def test_the_job_hooks_ask_every_component():
    """Workers' paths, the files a resume checks and the label floor come from the components."""
    textures = ["data/demo/defects/MT_Crack/Imgs/*.jpg"]
    chosen = TypeAdapter(METHODS["mixture"]).validate_python(
        {
            "method": "mixture",
            "components": [
                {"method": "draem", "weight": 1, "textures": textures, "min_mask_pixels": 30},
                {"method": "cutpaste", "weight": 1, "min_mask_pixels": 20},
            ],
        }
    )
    draem = chosen.components[0].settings
    assert chosen.source_files() == draem.source_files()
    assert chosen.for_workers().components[0].settings == draem.for_workers()
    floors = [chosen.label_floor({"component": c}) for c in ("draem", "cutpaste")]
    assert floors == [30, 20]  # each sample's own component's
    assert not chosen.needs_daad


def test_a_components_failures_are_counted_by_its_stable_cause():
    """A failure names its component and keeps the component's cause, so the manifest counts
    failures by a handful of causes, not one per reason with its numbers."""
    impossible = {"min_mask_pixels": 10**6, "max_draws": 2}
    mixture = _mixture(
        [
            {"method": "cutpaste", "weight": 1, **impossible},
            {"method": "fpi", "weight": 1, **impossible},
        ]
    )
    tile = _tiles()[0]
    results = mixture.synthesize(tile, np.ones(tile.shape, bool), seed=0, target_key="t")
    assert results and all(isinstance(r, Failure) for r in results)  # FPI: no donors
    assert {r.counted_as for r in results} == {
        "cutpaste: label mask below min_mask_pixels",
        "fpi: FPI needs another normal image in the same shard to interpolate with",
    }
    assert all(r.reason.startswith(("cutpaste: ", "fpi: ")) for r in results)


def test_the_cai_section_reaches_only_the_methods_it_tunes():
    """The job gives its ``cai`` section to CAI (here a mixture's component), whose count
    follows the section's quotas; the baseline beside it keeps its own settings, untouched."""
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": ["x"]},
            "output": {"path": "o"},
            "daad": {"path": "d"},
            "cai": {"quotas": {"large": 1, "medium": 2, "small": 0}},
            "synthesizer": {"method": "mixture", "components": CAI_AND_FPI},
        }
    )
    cai, fpi = (c.settings for c in config.method_settings.components)
    assert cai.cai == config.cai and cai.anomaly_count() == 3
    shipped = pickle.loads(pickle.dumps(config.method_settings))  # as Ray hands it to actors
    assert shipped.components[0].settings.cai == config.cai
    assert fpi is config.synthesizer.components[1].settings
    assert not hasattr(fpi, "cai")
    with pytest.raises(RuntimeError, match="not given the job's cai section"):
        config.synthesizer.components[0].settings.anomaly_count()
