"""cai-ray: Cross-domain Anomaly Injection at cluster scale.

The public face: what a Python user needs, by name. The names import their modules on first
use, so ``import cai_ray`` stays light (a Ray worker importing ``cai_ray.core`` pays for nothing
else), and this file sits above every other module in the layering (``tests/test_layers.py``).

>>> import cai_ray
>>> cai_ray.SAMPLES_VERSION
3
>>> synth = cai_ray.synthesizer("cutpaste", seed=0)
>>> synth.anomalies_per_target
10
"""

from __future__ import annotations

from cai_ray.version import SAMPLES_VERSION, __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms)
if TYPE_CHECKING:
    from typing import Any

    from cai_ray.api import Anomaly, OnTheFly, synthesizer, synthesizer_from_config
    from cai_ray.core.cai import CAIInjector, CAIParams, Quotas, SourcePattern
    from cai_ray.core.synthesis import Failure
    from cai_ray.core.views import Geometry

__all__ = [
    "SAMPLES_VERSION",
    "__version__",
    # the Python API: any registered synthesizer on numpy images (cai_ray.api)
    "synthesizer",
    "synthesizer_from_config",
    "OnTheFly",
    "Anomaly",
    "Failure",
    # the injector on its own, with its settings (cai_ray.core.cai)
    "CAIInjector",
    "CAIParams",
    "Quotas",
    "SourcePattern",
    # how an input image becomes targets (cai_ray.core.views)
    "Geometry",
]

_API = {"synthesizer", "synthesizer_from_config", "OnTheFly", "Anomaly"}
_INJECTOR = {"CAIInjector", "CAIParams", "Quotas", "SourcePattern"}


def __getattr__(name: str) -> Any:
    """A public name, its module imported on first use (then kept here)."""
    if name in _API:
        from cai_ray import api

        value = getattr(api, name)
    elif name in _INJECTOR:
        from cai_ray.core import cai

        value = getattr(cai, name)
    elif name == "Failure":
        from cai_ray.core.synthesis import Failure as value
    elif name == "Geometry":
        from cai_ray.core.views import Geometry as value
    else:
        raise AttributeError(f"module 'cai_ray' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
