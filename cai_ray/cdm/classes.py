"""The anomaly classes a CDM learns, as class-embedding ids; torch-free, so the synthesis driver
can check a checkpoint's classes without the cdm extra."""

from __future__ import annotations

from cai_ray.daad.classes import AnomalyClass

CLASSES: tuple[AnomalyClass, ...] = tuple(AnomalyClass)
"""Class embedding ids: a class's position here."""


def class_id(name: str) -> int:
    return CLASSES.index(AnomalyClass(name))


def generated_classes(
    learnt: dict[str, int], requested: list[AnomalyClass] | None, checkpoint: str
) -> list[str]:
    """The classes to generate: ``requested``, or all the model learnt; a class it never saw
    (its embedding is untrained) is refused."""
    if not learnt:
        raise ValueError(f"the CDM at {checkpoint} learnt no anomaly class")
    wanted = [str(c) for c in requested] if requested else sorted(learnt)
    unknown = sorted(set(wanted) - set(learnt))
    if unknown:
        raise ValueError(
            f"the CDM at {checkpoint} never saw {', '.join(unknown)} (it learnt "
            f"{', '.join(sorted(learnt))}): train it on CAI output with those classes or "
            "drop them from synthesizer.classes"
        )
    return wanted
