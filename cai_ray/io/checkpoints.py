"""Training checkpoints (the detector's and the CDM's training state) written to and read from
any storage location.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (weights, optimiser state,
epoch, losses, the config as JSON). It is read with ``weights_only=True``: unpickling runs no
code from the file, so a checkpoint from a shared bucket is as safe to load as a shard. A file
that is not such a checkpoint (cut short by a crash, overwritten, or holding other objects) is
refused with :class:`CheckpointError`, which names its URL.

torch is imported only when a checkpoint is read or written: the rest of ``cai_ray.io`` runs
in a synthesis worker without it.
"""

from __future__ import annotations

import io
from typing import Any

from cai_ray.io import storage


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint; the message names it and why."""


def write_checkpoint(url: str, state: dict[str, Any]) -> None:
    """``state`` saved by ``torch.save`` to ``url``, atomically (a reader sees the previous
    checkpoint or this one whole)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write_bytes_atomic(url, buffer.getvalue())


def read_checkpoint(url: str) -> dict[str, Any]:
    """The checkpoint at ``url``, its tensors on the CPU whatever device wrote it. Raises
    ``FileNotFoundError`` when there is none, :class:`CheckpointError` when the file is not a
    checkpoint (truncated, corrupt, or holding objects other than tensors and plain data)."""
    import torch

    data = storage.read_bytes(url)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # on bytes that are no checkpoint, torch's parsers raise anything
        raise CheckpointError(
            f"{url} is not a readable checkpoint ({len(data)} bytes: cut short, corrupt, or "
            f"holding objects other than tensors and plain data): {_reason(exc)}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{url} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _reason(exc: BaseException) -> str:
    """The line of torch's (long) message that says what was wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    unsupported = [line for line in lines if "Unsupported global" in line]
    first = (unsupported or lines or [type(exc).__name__])[0]
    return first.split(". ")[0]
