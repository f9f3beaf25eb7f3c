"""The package's layering: a module imports only from its own layer or the layers below it, and
no two modules import each other (directly or round a longer circle). Lazy imports inside
functions count too. The package's ``__init__`` is its public face, above every layer: it
re-exports the API, and no module imports it (``from cai_ray import faults`` imports
``cai_ray.faults``; a package's ``__init__`` runs before any module under it, whoever asks)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "cai_ray"

# Lowest first. A module's layer is the longest prefix listed here.
LAYERS: list[list[str]] = [
    ["cai_ray.version", "cai_ray.extras", "cai_ray.faults"],
    ["cai_ray.core"],
    ["cai_ray.io"],
    ["cai_ray.daad"],
    ["cai_ray.train"],
    ["cai_ray.cdm", "cai_ray.detector"],
    ["cai_ray.synthesizers"],
    ["cai_ray.config"],
    ["cai_ray.pipeline"],
    ["cai_ray.benchmark"],
    ["cai_ray.api", "cai_ray.cli"],
    ["cai_ray.integrations"],
]
PUBLIC_FACE = "cai_ray"
"""The package's ``__init__``: above every layer."""

# Libraries only an extra's adapter in cai_ray.integrations may import: the rest of cai_ray
# (and its base install and tests) runs without them.
ADAPTER_ONLY = {"torchvision", "anomalib"}

# What core may import besides the standard library and itself: numpy, OpenCV, SciPy; and, for
# the rembg foreground only, rembg and its PIL image type.
CORE_THIRD_PARTY = {"numpy", "cv2", "scipy", "rembg", "onnxruntime", "PIL"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    if module == PUBLIC_FACE:
        return len(LAYERS)
    best, depth = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = (package or _module_name(path)).split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            # "from cai_ray.io import storage" imports the module cai_ray.io.storage, and
            # names from cai_ray.io's __init__ only where some name is no module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                file = PACKAGE.parent / candidate.replace(".", "/")
                if file.with_suffix(".py").exists() or (file / "__init__.py").exists():
                    found.add(candidate)
                else:
                    found.add(base)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
OWN_IMPORTS = {
    name: {m for m in _imports(path) if m.split(".")[0] == "cai_ray" and m in MODULES}
    for name, path in MODULES.items()
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = [m for m in OWN_IMPORTS[module] if _layer(m) > _layer(module)]
    assert not upward, f"{module} (layer {_layer(module)}) imports from above: {upward}"


def test_no_import_cycles():
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for imported in sorted(OWN_IMPORTS[module] - {module}):
            if MODULES[imported].name == "__init__.py" and imported != PUBLIC_FACE:
                continue  # a package's __init__ below the face holds only its docstring
            if seen.get(imported) == 1:
                circle = path[path.index(imported) :] + [imported]
                raise AssertionError("import cycle: " + " -> ".join(circle))
            if imported not in seen:
                visit(imported, [*path, imported])
        seen[module] = 2

    for module in sorted(MODULES):
        if module not in seen:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("cai_ray.core")))
def test_core_is_numpy_only(module):
    import sys

    third_party = {
        m.split(".")[0]
        for m in _imports(MODULES[module])
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "cai_ray"
    }
    assert third_party <= CORE_THIRD_PARTY, f"{module} imports {third_party - CORE_THIRD_PARTY}"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith("cai_ray.integrations"))
)
def test_only_adapters_import_their_extras(module):
    imported = {m.split(".")[0] for m in _imports(MODULES[module])}
    assert not imported & ADAPTER_ONLY, f"{module} imports {imported & ADAPTER_ONLY}"


def test_developers_md_gives_the_same_order():
    """DEVELOPERS.md's list of layers is this file's, in this order (one order, everywhere)."""
    text = " ".join((REPO / "DEVELOPERS.md").read_text().split())
    listed = text.split("Layers, lowest first: ", 1)[1].split(" -> the package's `__init__`")[0]
    written = [re.findall(r"`([a-z_]+)`", layer) for layer in listed.split(" -> ")]
    expected = [[name.removeprefix("cai_ray.") for name in layer] for layer in LAYERS]
    assert [sorted(layer) for layer in written] == [sorted(layer) for layer in expected]
