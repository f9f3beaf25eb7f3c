"""Storage locations: a local path or an object-store URL (``s3://bucket/prefix``), alike.

Credentials come from the standard AWS chain (``AWS_*`` variables, a profile, an instance role);
an S3-compatible store is reached through ``AWS_ENDPOINT_URL`` or :func:`configure`. Nothing here
ever takes or prints a secret. Object-store calls retry what botocore's standard mode retries
(throttling, resets, timeouts, 5xx) with a backoff whose total has a floor (:func:`backoff_s`):
a store that is down for less than :func:`retry_budget_s` is waited for. Then they fail with
:class:`StorageError` or ``FileNotFoundError`` naming the object. Each process counts the
retries it made (:func:`retries_made`): a job records them per shard.

Writes are atomic: a reader sees the old object or the whole new one, never a part. Locally the
bytes go to a temporary sibling that is fsynced and renamed over the target; on object stores an
upload becomes visible only once it is complete. A local write that finds its filesystem full
removes its temporary and raises :class:`OutOfSpaceError`, naming the file, the bytes it needed
and the bytes free.
"""

from __future__ import annotations

import errno
import glob as globlib
import os
import random
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from cai_ray.extras import require
from cai_ray.faults import fault_point

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

DEFAULT_REQUEST_ATTEMPTS = 10
DEFAULT_TIMEOUT_S = 30.0
BACKOFF_CAP_S = 20.0
"""The longest wait before one retry."""

_settings: dict[str, Any] = {
    "endpoint_url": None,
    "request_attempts": DEFAULT_REQUEST_ATTEMPTS,
    "timeout_s": DEFAULT_TIMEOUT_S,
}
In = TypeVar("In")
Out = TypeVar("Out")
_filesystems: dict[tuple[str, str | None, int, float], Any] = {}
if hasattr(os, "register_at_fork"):
    # fsspec's S3 filesystem refuses to work in a forked child (its event loop is the parent's):
    # a child, such as a DataLoader worker, makes its own
    os.register_at_fork(after_in_child=_filesystems.clear)


class StorageError(OSError):
    """An object-store operation that failed after retries; the message names the object."""


class OutOfSpaceError(OSError):
    """A local write found its filesystem full; the message names the file, the filesystem, the
    bytes needed and the bytes free. Nothing of the write is left behind."""


def backoff_s(retry: int, draw: float) -> float:
    """The wait before retry number ``retry`` (1: the first) for a ``draw`` in [0, 1): capped
    exponential backoff with equal jitter, half of ``min(2 ** (retry - 1), BACKOFF_CAP_S)``
    fixed and half random. botocore's own (full jitter, anywhere from 0) can spend all of a
    request's attempts in well under a second of a store's outage; this one always waits at
    least :func:`retry_budget_s`'s floor in all, and still spreads clients apart."""
    ceiling = min(2.0 ** (retry - 1), BACKOFF_CAP_S)
    return ceiling * (1 + draw) / 2


def retry_budget_s(request_attempts: int) -> tuple[float, float]:
    """The least and the most a request waits in all between its ``request_attempts``
    attempts: an outage of refused connections shorter than the least is outlasted (10
    attempts: 55.5 to 111 s)."""
    retries = range(1, request_attempts)
    return sum(backoff_s(n, 0.0) for n in retries), sum(backoff_s(n, 1.0) for n in retries)


_retried = 0
_retried_lock = threading.Lock()


def retries_made() -> int:
    """How many object-store requests this process has retried so far: each failed attempt
    that was tried again, once. Not counted: aiohttp's own immediate resend (once) of a GET,
    HEAD or PUT whose connection dropped, which botocore never sees."""
    return _retried


class _RetryPolicy:
    """botocore's ``needs-retry`` handler for the S3 clients made here: what botocore's standard
    mode retries, waited for as :func:`backoff_s` says, each retry counted. No retry quota:
    botocore's empties after some 100 retries per client (50 after timeouts), just when a
    store is down, and then fails every request at its first error; this process's few
    requests at a time retry with backoff instead."""

    def __init__(self, request_attempts: int) -> None:
        from botocore.retries.standard import RetryEventAdapter, StandardRetryConditions

        self._adapter = RetryEventAdapter()
        self._conditions = StandardRetryConditions(max_attempts=request_attempts)
        self._jitter = random.Random()  # not the global generator a caller may have seeded

    def __call__(self, **event: Any) -> float | None:
        """The seconds to wait before trying again, or None: no retry."""
        global _retried
        context = self._adapter.create_retry_context(**event)
        if not self._conditions.is_retryable(context):
            return None
        with _retried_lock:
            _retried += 1
        return backoff_s(context.attempt_number, self._jitter.random())


def configure(
    *,
    endpoint_url: str | None = None,
    request_attempts: int = DEFAULT_REQUEST_ATTEMPTS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Set the S3 endpoint for this process (``None``: the AWS chain's, e.g. AWS_ENDPOINT_URL),
    the attempts per request (throttling, resets, refused connections, timeouts and 5xx are
    retried with exponential backoff, :func:`backoff_s`: the default 10 attempts wait 55.5 to
    111 s in all, so a store down for under 55 s is outlasted and one that stays down fails the
    request within 2 minutes) and how long one attempt waits to connect or for an answer
    (``timeout_s``: an endpoint that accepts and never answers fails after about
    ``request_attempts * timeout_s`` plus the backoff), and drop cached connections so changed
    credentials take effect.

    Ray workers are separate processes: each stage calls this with the job's settings.
    """
    if request_attempts < 1:
        raise ValueError(f"request_attempts must be at least 1, got {request_attempts}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be above 0, got {timeout_s}")
    _settings["endpoint_url"] = endpoint_url
    _settings["request_attempts"] = request_attempts
    _settings["timeout_s"] = float(timeout_s)
    _filesystems.clear()  # credentials are read when a filesystem is made: re-read them too


def current_settings() -> dict[str, Any]:
    """What :func:`configure` was last given here: the keyword arguments that configure another
    process (a Ray task) alike."""
    return dict(_settings)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser()


def absolute(url: str) -> str:
    """``url`` with a local path made absolute. Ray workers run in other directories (each
    node unpacks the job's working dir for itself), so the driver resolves paths before it
    hands them out."""
    return url if not is_local(url) else os.path.abspath(local_path(url))


def _s3_filesystem(endpoint_url: str | None, request_attempts: int, timeout_s: float) -> Any:
    require("s3", ("s3fs",), "s3:// locations")
    import s3fs
    from aiobotocore.session import AioSession

    session = AioSession()
    session.register("needs-retry.s3", _RetryPolicy(request_attempts))
    client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    filesystem = s3fs.S3FileSystem(
        session=session,
        client_kwargs=client_kwargs,
        config_kwargs={
            # botocore's own retry handler stands aside (one attempt): _RetryPolicy decides
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "connect_timeout": timeout_s,
            "read_timeout": timeout_s,
        },
        use_listings_cache=False,  # other workers add objects: never trust a cached listing
        skip_instance_cache=True,
    )
    filesystem.retries = 1  # s3fs's own retry loop over botocore's would multiply the wait
    return filesystem


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path within it."""
    protocol, _, rest = url.partition("://")
    if protocol in ("s3", "s3a"):
        key = (
            protocol,
            _settings["endpoint_url"],
            _settings["request_attempts"],
            _settings["timeout_s"],
        )
        if key not in _filesystems:
            _filesystems[key] = _s3_filesystem(*key[1:])
        return _filesystems[key], rest
    import fsspec

    return fsspec.core.url_to_fs(url)


@contextmanager
def located(action: str, url: str) -> Iterator[tuple[Any, str]]:
    """The fsspec filesystem and path for ``url`` (local or object store: one code path), with
    failures turned into errors that name the location and, for a store, what to check."""
    try:
        yield filesystem(url)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"cannot {action} {url}: not found ({exc})") from exc
    except ImportError:
        raise
    except Exception as exc:  # botocore, aiohttp and s3fs raise many unrelated types
        if is_local(url):
            raise
        if isinstance(exc, PermissionError):
            raise StorageError(
                f"cannot {action} {url}: access denied ({exc}); check the credentials "
                "(AWS_* variables, profile or instance role) and the endpoint"
            ) from exc
        endpoint = _settings["endpoint_url"] or "the AWS chain's endpoint"
        attempts = _settings["request_attempts"]
        raise StorageError(
            f"cannot {action} {url} at {endpoint} (gave up after {attempts} attempts of up to "
            f"{_settings['timeout_s']:g} s each, with {retry_budget_s(attempts)[0]:g} s or more "
            f"of backoff): {type(exc).__name__}: {exc}"
        ) from exc


def ordered_map(
    function: Callable[[In], Out], items: Iterable[In], workers: int, depth: int
) -> Iterator[Out]:
    """``map(function, items)`` in order, at most ``depth`` results computed ahead by
    ``workers`` threads: bounded memory, and the same order whatever the thread count.
    Threads suffice: reading and decoding images release the GIL."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Out]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if not is_local(base) else str(Path(base, *parts))


def read_bytes(url: str) -> bytes:
    with located("read", url) as (fs, path):
        return bytes(fs.cat_file(path))


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of a file or object: one ranged GET on S3."""
    with located("read", url) as (fs, path):
        data = bytes(fs.cat_file(path, start=start, end=end))
    if len(data) != end - start:
        raise StorageError(f"{url} is shorter than expected: bytes {start}-{end} are not all there")
    return data


def exists(url: str) -> bool:
    with located("look up", url) as (fs, path):
        return bool(fs.exists(path))


def makedirs(url: str) -> None:
    """Create a local folder; object stores have no folders (nor a bucket made by accident)."""
    if is_local(url):
        path = local_path(url)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{url} is a file, not a folder: choose another path")
        path.mkdir(parents=True, exist_ok=True)


def write_bytes_atomic(url: str, data: bytes, *, fault: str | None = None) -> None:
    """Write ``data`` so that ``url`` holds either its old content or all of ``data``: an
    object-store upload is visible only once complete; a local file is written to a temporary
    sibling, fsynced and renamed over the target. ``fault``: the fault point
    (:mod:`cai_ray.faults`) met once the data is written but not yet in place."""
    if not is_local(url):
        if fault is not None:
            fault_point(fault)
        with located("write", url) as (fs, remote):
            fs.pipe_file(remote, data)
        return
    _replace_local(local_path(url), lambda handle: handle.write(data), len(data), fault)


def put_file_atomic(source: str, url: str) -> None:
    """Copy the local file ``source`` to ``url`` as :func:`write_bytes_atomic` writes bytes,
    streamed (a list of ten million inputs is not read into memory)."""
    if not is_local(url):
        with located("write", url) as (fs, remote):
            fs.put_file(source, remote)
        return

    def copy(handle: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle, 1 << 20)

    _replace_local(local_path(url), copy, os.path.getsize(source))


def get_file(url: str, dest: str) -> None:
    """Copy ``url`` (local or object store) to the local file ``dest``, streamed."""
    with located("read", url) as (fs, path):
        fs.get_file(path, dest)


TEMPORARY_SUFFIX = ".tmp"
"""A local atomic write fills ``.<name>.<8 random characters>.tmp`` beside ``<name>``."""


def _replace_local(
    path: Path,
    fill: Callable[[BinaryIO], object],
    size: int,
    fault: str | None = None,
    install: Callable[[str, Path], None] = os.replace,
) -> None:
    """Fill a temporary sibling of ``path`` with its ``size`` bytes, fsync it and ``install``
    it as ``path`` (rename it over ``path``): readers see the old file or the whole new one,
    never a part. The temporary never outlives the call; a full filesystem raises
    :class:`OutOfSpaceError`."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent
        )
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are for other readers too
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if fault is not None:
            fault_point(fault)
        install(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise _out_of_space(path, size, quota=exc.errno == errno.EDQUOT) from exc
        raise
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _out_of_space(path: Path, size: int, *, quota: bool = False) -> OutOfSpaceError:
    """The error for ``path`` not written for want of space (measured once its temporary is
    gone): its filesystem's mount point, the bytes needed and free (and inodes, if none is);
    with ``quota``, the user's disk quota ran out, whatever the filesystem has free."""
    folder = next(p for p in path.absolute().parents if p.exists())
    mount = next(p for p in (folder, *folder.parents) if os.path.ismount(p))
    stats = os.statvfs(folder)
    inodes = " and no free inode" if stats.f_files and not stats.f_favail else ""
    where = f"disk quota exceeded on {mount}" if quota else f"no space left on {mount}"
    return OutOfSpaceError(
        f"{where} writing {path}: {size:,} bytes needed, "
        f"{stats.f_bavail * stats.f_frsize:,} free{inodes}"
    )


def create_new(url: str, data: bytes) -> bool:
    """Write ``data`` to ``url`` only where nothing is there yet; True if this call wrote it.

    Locally exactly one of racing creators wins, and the file appears whole: a complete
    temporary sibling is hard-linked to the name (link(2) fails where the name exists: the
    exclusivity of O_EXCL without a moment where the file is empty). On an object store the
    upload is conditional (``If-None-Match: *``, which AWS S3, MinIO and SeaweedFS honour,
    after a look-up that spares the upload where the object exists); a store that ignores the
    condition overwrites instead, so a caller that must know who won reads back what it wrote
    (:mod:`cai_ray.pipeline.lease` does)."""
    if not is_local(url):
        with located("write", url) as (fs, remote):
            if fs.exists(remote):
                return False
            try:
                fs.pipe_file(remote, data, mode="create")
            except OSError as exc:
                if _precondition_failed(exc):
                    return False
                raise
        return True

    try:
        _replace_local(
            local_path(url), lambda handle: handle.write(data), len(data), install=os.link
        )
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.ENOSYS):
            raise
        return _create_exclusive(local_path(url), data)  # a filesystem without hard links
    return True


def _create_exclusive(path: Path, data: bytes) -> bool:
    """:func:`create_new` where a filesystem has no hard links (some FUSE and SMB mounts):
    ``O_EXCL`` is as exclusive, but a reader may meet the file for a moment empty."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs error is the store's 412 answer to a conditional request."""
    response = getattr(exc.__cause__, "response", None) or {}
    return bool(response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412)


def remove(url: str) -> None:
    """Delete a file or object; one that is not there is no error."""
    if is_local(url):
        local_path(url).unlink(missing_ok=True)
        return
    with located("remove", url) as (fs, remote):
        fs.rm_file(remote)  # S3 answers a delete of nothing with success


def remove_stale_temporaries(url: str, ours: Callable[[str], bool]) -> int:
    """Delete the temporary files that interrupted local atomic writes of files named as
    ``ours`` accepts left in a folder (``.<name>.<8 characters>.tmp``); other files, the
    temporaries of files not ours among them, are left alone."""
    if not is_local(url) or not local_path(url).is_dir():
        return 0
    stale = [
        path
        for path in local_path(url).glob(f".*{TEMPORARY_SUFFIX}")
        if path.is_file() and ours(_temporary_of(path.name))
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _temporary_of(name: str) -> str:
    """The name whose write ``name`` is the temporary of (mkstemp's characters hold no dot)."""
    return name[1 : -len(TEMPORARY_SUFFIX)].rpartition(".")[0] if name.startswith(".") else ""


def as_url(like: str, path: str) -> str:
    """A path that fsspec returned, in the form of ``like`` (with its protocol, if any)."""
    return path if is_local(like) else f"{like.split('://', 1)[0]}://{path}"


def list_files(url: str, suffix: str) -> list[str]:
    """Files directly under a folder or prefix whose names end with ``suffix``, sorted; none
    for a folder or prefix that does not exist (a missing bucket is an error)."""
    with located("list", url) as (fs, path):
        try:
            names = fs.ls(path.rstrip("/"), detail=False)
        except FileNotFoundError:
            if not is_local(url) and not fs.exists(path.split("/", 1)[0]):
                raise
            return []
    return sorted(as_url(url, name) for name in names if name.endswith(suffix))


def copy_folder(source: str, destination: str) -> int:
    """Copy every file under a local folder to ``destination`` (local or s3://), keeping
    relative paths; files already there with the same size are left alone (a re-run resumes).
    Returns the number of files written."""
    root = local_path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {source}")
    written = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        target = join(destination, *file.relative_to(root).parts)
        if exists(target) and _size(target) == file.stat().st_size:
            continue
        write_bytes_atomic(target, file.read_bytes())
        written += 1
    return written


def file_stamp(info: os.stat_result) -> str:
    """A local file's change stamp, ``size:mtime_ns``."""
    return f"{info.st_size}:{info.st_mtime_ns}"


def object_stamp(entry: dict) -> str:
    """An object's change stamp from its listing entry, ``size:tag`` (the ETag, or the
    modification time where the store gives none)."""
    tag = entry.get("ETag") or entry.get("LastModified") or entry.get("mtime")
    return f"{entry.get('size')}:{tag}"


def stamps(urls: list[str]) -> list[str]:
    """A change stamp per file, as rsync compares them: size and modification time (local:
    ``os.stat``; object stores: size and ETag from one listing per folder, not a request per
    object). ``"missing"`` for a file that is not there."""
    found: dict[str, str] = {}
    remote: dict[str, list[str]] = {}
    for url in urls:
        if is_local(url):
            try:
                info = local_path(url).stat()
            except FileNotFoundError:
                continue
            found[url] = file_stamp(info)
        else:
            remote.setdefault(url.rsplit("/", 1)[0], []).append(url)
    for folder, members in remote.items():
        with located("list", folder) as (fs, path):
            try:
                listing = {entry["name"]: entry for entry in fs.ls(path, detail=True)}
            except FileNotFoundError:
                listing = {}
        for url in members:
            entry = listing.get(url.split("://", 1)[1])
            if entry is not None:
                found[url] = object_stamp(entry)
    return [found.get(url, "missing") for url in urls]


def _size(url: str) -> int:
    with located("look up", url) as (fs, path):
        return int(fs.size(path))


def unusable_file(path: str, *, exists: bool | None = None) -> str | None:
    """Why a listed file cannot be an image input, from its name and, locally, its link alone
    (None: it can): a name that is not UTF-8 or not an image's, a link to nothing."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file name ({Path(path).suffix or 'no extension'})"
    if exists is None:
        exists = not is_local(path) or local_path(path).exists()
    if not exists:
        return "broken link (points to nothing)"
    return None


def printable(path: str) -> str:
    """A path fit for a report: undecodable bytes shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _expand_local(source: str, skipped: list[dict[str, str]]) -> list[str]:
    path = local_path(source)
    if path.is_file() and path.suffix.lower() == ".txt":
        return _listed(path.read_text())
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        names = sorted(str(p) for p in path.rglob("*") if p.is_file() or p.is_symlink())
    else:
        names = sorted(p for p in globlib.glob(str(path), recursive=True) if not Path(p).is_dir())
    found = []
    for name in names:
        reason = unusable_file(name)
        if reason is None:
            found.append(name)
        else:
            skipped.append({"path": printable(name), "reason": reason})
    return found


def _expand_remote(source: str, skipped: list[dict[str, str]]) -> list[str]:
    with located("list", source) as (fs, path):
        if path.lower().endswith(".txt"):
            return _listed(bytes(fs.cat_file(path)).decode())
        if globlib.has_magic(path):
            names = fs.glob(path)
        elif fs.isdir(path):
            names = fs.find(path)
        elif fs.isfile(path):
            return [source]
        else:
            return []
    found = []
    for name in sorted(as_url(source, n) for n in names):
        reason = unusable_file(name)
        if reason is None:
            found.append(name)
        else:
            skipped.append({"path": name, "reason": reason})
    return found


def _listed(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def list_image_sources(sources: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Image files named by each entry: a directory or prefix (searched recursively), a glob
    pattern, a ``.txt`` file listing one path or URL per line, or a single image file; and what
    a folder or glob held but is not taken, each with its reason (a file name that is not an
    image's, a broken link, a name that is not valid UTF-8), for the job's report.

    Raises ``FileNotFoundError`` naming every entry that matches nothing.
    """
    found: list[str] = []
    skipped: list[dict[str, str]] = []
    missing: list[str] = []
    for source in sources:
        before = len(skipped)
        if is_local(source):
            matches = _expand_local(source, skipped)
        else:
            matches = _expand_remote(source, skipped)
        if not matches:
            missing.append(source if len(skipped) == before else f"{source} (no image among it)")
        found.extend(matches)
    if missing:
        raise FileNotFoundError(f"no image files found for: {', '.join(missing)}")
    return found, skipped


def expand_image_sources(sources: list[str]) -> list[str]:
    """The image files of :func:`list_image_sources`, without its report."""
    return list_image_sources(sources)[0]


def image_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The files of a local ``folder`` matching ``pattern`` whose names are images', sorted; a
    missing folder is an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)
