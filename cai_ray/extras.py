"""Optional dependencies: which extra brings what, and one error that says how to install it.

The base install (``pip install -e .``) runs synthesis with CAI and the baselines on local files.
torch, diffusers, s3fs and rembg come with extras, imported only where a feature asks for them, so
a synthesis worker never loads torch.
"""

from __future__ import annotations

import importlib

#: The extra that brings each optional module (the first that has it).
EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "diffusers": "cdm",
    "matplotlib": "bench",
    "s3fs": "s3",
    "rembg": "rembg",
    "onnxruntime": "rembg",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def install_hint(extra: str) -> str:
    return f'pip install -e ".[{extra}]"'


def require(extra: str, modules: tuple[str, ...], purpose: str) -> None:
    """Import ``modules`` for ``purpose`` or raise :class:`MissingExtraError` naming ``extra``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"{purpose} needs {name}, which the base install leaves out: {install_hint(extra)}"
            ) from exc


def explain(error: ModuleNotFoundError) -> str:
    """The message for an optional module that was imported without :func:`require`."""
    top = (error.name or "").split(".")[0]
    if top in EXTRA_OF:
        return f"{top} is not installed; it comes with an extra: {install_hint(EXTRA_OF[top])}"
    return str(error)
