"""`daad stats`: counts by class, domain and scale, and near-duplicate images, on real data."""

import json
from pathlib import Path

import pytest

from cai_ray.daad.stats import daad_stats, format_stats
from tests.conftest import older_daad


def test_stats_count_every_record_and_find_the_tile_shot_at_three_exposures(demo_daad):
    stats = daad_stats(demo_daad)
    index = json.loads((Path(demo_daad) / "daad.json").read_text())
    assert stats["records"] == index["report"]["records"]
    assert stats["by_class"] == index["report"]["by_class"]
    for nested in ("by_class_and_scale", "by_domain_and_class"):
        assert sum(sum(row.values()) for row in stats[nested].values()) == stats["records"]
    assert stats["by_domain_and_class"]["magnetic_tile"] == stats["by_class"]
    dup = stats["near_duplicates"]
    stems = [sorted(Path(p).stem for p in group) for group in dup["listed"]]
    assert ["exp1_num_290998", "exp5_num_291077", "exp6_num_291134"] in stems
    assert dup["extra_copies"] == sum(len(group) - 1 for group in dup["listed"])
    assert dup["images"] == 20  # the bundled defect images, some split into several records

    text = format_stats(stats)
    assert "class x source scale" in text and "domain x class:" in text
    assert "exp1_num_290998.jpg = " in text
    hole_row = next(line for line in text.splitlines() if line.strip().startswith("hole "))
    assert hole_row.split()[-1] == str(stats["by_class"]["hole"])


def test_stats_on_an_older_daad_say_to_rebuild(demo_daad, tmp_path):
    old = tmp_path / "old"
    older_daad(demo_daad, old, 2)
    with pytest.raises(ValueError, match="format 2; daad stats needs 3.*rebuild it"):
        daad_stats(str(old))
