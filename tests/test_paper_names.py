"""The settings the paper names by acronym (``stm``, ``ils``) are named for what they do
(``match_scale``, ``within_foreground``); the acronyms stay accepted, and a job's identity keeps
them, so an output begun before the rename resumes."""

import pytest
import yaml

from cai_ray import api
from cai_ray.config import load_config, sample_shaping
from cai_ray.core.cai import PAPER_NAMES
from cai_ray.io.settings import ConfigError
from tests.conftest import REPO


def _demo_with(tmp_path, name: str, cai: dict):
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["cai"] = {**raw["cai"], **cai}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_both_spellings_load_to_the_same_settings(tmp_path):
    named = _demo_with(tmp_path, "named", {"match_scale": False, "within_foreground": False})
    paper = _demo_with(tmp_path, "paper", {"stm": False, "ils": False})
    default = _demo_with(tmp_path, "default", {})
    assert named == paper
    assert not named.cai.match_scale and not named.cai.within_foreground
    assert default.cai.match_scale and default.cai.within_foreground
    mixed = _demo_with(tmp_path, "mixed", {"stm": False, "within_foreground": False})
    assert mixed.cai == named.cai


def test_a_setting_given_under_both_names_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cai.match_scale"):
        _demo_with(tmp_path, "both", {"stm": False, "match_scale": True})


def test_the_api_takes_both_spellings():
    named = api.synthesizer("cutpaste", cai={"match_scale": False, "within_foreground": False})
    paper = api.synthesizer("cutpaste", cai={"stm": False, "ils": False})
    assert named.cai == paper.cai
    assert not paper.cai.match_scale and not paper.cai.within_foreground


def test_a_jobs_identity_keeps_the_paper_names(tmp_path):
    """The identity a job records names the settings as outputs begun before the rename do,
    so the same settings under either spelling give the same identity as before."""
    for name, cai in (("named", {"match_scale": False}), ("paper", {"stm": False})):
        shaping = sample_shaping(_demo_with(tmp_path, name, cai).model_dump(mode="json"))["cai"]
        assert shaping["stm"] is False and shaping["ils"] is True, shaping
        assert not set(PAPER_NAMES) & set(shaping), shaping


def test_no_shipped_config_or_doc_uses_the_acronyms_as_keys():
    """Configs and docs show the new names (the acronyms are for old files)."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for path in [*sorted((REPO / "configs").rglob("*.yaml")), *docs]:
        text = path.read_text()
        for acronym in PAPER_NAMES.values():
            assert f"{acronym}:" not in text, (path, acronym)
