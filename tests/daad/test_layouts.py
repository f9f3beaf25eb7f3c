"""The layout registry: every registered layout is one file of ``cai_ray/daad/layouts`` with its
own reader, and a spec naming a layout that is not registered is refused when it is read, with
the known layouts named (it never falls through to another layout's reader)."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from cai_ray.daad.builders import DaadSpec
from cai_ray.daad.layouts.base import SourceBase
from cai_ray.daad.layouts.registry import LAYOUTS
from cai_ray.io.settings import ConfigError
from tests.conftest import REPO

LAYOUT_FILES = REPO / "cai_ray" / "daad" / "layouts"
NOT_LAYOUTS = {"__init__", "base", "registry"}


def test_each_layout_is_one_file_with_its_own_reader():
    files = {p.stem for p in LAYOUT_FILES.glob("*.py")} - NOT_LAYOUTS
    assert files == set(LAYOUTS)
    for name, model in LAYOUTS.items():
        assert model.__module__ == f"cai_ray.daad.layouts.{name}"
        assert issubclass(model, SourceBase)
        assert model.candidates is not SourceBase.candidates, f"{name} reads nothing"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_layout_file_defines_one_source_model_the_registered_one(name):
    """A source model added to a layout file but not to the registry would never be read."""
    module = importlib.import_module(f"cai_ray.daad.layouts.{name}")
    defined = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, SourceBase) and v is not SourceBase
    ]
    assert defined == [LAYOUTS[name]]


def _spec(layout: str) -> dict:
    return {"name": "x", "sources": [{"layout": layout, "domain": "d", "license": "l"}]}


def test_an_unknown_layout_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValidationError) as refused:
        DaadSpec.model_validate(_spec("pascal_voc"))
    message = str(refused.value)
    assert "'pascal_voc'" in message
    assert all(f"'{name}'" in message for name in LAYOUTS)
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nsources:\n  - {layout: pascal_voc, domain: d, license: l}\n")
    with pytest.raises(ConfigError, match=r"spec\.yaml:\n  sources\.0: .*'pascal_voc'.*'mvtec'"):
        DaadSpec.from_yaml(path)
