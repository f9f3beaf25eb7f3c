"""WebDataset tar shards, written byte-for-byte reproducibly.

A sample is a key (no dots: readers split a member name at the first dot) and a dict from
extension to bytes. Members carry a fixed mtime, owner and mode, so a retried shard is identical.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator

Sample = tuple[str, dict[str, bytes]]


def build_tar(samples: Iterable[Sample]) -> bytes:
    """The bytes of a tar holding ``samples`` in the given order, extensions sorted."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key, files in samples:
            if "." in key or "/" in key or not key:
                raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/'")
            for ext in sorted(files):
                data = files[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sample_spans(data: bytes) -> list[tuple[str, int, int]]:
    """``(key, start, end)`` of each sample's members (headers included) in a tar: the byte range
    ``data[start:end]`` is itself a tar that :func:`iter_tar` reads, so one sample can be fetched
    with one ranged read."""
    spans: list[tuple[str, int, int]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            key = member.name.partition(".")[0]
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if spans and spans[-1][0] == key:
                spans[-1] = (key, spans[-1][1], end)
            else:
                spans.append((key, member.offset, end))
    return spans


def iter_tar(data: bytes) -> Iterator[Sample]:
    """Samples of a tar in order, grouping consecutive members by the key before the first dot."""
    current_key: str | None = None
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            extracted = archive.extractfile(member)
            if extracted is None:
                continue
            if key != current_key and current_key is not None:
                yield current_key, files
                files = {}
            current_key = key
            files[ext] = extracted.read()
    if current_key is not None:
        yield current_key, files
