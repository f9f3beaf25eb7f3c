"""A small real filesystem for the out-of-space tests: a tmpfs mounted for one test, its size
set and changed with ``mount -o remount`` (mounting needs root, as CI runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
"""tmpfs allocates whole pages: a file of n bytes takes ``pages(n)``."""


def pages(size: int) -> int:
    """The bytes a file of ``size`` bytes takes on a tmpfs."""
    return -(-size // PAGE) * PAGE


class MountRefused(Exception):
    """This machine does not let the tests mount a filesystem (not root, or no ``mount``)."""


class SmallDisk:
    """A tmpfs mounted at ``path``; :meth:`unmount` it in a ``finally``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def mount(cls, path: Path, size: int) -> SmallDisk:
        """A tmpfs of ``size`` bytes at ``path`` (made); :class:`MountRefused` where mounting is
        not permitted."""
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            raise MountRefused(f"mounting a tmpfs at {path} needs root (euid {os.geteuid()})")
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        return cls(path)

    def remount(self, **options: int) -> None:
        """Change the mount's options, e.g. ``size`` (bytes, rounded up to pages) or
        ``nr_inodes``; tmpfs refuses a size below what its files take."""
        listed = ",".join(f"{name}={value}" for name, value in options.items())
        _mount("-o", f"remount,{listed}", str(self.path))

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def unmount(self) -> None:
        """Unmount, lazily if a process (a Ray worker of a failed job) still holds a file."""
        if subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "--lazy", str(self.path)], check=True, timeout=30)


def _mount(*args: str) -> None:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise MountRefused(f"no mount command: {exc}") from exc
    if done.returncode:
        raise MountRefused(f"mount {' '.join(args)}: {done.stderr.strip()}")
