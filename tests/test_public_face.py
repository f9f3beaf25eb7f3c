"""The package's public face: ``cai_ray`` names the API (``__all__``), imports nothing heavy
until a name is used, and the examples in the public docstrings run as written."""

import doctest
import importlib
import subprocess
import sys

import pytest

import cai_ray
from tests.conftest import REPO

EXAMPLES = ["cai_ray", "cai_ray.api", "cai_ray.core.cai", "cai_ray.core.views"]
"""The modules whose docstrings carry examples (on the synthetic arrays they build)."""


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (output above)"


def test_every_public_name_is_the_object_of_its_module():
    from cai_ray import api
    from cai_ray.core import cai, synthesis, views
    from cai_ray.version import SAMPLES_VERSION, __version__

    homes = {
        "SAMPLES_VERSION": SAMPLES_VERSION,
        "__version__": __version__,
        "synthesizer": api.synthesizer,
        "synthesizer_from_config": api.synthesizer_from_config,
        "OnTheFly": api.OnTheFly,
        "Anomaly": api.Anomaly,
        "Failure": synthesis.Failure,
        "CAIInjector": cai.CAIInjector,
        "CAIParams": cai.CAIParams,
        "Quotas": cai.Quotas,
        "SourcePattern": cai.SourcePattern,
        "Geometry": views.Geometry,
    }
    assert sorted(cai_ray.__all__) == sorted(homes)
    for name, home in homes.items():
        assert getattr(cai_ray, name) is home, name
    assert set(cai_ray.__all__) <= set(dir(cai_ray))
    with pytest.raises(AttributeError, match="no attribute 'synthesiser'"):
        _ = cai_ray.synthesiser


def test_importing_the_package_stays_light():
    """``import cai_ray`` loads no third-party library (a Ray worker importing one module
    pays for nothing else); the first public name used loads its own."""
    probe = (
        "import sys, cai_ray\n"
        "heavy = ('numpy', 'cv2', 'pydantic', 'ray', 'torch', 'cai_ray.api', 'cai_ray.core')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "cai_ray.Geometry\n"
        "print('cai_ray.core.views' in sys.modules, 'cai_ray.api' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True False"], done.stdout
