"""What every synthesizer (CAI and the baselines) shares: the result types, the per-sample
random generator, and the interface the synthesis job calls.

Every draw for sample ``k`` of target ``key`` comes from :func:`sample_rng` ``(seed, key, k)``, so
a sample never depends on which worker made it or in what order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Failure:
    """A sample that could not be made; the job reports it instead of losing it silently."""

    reason: str
    attempts: int
    cause: str = ""
    """What the manifest counts failures by: the stable key of the reason (e.g. ``invisible``,
    without the numbers); empty: the reason itself."""

    @property
    def counted_as(self) -> str:
        return self.cause or self.reason


def reason_cause(reason: str) -> str:
    """The stable key of an attempt's reason: its text before the first ``": "`` (``invisible:
    0.03 of the pattern ...`` is counted as ``invisible``), all of it where there is none."""
    return reason.split(": ", 1)[0]


class PseudoAnomaly(Protocol):
    """One synthetic anomaly: the image, its label mask {0, 255}, and how it was made."""

    @property
    def image(self) -> np.ndarray: ...

    @property
    def mask(self) -> np.ndarray: ...

    @property
    def method(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    def details(self) -> dict[str, Any]:
        """JSON-ready provenance written into the sample's metadata."""
        ...


@dataclass(frozen=True)
class Patched:
    """A :class:`PseudoAnomaly` of a baseline synthesizer, its provenance in ``info``."""

    image: np.ndarray
    mask: np.ndarray
    method: str
    attempts: int
    info: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return dict(self.info)


Donor = tuple[np.ndarray, np.ndarray]
"""Another normal image of the same job with its foreground (NSA takes its patches from these)."""


class Synthesizer(Protocol):
    """Makes ``anomalies_per_target`` pseudo-anomalies of one normal image, or the samples of
    it at ``indices`` (a mixture asks each component for its share): sample ``k`` is the same
    either way."""

    method: str
    anomalies_per_target: int

    def synthesize(
        self,
        target: np.ndarray,
        foreground: np.ndarray,
        *,
        seed: int,
        target_key: str,
        donors: Sequence[Donor] = (),
        indices: Sequence[int] | None = None,
    ) -> Sequence[PseudoAnomaly | Failure]:
        """One result per index, in their order (None: ``range(anomalies_per_target)``)."""
        ...


@runtime_checkable
class BatchSynthesizer(Synthesizer, Protocol):
    """A synthesizer that makes many targets' samples at once (a GPU model fills its batches
    across targets); sample ``k`` of each target is the same as ``synthesize`` would make."""

    def synthesize_many(
        self, targets: Sequence[tuple[np.ndarray, np.ndarray, str]], *, seed: int
    ) -> Sequence[Sequence[PseudoAnomaly | Failure]]:
        """``targets`` are (image, foreground, key) triples; one result list per target."""
        ...


def sample_rng(seed: int, target_key: str, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of ``target_key``: a pure function of its arguments."""
    digest = hashlib.blake2b(target_key.encode("utf-8"), digest_size=16).digest()
    words = np.frombuffer(digest, dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words, index]))


def synthesize_each(
    attempt: Callable[[np.random.Generator], Patched | str],
    *,
    indices: Sequence[int],
    seed: int,
    target_key: str,
    max_draws: int,
    min_mask_pixels: int,
) -> list[Patched | Failure]:
    """The samples ``indices`` of one target, sample ``k`` drawn with :func:`sample_rng`
    ``(seed, target_key, k)``: ``attempt(rng)`` is retried until it gives a :class:`Patched`
    whose mask has at least ``min_mask_pixels`` pixels (a string result names why an attempt
    failed)."""
    results: list[Patched | Failure] = []
    for index in indices:
        rng = sample_rng(seed, target_key, index)
        reason = "unknown"
        for number in range(1, max_draws + 1):
            outcome = attempt(rng)
            if isinstance(outcome, str):
                reason = outcome
            elif np.count_nonzero(outcome.mask) < min_mask_pixels:
                reason = "label mask below min_mask_pixels"
            else:
                results.append(
                    Patched(outcome.image, outcome.mask, outcome.method, number, outcome.info)
                )
                break
        else:
            reason_given = f"gave up after {max_draws} draws: {reason}"
            results.append(Failure(reason_given, max_draws, reason_cause(reason)))
    return results
