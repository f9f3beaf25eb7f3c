"""The shipped DAAD spec tags cotton's foreign objects, and a job can leave them out."""

from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import PatternBank, pattern_weights
from cai_ray.daad.stats import daad_stats
from tests.conftest import REPO


def test_the_shared_data_spec_tags_cottons_foreign_objects(shared_data, tmp_path):
    """Built from the shipped spec's cotton and CrackForest sources (a quick part of it)."""
    spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "shared_data.yaml")
    tagged = {source.domain for source in spec.sources if source.tags}
    assert tagged == {"cotton_impurity"}
    part = spec.model_copy(
        update={
            "sources": [s for s in spec.sources if s.domain in ("cotton_impurity", "crackforest")]
        }
    )
    out = str(tmp_path / "daad")
    report = build_daad(part, shared_data, out)["report"]
    cotton = report["by_domain"]["cotton_impurity"]
    assert cotton > 141 and report["by_tag"] == {"foreign_object": cotton}
    stats = daad_stats(out)
    assert stats["by_tag_and_domain"] == {"foreign_object": {"cotton_impurity": cotton}}
    assert stats["untagged"] == report["by_domain"]["crackforest"] == 118

    surface = DaadConfig(path=out, exclude_tags=["foreign_object"], draw="domains")
    bank = PatternBank(out, mode="grey", exclude_tags=surface.exclude_tags)
    assert len(bank) == 118 and set(bank.domains) == {"crackforest"}
    assert pattern_weights(bank, surface) is not None
