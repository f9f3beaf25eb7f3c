"""cai-ray's own PNG codec: the PNGs it writes (samples, masks, DAAD pattern crops), and a fast
reader for them.

Why not Pillow's or OpenCV's: encoding is the largest cost of a CAI sample, and deflate by
ISA-L is several times faster than zlib's level 1 (figures in docs/BENCHMARKS.md, "The injection
hot path"); at level 0, the only one of ISA-L's levels that is deterministic, the same pixels
give the same bytes in every process, as outputs must. Reading back the crops it wrote (one
layout: 8-bit grey or RGB, every row filtered "Up") needs no general decoder, and is faster
than OpenCV's on the crops of a DAAD (docs/BENCHMARKS.md, "A first read made cheap").

Any other PNG (another encoder's filters, bit depths, palettes, interlacing) is for a general
decoder: :func:`decode_own_png` says so by returning ``None``, after the checks that make a
damaged file :class:`DamagedPng` whoever wrote it (every chunk's CRC, the chunk layout).
"""

from __future__ import annotations

import struct

import numpy as np
from isal import isal_zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DEFLATE_LEVEL = 0
"""ISA-L's only deterministic level (see :func:`encode_png`)."""
_UP = 2  # PNG filter type "Up": each row is the row above plus its bytes, modulo 256


class DamagedPng(ValueError):
    """Not a whole PNG: no signature, truncated, a chunk's CRC wrong; the message says which."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", isal_zlib.crc32(kind + data))
    )


def encode_png(image: np.ndarray) -> bytes:
    """Lossless 8-bit PNG of an (M, N) grey or (M, N, 3) RGB uint8 image.

    Written directly (PNG filter "Up", then deflate by ISA-L at level 0): encoding is the
    largest cost of a CAI sample, and ISA-L's deflate is several times faster than zlib's
    level 1. Level 0, not 1: ISA-L's levels 1-3 are not deterministic (the same pixels
    compressed in two processes can give two streams), level 0 resets all its state on every
    call; its files are somewhat larger than level 1's (figures in docs/BENCHMARKS.md, "ISA-L's
    level 1 is not deterministic"). The pixels are the same whichever deflate wrote them, the
    file bytes are not.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"encode_png needs a grey or RGB uint8 image, got {image.dtype} {image.shape}"
        )
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"encode_png needs 1 or 3 channels, got {channels}")
    rows = image.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = _UP  # each row minus the row above, modulo 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    colour_type = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        [
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", isal_zlib.compress(filtered.tobytes(), _DEFLATE_LEVEL)),
            _chunk(b"IEND", b""),
        ]
    )


def _chunks(data: bytes) -> list[tuple[bytes, memoryview]]:
    """(type, payload) of every chunk up to IEND, each one's CRC checked; raises
    :class:`DamagedPng` where the file is not a whole PNG."""
    if data[:8] != _SIGNATURE:
        raise DamagedPng("no PNG signature")
    view = memoryview(data)
    chunks: list[tuple[bytes, memoryview]] = []
    at = 8
    while True:
        if at + 12 > len(data):
            raise DamagedPng(f"truncated ({len(data)} bytes, no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            raise DamagedPng(f"truncated ({len(data)} bytes, a {kind!r} chunk of {length})")
        (crc,) = struct.unpack_from(">I", data, end)
        if isal_zlib.crc32(view[at + 4 : end]) != crc:
            raise DamagedPng(f"wrong CRC in a {kind!r} chunk at byte {at}")
        chunks.append((kind, view[at + 8 : end]))
        if kind == b"IEND":
            return chunks
        at = end + 4


def decode_own_png(data: bytes) -> np.ndarray | None:
    """The (M, N) grey or (M, N, 3) RGB uint8 pixels of a PNG in :func:`encode_png`'s layout
    (8-bit grey or RGB, not interlaced, every row filtered "Up"; whoever wrote it), its stream
    inflated by ISA-L and the filter undone by one running sum down the rows (modulo 256, as
    uint8 wraps). ``None`` for a whole PNG in any other
    layout, or whose stream does not give its pixels, to be read by a general decoder; raises
    :class:`DamagedPng` for a file that is not a whole PNG (see :func:`_chunks`)."""
    chunks = _chunks(data)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        return None
    width, height, depth, colour, *methods = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or colour not in (0, 2) or any(methods):
        return None
    channels = 1 if colour == 0 else 3
    try:
        raw = isal_zlib.decompress(b"".join(chunk for kind, chunk in chunks if kind == b"IDAT"))
    except isal_zlib.error:  # type: ignore[misc]  # (isal's stubs declare an instance)
        return None
    if len(raw) != height * (1 + width * channels):
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    if not (rows[:, 0] == _UP).all():
        return None
    image = np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8)
    return image.reshape(height, width, 3) if channels == 3 else image
