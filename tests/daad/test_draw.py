"""How a job draws its patterns (``daad.draw``: records, classes or domains, composed with
``class_weights``) and which it leaves out (``daad.exclude_tags``, from the tags a DAAD spec's
source declares)."""

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from cai_ray import api
from cai_ray.config import SynthConfig, sample_shaping
from cai_ray.core.cai import draw_pattern, draw_weights
from cai_ray.core.synthesis import Failure
from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import PatternBank, iter_records, pattern_weights, prepare_daad
from cai_ray.daad.stats import daad_stats, format_stats
from cai_ray.pipeline.synth import run_synth
from cai_ray.synthesizers.base import BuildContext
from cai_ray.synthesizers.cai import daad_patterns
from cai_ray.synthesizers.cdm import CDMMethod
from tests.conftest import DEMO, older_daad

DRAWS = 4000
LICENSE = "welcome to use, please cite Huang et al. 2020"


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> str:
    """A DAAD of two domains of unequal size from the bundled defects: ``big`` has 5 cracks and
    4 holes, ``small`` 3 cracks (the frays), tagged ``foreign_object``."""
    spec = DaadSpec.model_validate(
        {
            "name": "two_domains",
            "records_per_shard": 5,
            "sources": [
                {"layout": "folder", "domain": "big", "license": LICENSE, "anomaly_class": "crack",
                 "images": "MT_Crack/Imgs", "image_glob": "*.jpg"},
                {"layout": "folder", "domain": "big", "license": LICENSE, "anomaly_class": "hole",
                 "images": "MT_Blowhole/Imgs", "image_glob": "*.jpg"},
                {"layout": "folder", "domain": "small", "license": LICENSE,
                 "anomaly_class": "crack", "images": "MT_Fray/Imgs", "image_glob": "*.jpg",
                 "tags": ["foreign_object"]},
            ],
        }
    )  # fmt: skip
    out = tmp_path_factory.mktemp("daad") / "two_domains"
    build_daad(spec, DEMO / "defects", str(out))
    return str(out)


def _shares(bank: PatternBank, weights: np.ndarray | None, of: np.ndarray) -> dict[str, float]:
    """The exact chance of each value of ``of`` (the bank's classes or domains) under
    ``weights``."""
    chances = np.ones(len(bank)) if weights is None else weights
    chances = chances / chances.sum()
    return {str(v): float(chances[of == v].sum()) for v in np.unique(of)}


def _drawn(bank: PatternBank, weights: np.ndarray | None, seed: int = 0) -> list[str]:
    """``DRAWS`` record ids drawn as CAI draws (every pattern eligible)."""
    rng = np.random.default_rng(seed)
    made = [draw_pattern(bank, None, weights, rng) for _ in range(DRAWS)]
    return [p.record_id for p in made if not isinstance(p, str)]


def _bank(daad: str, **settings) -> tuple[PatternBank, np.ndarray | None]:
    config = DaadConfig(path=daad, **settings)
    bank = PatternBank(
        daad,
        mode="grey",
        exclude_domains=config.exclude_domains,
        include_classes=config.drawn_classes(),
        exclude_tags=config.exclude_tags,
    )
    return bank, pattern_weights(bank, config)


def test_the_modes_share_the_draws_as_they_say():
    classes = np.array(["crack"] * 6 + ["hole"] * 2 + ["crack"] * 2)
    domains = np.array(["a"] * 8 + ["b"] * 2)
    assert draw_weights(classes, domains, "records") is None  # the draw of old: uniform

    def share(weights: np.ndarray, where: np.ndarray) -> float:
        return float(weights[where].sum() / weights.sum())

    balanced = draw_weights(classes, domains, "classes")
    assert share(balanced, classes == "hole") == pytest.approx(0.5)
    by_domain = draw_weights(classes, domains, "domains")
    assert share(by_domain, domains == "b") == pytest.approx(0.5)
    for weights in (balanced, by_domain):  # uniform within a group
        assert np.ptp(weights[classes == "hole"]) == 0
    # class weights set each class's share whatever the mode; 'classes' adds nothing to them
    explicit = {"crack": 3.0, "hole": 1.0}
    np.testing.assert_array_equal(
        draw_weights(classes, domains, "classes", explicit),
        draw_weights(classes, domains, "records", explicit),
    )
    weighted = draw_weights(classes, domains, "records", explicit)
    assert share(weighted, classes == "hole") == pytest.approx(0.25)
    assert share(weighted, domains == "b") == pytest.approx(0.75 * 2 / 8)  # crack by records
    # 'domains' under class weights: a class's share split evenly among the domains that have it
    split = draw_weights(classes, domains, "domains", explicit)
    assert share(split, classes == "hole") == pytest.approx(0.25)
    assert share(split, domains == "b") == pytest.approx(0.75 / 2)
    with pytest.raises(ValueError, match="unknown draw 'sources'"):
        draw_weights(classes, domains, "sources")


def test_draw_proportions_per_mode_on_the_demo_daad(demo_daad):
    """Demo: abrasion 12, crack 7, hole 4, stain 4 records, one domain."""
    bank, weights = _bank(demo_daad)
    assert weights is None
    by_class = dict(zip(*np.unique(bank.classes, return_counts=True), strict=True))
    assert by_class == {"abrasion": 12, "crack": 7, "hole": 4, "stain": 4}
    drawn = Counter(str(bank.classes[int(i)]) for i in _indices(bank, weights))
    assert abs(drawn["abrasion"] / DRAWS - 12 / 27) < 0.03  # records: a class's size counts

    bank, weights = _bank(demo_daad, draw="classes")
    assert _shares(bank, weights, bank.classes) == pytest.approx(dict.fromkeys(by_class, 0.25))
    drawn = Counter(str(bank.classes[int(i)]) for i in _indices(bank, weights))
    assert all(abs(count / DRAWS - 0.25) < 0.03 for count in drawn.values())
    # one domain: 'domains' is 'records'
    bank, weights = _bank(demo_daad, draw="domains")
    assert np.ptp(weights) == 0


def _indices(bank: PatternBank, weights: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Indices drawn as :func:`draw_pattern` draws them, without reading the patterns."""
    rng = np.random.default_rng(seed)
    if weights is None:
        return np.array([rng.integers(len(bank)) for _ in range(DRAWS)])
    p = weights / weights.sum()
    return np.array([rng.choice(len(bank), p=p) for _ in range(DRAWS)])


def test_draw_proportions_per_mode_on_two_domains_of_unequal_size(two_domains):
    """big: 5 cracks and 4 holes; small: 3 cracks."""
    expected = {
        # mode, class weights: (share of 'small', share of holes)
        ("records", None): (3 / 12, 4 / 12),
        ("classes", None): (0.5 * 3 / 8, 0.5),
        ("domains", None): (0.5, 0.5 * 4 / 9),
        ("records", (3, 1)): (0.75 * 3 / 8, 0.25),
        ("classes", (3, 1)): (0.75 * 3 / 8, 0.25),  # the weights win
        ("domains", (3, 1)): (0.75 / 2, 0.25),
    }
    for (draw, ratio), (small, holes) in expected.items():
        weights = None if ratio is None else {"crack": ratio[0], "hole": ratio[1]}
        bank, chances = _bank(two_domains, draw=draw, class_weights=weights)
        assert _shares(bank, chances, bank.domains)["small"] == pytest.approx(small), draw
        assert _shares(bank, chances, bank.classes)["hole"] == pytest.approx(holes), draw
        ids = _drawn(bank, chances)
        assert ids == _drawn(bank, chances)  # the same seed draws the same patterns
        assert ids != _drawn(bank, chances, seed=1)
        from_small = sum(record.startswith("small-") for record in ids) / len(ids)
        assert abs(from_small - small) < 0.03, (draw, ratio, from_small)


def test_a_mode_reaches_the_samples_through_the_api(two_domains, tile_targets):
    """Paste at the patterns' own size (no STM): every pattern fits every slot, so the draw
    alone decides which domain a sample's pattern comes from."""
    cai = {"stm": False, "blend": "paste", "quotas": {"large": 10, "medium": 0, "small": 0}}

    def share_of_small(draw: str) -> float:
        synth = api.synthesizer("cai", daad=two_domains, seed=0, draw=draw, cai=cai)
        domains = Counter(
            anomaly.provenance["source_domain"]
            for i, tile in enumerate(tile_targets)
            for anomaly in synth(tile, key=f"t{i}")
            if not isinstance(anomaly, Failure)
        )
        assert sum(domains.values()) >= 100
        return domains["small"] / sum(domains.values())

    assert share_of_small("records") < 0.4  # 0.25 expected
    assert share_of_small("domains") > 0.35  # 0.5 expected


def test_tags_reach_the_records_and_exclude_tags_leaves_them_out(two_domains):
    table = pq.read_table(Path(two_domains) / "records.parquet")
    tags = dict(zip(table["record_id"].to_pylist(), table["tags"].to_pylist(), strict=True))
    assert {key for key, value in tags.items() if value} == {
        key for key in tags if key.startswith("small-")
    }
    assert all(value in ([], ["foreign_object"]) for value in tags.values())
    labels = [label for label, _, _ in iter_records(two_domains)]
    assert {label.tags for label in labels} == {(), ("foreign_object",)}
    index = json.loads((Path(two_domains) / "daad.json").read_text())
    assert index["report"]["by_tag"] == {"foreign_object": 3}

    bank, _ = _bank(two_domains, exclude_tags=["foreign_object"])
    assert len(bank) == 9 and set(bank.domains) == {"big"}
    bank, weights = _bank(two_domains, exclude_tags=["foreign_object"], draw="domains")
    assert len(bank) == 9 and np.ptp(weights) == 0  # balanced over what is left

    stats = daad_stats(two_domains)
    assert stats["by_tag"] == {"foreign_object": 3} and stats["untagged"] == 9
    assert stats["by_tag_and_domain"] == {"foreign_object": {"small": 3}}
    text = format_stats(stats)
    assert "tag x domain" in text and "9 records untagged" in text


def test_filters_that_leave_nothing_say_which_took_what(two_domains, tmp_path):
    settings = {"exclude_domains": ["big"], "exclude_tags": ["foreign_object"]}
    with pytest.raises(ValueError) as info:
        prepare_daad(DaadConfig(path=two_domains, **settings))
    said = str(info.value)
    assert "no source patterns left" in said and "of its 12 records" in said
    assert "exclude_domains ['big'] took out 9" in said
    assert "exclude_tags ['foreign_object'] took out 3" in said
    with pytest.raises(ValueError, match="exclude_tags \\['foreign_object'\\] took out 3"):
        _bank(two_domains, **settings)
    # classes count too: holes only in 'big'
    with pytest.raises(ValueError, match="classes drawn \\['hole'\\] took out 3"):
        prepare_daad(
            DaadConfig(path=two_domains, exclude_domains=["big"], include_classes=["hole"])
        )
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 2},
            "daad": {"path": two_domains, **settings},
            "output": {"path": str(tmp_path / "out"), "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    with pytest.raises(ValueError, match="no source patterns left"):
        run_synth(config, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_an_old_daad_without_tags_still_reads(two_domains, tmp_path, caplog):
    """A format 4 DAAD (no tags column, no tags in its records' JSON) reads as before: no
    record tagged, so excluding a tag leaves nothing out, and a job is warned."""
    old = older_daad(two_domains, tmp_path / "v4", 4, ("tags",))
    bank, _ = _bank(str(old), exclude_tags=["foreign_object"])
    assert len(bank) == 12
    stats = daad_stats(str(old))
    assert stats["by_tag"] == {} and stats["untagged"] == 12
    assert "tags: none" in format_stats(stats)
    with caplog.at_level(logging.WARNING, logger="cai_ray.daad.shards"):
        prepare_daad(DaadConfig(path=str(old), exclude_tags=["foreign_object"]))
        prepare_daad(DaadConfig(path=two_domains, exclude_tags=["foreign_object"]))
        prepare_daad(DaadConfig(path=two_domains, exclude_tags=["foriegn_object"]))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "format 4, built before records carried tags: rebuild it" in warned[0]
    assert "['foriegn_object']" in warned[1] and "its tags are ['foreign_object']" in warned[1]


def test_an_untagged_record_keeps_the_bytes_of_before(demo_daad):
    """No ``tags`` key in an untagged record's JSON: the demo DAAD's shards are those of a
    cai-ray without tags (so are the samples, pinned in tests/pipeline)."""
    for label, _, _ in iter_records(demo_daad):
        assert label.tags == ()
    shard = next(Path(demo_daad).glob("daad-*.tar")).read_bytes()
    assert b'"tags"' not in shard


def test_settings_refuse_what_they_cannot_mean(tmp_path):
    with pytest.raises(ValidationError, match="draw"):
        DaadConfig(path="d", draw="sources")
    with pytest.raises(ValidationError, match="exclude_tags"):
        DaadConfig(path="d", exclude_tags=["Foreign Object"])
    source = {"layout": "folder", "domain": "x", "license": "l", "anomaly_class": "crack"}
    with pytest.raises(ValidationError, match="tags"):
        DaadSpec.model_validate(
            {"name": "n", "sources": [{**source, "images": "i", "tags": ["a-b"]}]}
        )


def test_new_settings_at_their_old_value_leave_a_jobs_identity_alone():
    """An output begun before ``draw`` and ``exclude_tags`` existed resumes: at ``records`` and
    ``[]`` they are not in the identity; another value is."""
    raw = {"inputs": {"paths": ["in"]}, "daad": {"path": "d"}, "output": {"path": "o"}}
    default = sample_shaping(SynthConfig.model_validate(raw).model_dump(mode="json"))
    assert "draw" not in default["daad"] and "exclude_tags" not in default["daad"]
    raw["daad"] |= {"draw": "classes", "exclude_tags": ["foreign_object"]}
    changed = sample_shaping(SynthConfig.model_validate(raw).model_dump(mode="json"))
    assert changed["daad"]["draw"] == "classes"
    assert changed["daad"]["exclude_tags"] == ["foreign_object"]


def test_the_cdms_masks_are_drawn_as_cais_patterns(two_domains):
    """The CDM's masks come from the same records with the same weights as CAI's patterns (of
    the classes it generates), and tags leave the same records out."""
    daad = DaadConfig(path=two_domains, draw="domains", exclude_tags=["foreign_object"])
    context = BuildContext(daad, 256, "grey")
    cdm_bank, cdm_weights = CDMMethod(checkpoint="unused")._mask_sources(
        context, {"crack": 0, "hole": 1}
    )
    cai_bank, cai_weights = daad_patterns(context, daad, daad.drawn_classes())
    assert len(cdm_bank) == len(cai_bank) == 9
    np.testing.assert_array_equal(cdm_bank.domains, cai_bank.domains)
    np.testing.assert_array_equal(cdm_weights, cai_weights)
    # a CDM that generates only cracks: balanced over the domains its cracks come from
    daad = DaadConfig(path=two_domains, draw="domains")
    context = BuildContext(daad, 256, "grey")
    bank, weights = CDMMethod(checkpoint="unused")._mask_sources(context, {"crack": 0})
    assert _shares(bank, weights, bank.domains) == pytest.approx({"big": 0.5, "small": 0.5})
