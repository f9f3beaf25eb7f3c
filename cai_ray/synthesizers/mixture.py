"""A mixture of registered synthesizers: each sample made by one of its components, chosen by
weight, e.g. CAI for magnetic tile's blowholes and fray and FPI for its large uneven stains::

    synthesizer:
      method: mixture
      anomalies_per_target: 10
      components:
        - {method: cai, weight: 0.7}
        - {method: fpi, weight: 0.3, factor_bounds: [0.5, 1.0]}

Sample ``k`` of target ``key`` is made by the component that :meth:`Mixture.component_of`
draws from ``sample_rng(seed, "mixture:" + key, k)``, a stream of its own; the component then
makes its sample ``k`` as it would alone (its own ``sample_rng(seed, key, k)``), so a mixture's
sample is byte for byte the component's sample at that index. CAI's (and the CDM's) sample ``k``
keeps the scale its quotas give index ``k``, repeated past their total: with
``anomalies_per_target`` a multiple of the quota total, CAI's share keeps their proportions.
Each sample's JSON names its ``component``, beside the component's own ``method``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_serializer, model_validator

from cai_ray.core.synthesis import Donor, Failure, Patched, PseudoAnomaly, Synthesizer, sample_rng
from cai_ray.io.settings import Settings
from cai_ray.synthesizers.base import BuildContext, MethodSettings

if TYPE_CHECKING:  # mypy checks against the base; pydantic validates against the registry's
    ComponentSettings = MethodSettings  # union of every method but the mixture (bind_components)

_OWN_KEYS = ("weight", "name")


class MixtureComponent(Settings):
    """One component, written flat: a registered method's settings plus ``weight`` (and an
    optional ``name``, by default the method's)."""

    model_config = ConfigDict(frozen=True)
    weight: float = Field(gt=0, description="Relative share of the samples (any positive scale).")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="What samples' JSON and the manifest call it; None: its method.",
    )
    settings: ComponentSettings

    @model_validator(mode="before")
    @classmethod
    def _nest_the_settings(cls, data: Any) -> Any:
        """``{method: fpi, weight: 0.3, ...}`` -> weight and name, and the method's settings."""
        if not isinstance(data, dict) or "settings" in data:
            return data
        if data.get("method") == "mixture":
            raise ValueError("a mixture's components are registered methods, not mixtures")
        own = {key: data[key] for key in _OWN_KEYS if key in data}
        return {**own, "settings": {k: v for k, v in data.items() if k not in _OWN_KEYS}}

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        dumped = handler(self)
        return {**dumped.pop("settings"), **dumped}

    @property
    def label(self) -> str:
        return self.name or self.settings.method


class MixtureMethod(Settings, MethodSettings):
    """``synthesizer: {method: mixture, components: [...]}``: the registry completes these
    models with its methods but the mixture (:func:`bind_components`), so a component is any
    of them and never a mixture."""

    model_config = ConfigDict(frozen=True)
    method: Literal["mixture"] = "mixture"
    components: list[MixtureComponent] = Field(min_length=1)
    anomalies_per_target: int = Field(
        10, ge=1, description="Samples per target, whichever component makes each."
    )

    @model_validator(mode="after")
    def _names_differ(self) -> MixtureMethod:
        labels = [component.label for component in self.components]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                f"components {repeated} appear more than once: give each a distinct 'name'"
            )
        return self

    @property
    def needs_daad(self) -> bool:  # type: ignore[override]  # the others: a class constant
        return any(component.settings.needs_daad for component in self.components)

    def anomaly_count(self) -> int:
        return self.anomalies_per_target

    def label_floor(self, details: dict[str, Any]) -> int:
        """The floor of the component that made the sample (its JSON names it), so a sample
        is kept or given up as that component alone would."""
        [component] = [c for c in self.components if c.label == details["component"]]
        return component.settings.label_floor(details)

    def check(self, context: BuildContext) -> None:
        for component in self.components:
            component.settings.check(context)

    def source_files(self) -> list[str]:
        return [path for c in self.components for path in c.settings.source_files()]

    def for_workers(self) -> MixtureMethod:
        return self.with_components(lambda settings: settings.for_workers())

    def with_components(self, change: Callable[[Any], Any]) -> MixtureMethod:
        """This mixture with each component's settings replaced by ``change`` of them."""
        changed = [c.model_copy(update={"settings": change(c.settings)}) for c in self.components]
        return self.model_copy(update={"components": changed})

    def build(self, context: BuildContext) -> Mixture:
        return Mixture(
            [(c.label, c.weight, c.settings.build(context)) for c in self.components],
            self.anomalies_per_target,
        )


def bind_components(component_settings: Any) -> None:
    """Complete the models with ``component_settings``, the union of the methods a component
    may be (the registry's own list, which cannot be imported here: it lists the mixture)."""
    namespace = {"ComponentSettings": component_settings}
    MixtureComponent.model_rebuild(_types_namespace=namespace)
    MixtureMethod.model_rebuild(_types_namespace=namespace)


class Mixture:
    """Makes each sample with the component drawn for it (see the module's docstring)."""

    method = "mixture"

    def __init__(
        self, components: Sequence[tuple[str, float, Synthesizer]], anomalies_per_target: int
    ) -> None:
        self.labels = [label for label, _, _ in components]
        self.synthesizers = [synthesizer for _, _, synthesizer in components]
        weights = np.array([weight for _, weight, _ in components], np.float64)
        self.cumulative = np.cumsum(weights) / weights.sum()
        self.anomalies_per_target = anomalies_per_target

    def component_of(self, seed: int, target_key: str, index: int) -> int:
        """Which component makes sample ``index``: a pure function of its arguments, drawn from
        a stream apart from the components' own."""
        draw = sample_rng(seed, f"mixture:{target_key}", index).random()
        return min(int(np.searchsorted(self.cumulative, draw, side="right")), len(self.labels) - 1)

    def synthesize(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        *,
        seed: int,
        target_key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> list[PseudoAnomaly | Failure]:
        if indices is None:
            indices = range(self.anomalies_per_target)
        chosen = {k: self.component_of(seed, target_key, k) for k in indices}
        made: dict[int, PseudoAnomaly | Failure] = {}
        for number, (label, synthesizer) in enumerate(
            zip(self.labels, self.synthesizers, strict=True)
        ):
            share = [k for k in indices if chosen[k] == number]
            if not share:
                continue
            results = synthesizer.synthesize(
                target, foreground, seed=seed, target_key=target_key, donors=donors, indices=share
            )
            for k, result in zip(share, results, strict=True):
                made[k] = _named(result, label)
        return [made[k] for k in indices]


def _named(result: PseudoAnomaly | Failure, component: str) -> PseudoAnomaly | Failure:
    """The component's result, its JSON naming the component (a failure's reason too)."""
    if isinstance(result, Failure):
        return Failure(
            f"{component}: {result.reason}", result.attempts, f"{component}: {result.counted_as}"
        )
    info = {**result.details(), "component": component}
    return Patched(result.image, result.mask, result.method, result.attempts, info)
