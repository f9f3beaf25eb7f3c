"""The one place synthesizers are registered: a method is a settings model (its ``method``
name, its parameters, and the hooks of :class:`MethodSettings`) in a file of this package, listed
here. The job's config, stages and driver use only this union and these hooks."""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from cai_ray.core.cai import CAIParams
from cai_ray.synthesizers.base import MethodSettings
from cai_ray.synthesizers.cai import CAIMethod, TunedByCAI
from cai_ray.synthesizers.cdm import CDMMethod
from cai_ray.synthesizers.cutpaste import CutPasteMethod
from cai_ray.synthesizers.draem import DraemMethod
from cai_ray.synthesizers.fpi import FPIMethod
from cai_ray.synthesizers.glass import GlassMethod
from cai_ray.synthesizers.mixture import MixtureMethod, bind_components
from cai_ray.synthesizers.nsa import NSAMethod

ComponentMethods = (
    CAIMethod | CutPasteMethod | NSAMethod | DraemMethod | CDMMethod | FPIMethod | GlassMethod
)
"""The methods that make samples themselves: every registered one but the mixture."""

ComponentConfig = Annotated[ComponentMethods, Field(discriminator="method")]
"""A mixture's component: any of :data:`ComponentMethods`, chosen by ``method``."""
bind_components(ComponentConfig)

SynthesizerConfig = Annotated[ComponentMethods | MixtureMethod, Field(discriminator="method")]
"""The ``synthesizer:`` section: one of the registered methods, chosen by ``method``; a mixture
of the others."""

METHODS: dict[str, type[MethodSettings]] = {
    model.model_fields["method"].default: model
    for model in get_args(get_args(SynthesizerConfig)[0])
}
"""Each registered settings model by its ``method`` name."""


def default_method() -> CAIMethod:
    """CAI, the published method."""
    return CAIMethod()


def tuned(settings: MethodSettings, cai: CAIParams) -> MethodSettings:
    """``settings`` with the job's ``cai`` section given to the methods it tunes (CAI, the CDM,
    a mixture's components of these); any other method's settings as they are."""
    if isinstance(settings, TunedByCAI):
        return settings.tuned(cai)
    if isinstance(settings, MixtureMethod):
        return settings.with_components(lambda component: tuned(component, cai))
    return settings
