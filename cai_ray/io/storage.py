"""Storage locations: local paths now, any fsspec URL (``s3://`` with the ``s3`` extra) alike.

Writes are atomic: a reader sees the old object or the whole new one, never a part. Locally the
bytes go to a temporary sibling that is fsynced and renamed over the target; on object stores a
single PUT is already atomic.
"""

from __future__ import annotations

import glob as globlib
import os
import tempfile
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path within it."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if not is_local(base) else str(Path(base, *parts))


def read_bytes(url: str) -> bytes:
    if is_local(url):
        return local_path(url).read_bytes()
    fs, path = filesystem(url)
    return bytes(fs.cat_file(path))


def exists(url: str) -> bool:
    if is_local(url):
        return local_path(url).exists()
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def makedirs(url: str) -> None:
    if is_local(url):
        local_path(url).mkdir(parents=True, exist_ok=True)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that ``url`` holds either its old content or all of ``data``."""
    if not is_local(url):
        fs, remote = filesystem(url)
        fs.pipe_file(remote, data)
        return
    path = local_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are for other readers too
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(url: str) -> int:
    """Delete temporary files that an interrupted local atomic write left in a folder."""
    if not is_local(url) or not local_path(url).is_dir():
        return 0
    stale = [p for p in local_path(url).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def list_files(url: str, suffix: str) -> list[str]:
    """Files directly under a directory URL whose names end with ``suffix``, sorted."""
    if is_local(url):
        directory = local_path(url)
        if not directory.is_dir():
            return []
        return sorted(str(p) for p in directory.iterdir() if p.name.endswith(suffix))
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    protocol = url.split("://", 1)[0]
    names = [p for p in fs.ls(path, detail=False) if p.endswith(suffix)]
    return sorted(f"{protocol}://{p}" for p in names)


def expand_image_sources(sources: list[str]) -> list[str]:
    """Image files named by each entry: a directory (searched recursively), a glob pattern, a
    ``.txt`` file listing one path per line, or a single image file. Local paths only for now.

    Raises ``FileNotFoundError`` naming every entry that matches nothing.
    """
    found: list[str] = []
    missing: list[str] = []
    for source in sources:
        matches: list[str]
        path = local_path(source)
        if path.is_dir():
            matches = [
                str(p)
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            ]
        elif path.is_file() and path.suffix.lower() == ".txt":
            lines = path.read_text().splitlines()
            matches = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        elif path.is_file():
            matches = [str(path)]
        else:
            matches = sorted(
                p for p in globlib.glob(str(path), recursive=True) if Path(p).is_file()
            )
        if not matches:
            missing.append(source)
        found.extend(matches)
    if missing:
        raise FileNotFoundError(f"no image files found for: {', '.join(missing)}")
    return found
