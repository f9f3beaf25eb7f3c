"""The closed vocabulary of anomaly classes a DAAD record may carry."""

from __future__ import annotations

from enum import StrEnum


class AnomalyClass(StrEnum):
    PITS = "pits"
    CRACK = "crack"
    HOLE = "hole"
    STAIN = "stain"
    SCRATCH = "scratch"
    ORIFICE = "orifice"
    IMPURITY = "impurity"
    ABRASION = "abrasion"
