"""A job's input list: one Parquet file of every input's path and change stamp, in the job's
order, streamed in and out in bounded memory (ten million inputs never sit in the driver).

Columns ``path`` (an absolute local path or object URL) and ``stamp`` (size and modification
time locally, size and ETag on an object store, as rsync compares them; ``missing`` for a listed
file that is not there). Rows are sorted by path without duplicates: the order inputs had when
the driver listed and sorted them whole, so a target's index and key (and so its samples) are
those of before. Row groups of :data:`ROWS_PER_GROUP` rows let a worker read one shard's rows
without the rest.

A folder or prefix is listed once, page by page, stamps taken from the listing itself (an
object store's listing carries size and ETag; locally a stat beside each directory entry, no
request per object). A list file (``.txt`` of one path a line, ``.csv`` or ``.parquet`` with a
``path`` column) is read in batches; its ``stamp`` column (or ``size`` with ``mtime_ns`` or
``etag``) is kept, and where it has none the stamps are taken as a listing would (a stat per
file, one listing per object folder), so a resume still sees a changed input.
"""

from __future__ import annotations

import glob as globlib
import heapq
import itertools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cai_ray.io import layout, storage

ROWS_PER_GROUP = 4096
"""Rows per Parquet row group: a shard's rows are one or two groups (a few hundred KB)."""
BATCH_ROWS = 16384
"""Rows a stream holds at once: its memory, a few MB whatever the list's length."""
SORTED_DIRECTORY_ENTRIES = 100_000
"""A directory with more entries is listed unsorted, then sorted with the rest from disk."""
SORT_RUN_ROWS = 1_000_000
"""Rows sorted in memory at once when a list arrives out of order (then merged from disk)."""
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
SCHEMA = pa.schema([("path", pa.string()), ("stamp", pa.string())])

Row = tuple[str, str]


LEFT_OUT_NAMED = 1000
"""Files left out of a listing that it names (with the reason); the rest are counted only."""


class LeftOut(list):
    """The files a listing left out, each with the reason: all counted (``total``), the first
    :data:`LEFT_OUT_NAMED` kept, so a folder with a label file beside each of ten million
    images holds a thousand records in the driver, not ten million."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def append(self, skip: dict[str, str]) -> None:
        self.total += 1
        if len(self) < LEFT_OUT_NAMED:
            super().append(skip)


@dataclass
class Listing:
    """What writing a list found: its rows, the files it left out (with the reason, the first
    :data:`LEFT_OUT_NAMED` of them) and how often a path taken was named again (kept once)."""

    count: int = 0
    unlisted: LeftOut = field(default_factory=LeftOut)
    duplicates: int = 0


def location(path: str) -> str:
    """An absolute POSIX path for a local file, ``/bucket/key`` for an object URL."""
    if storage.is_local(path):
        return Path(os.path.abspath(storage.local_path(path))).as_posix()
    return "/" + path.split("://", 1)[1]


def target_key(where: str, common: str) -> str:
    """A target's key: its location relative to the inputs' common folder."""
    return posixpath.relpath(where, common)


def root_url(common: str, like: str) -> str:
    """The common folder as a location of the kind of ``like`` (a local path or object URL)."""
    return common if storage.is_local(like) else f"{like.split('://', 1)[0]}:/{common}"


# ---- reading sources ------------------------------------------------------------------------


def _local_stamp(entry: os.DirEntry) -> str:
    try:
        info = entry.stat()
    except OSError:
        return "missing"
    return storage.file_stamp(info)


def _walk_local(folder: str) -> Iterator[os.DirEntry]:
    """Files (and links that are not folders) under ``folder``, in the order of their sorted
    path strings: a directory sorts as ``name/``, so walking depth first gives that order
    holding one directory's entries per level. A directory of more than
    :data:`SORTED_DIRECTORY_ENTRIES` entries is walked as it comes instead, and the list
    sorted from runs on disk (:func:`write_list`), so ten million files in one folder do not
    sit in memory."""
    with os.scandir(folder) as scan:
        entries = list(itertools.islice(scan, SORTED_DIRECTORY_ENTRIES))
        if len(entries) == SORTED_DIRECTORY_ENTRIES:
            for entry in itertools.chain(entries, scan):
                if entry.is_dir(follow_symlinks=False):
                    yield from _walk_local(entry.path)
                else:
                    yield entry
            return
    is_dir = {entry.name: entry.is_dir(follow_symlinks=False) for entry in entries}
    entries.sort(key=lambda entry: entry.name + "/" if is_dir[entry.name] else entry.name)
    for entry in entries:
        if is_dir[entry.name]:
            yield from _walk_local(entry.path)
        else:
            yield entry


def _usable(rows: Iterable[tuple[str, str | None]], skipped: list[dict[str, str]]) -> Iterator:
    for path, stamp in rows:
        # a listing's stamp says whether a link leads anywhere: no second stat
        reason = storage.unusable_file(path, exists=None if stamp is None else stamp != "missing")
        if reason is None:
            yield path, stamp
        else:
            skipped.append({"path": storage.printable(path), "reason": reason})


def _remote_pages(source: str) -> Iterator[dict]:
    """The objects under a prefix, page by page (sorted by key, as S3 lists them)."""
    with storage.located("list", source) as (fs, path):
        bucket, _, prefix = path.rstrip("/").partition("/")
        if not hasattr(fs, "_iterdir"):  # not s3fs: fsspec lists the prefix whole
            yield from fs.find(path, detail=True).values()
            return
        from fsspec.asyn import sync

        pages = fs._iterdir(bucket, prefix=f"{prefix}/" if prefix else "", delimiter="")

        async def page() -> list[dict]:
            items = []
            async for item in pages:
                items.append(item)
                if len(items) == 1000:
                    break
            return items

        while items := sync(fs.loop, page):
            yield from items


def _read_list(url: str) -> Iterator[pa.Table]:
    """The rows of a list file, in its order, a batch at a time (stamps null where the list
    has none); a file that is not a readable list stops with its name and the cause."""
    try:
        yield from _list_batches(url)
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise ValueError(f"{url} is not a readable input list: {exc}") from exc


def _text_rows(url: str, handle: Any) -> Iterator[tuple[str, None]]:
    """A .txt list's paths, one a line (blank lines and # comments skipped); UTF-8 only: a
    path the list cannot spell is refused with its line number."""
    for number, raw in enumerate(handle, 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{url}, line {number}: not UTF-8 ({exc.reason})") from None
        if line and not line.startswith("#"):
            yield line, None


def _list_parts(url: str) -> list[str]:
    """A list's files: the list itself, or for a folder named like one (``normals.parquet/``,
    as Ray Data, Spark and pandas write a dataset) its part files of the same kind, in name
    order, bookkeeping files (``_SUCCESS``, ``.crc``) aside."""
    suffix = Path(url).suffix.lower()
    with storage.located("read", url) as (fs, path):
        if not fs.isdir(path):
            return [url]
        names = sorted(fs.find(path))
    parts = [
        storage.as_url(url, name)
        for name in names
        if Path(name).suffix.lower() == suffix and not Path(name).name.startswith(("_", "."))
    ]
    if not parts:
        raise ValueError(f"{url} is a folder without {suffix} part files")
    return parts


def _list_batches(url: str) -> Iterator[pa.Table]:
    for part in _list_parts(url):
        yield from _part_batches(part)


def _part_batches(url: str) -> Iterator[pa.Table]:
    suffix = Path(url).suffix.lower()
    with storage.located("read", url) as (fs, path), fs.open(path, "rb") as handle:
        if suffix == ".txt":
            for table in _tables(_text_rows(url, handle)):
                yield _list_table(url, table)
            return
        if suffix == ".csv":
            options = pacsv.ConvertOptions(column_types={"path": pa.string()})
            batches: Iterable[pa.RecordBatch] = pacsv.open_csv(handle, convert_options=options)
        else:
            batches = pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS)
        for batch in batches:
            yield _list_table(url, pa.Table.from_batches([batch]))


def _list_table(url: str, table: pa.Table) -> pa.Table:
    """A list file's batch as (path, stamp): paths made absolute, empty ones dropped, the
    stamp from ``stamp`` or ``size`` with ``mtime_ns`` or ``etag``, else null."""
    names = set(table.column_names)
    if "path" not in names:
        raise ValueError(f"{url} has no 'path' column (columns: {sorted(names)})")
    for name in ("path", "stamp") if "stamp" in names else ("path",):
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{url}: the '{name}' column holds {kind}, not text")
    paths = table.column("path").cast(pa.string())
    if "stamp" in names:
        stamps = table.column("stamp").cast(pa.string())
    elif "size" in names and names & {"mtime_ns", "etag"}:
        tag = table.column("mtime_ns" if "mtime_ns" in names else "etag").cast(pa.string())
        stamps = pc.binary_join_element_wise(table.column("size").cast(pa.string()), tag, ":")
    else:
        stamps = pa.nulls(len(table), pa.string())
    result = pa.table({"path": paths, "stamp": stamps}, schema=SCHEMA)
    result = result.filter(pc.fill_null(pc.not_equal(paths, ""), False))
    return result.set_column(0, "path", _absolute(result.column("path")))


def _absolute(paths: pa.ChunkedArray) -> pa.Array:
    """Local paths made absolute as :func:`storage.absolute` does, quickly where they are
    already absolute and normal (or object URLs)."""
    usual = pc.or_(pc.starts_with(paths, "/"), pc.match_substring(paths, "://"))
    odd = pc.match_substring_regex(paths, _NOT_NORMAL + r"|^file://")
    if pc.all(usual).as_py() is not False and not pc.any(odd).as_py():
        return paths
    return pa.array([storage.absolute(path) for path in paths.to_pylist()], pa.string())


def _tables(rows: Iterable[tuple[str, str | None]]) -> Iterator[pa.Table]:
    """Rows grouped into tables of :data:`BATCH_ROWS`."""
    paths: list[str] = []
    stamps: list[str | None] = []
    for path, stamp in rows:
        paths.append(path)
        stamps.append(stamp)
        if len(paths) == BATCH_ROWS:
            yield pa.table({"path": paths, "stamp": stamps}, schema=SCHEMA)
            paths, stamps = [], []
    if paths:
        yield pa.table({"path": paths, "stamp": stamps}, schema=SCHEMA)


def _stamped(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Tables with a stamp in each row: those a list lacks taken as a listing would (a stat
    per file, one listing per object folder: :func:`storage.stamps`)."""
    for table in tables:
        stamps = table.column("stamp")
        if stamps.null_count:
            paths = table.column("path").to_pylist()
            known = stamps.to_pylist()
            unknown = [path for path, stamp in zip(paths, known, strict=True) if stamp is None]
            taken = iter(storage.stamps(unknown))
            filled = [stamp if stamp is not None else next(taken) for stamp in known]
            table = table.set_column(1, "stamp", pa.array(filled, pa.string()))
        yield table


def source_tables(source: str, skipped: list[dict[str, str]]) -> Iterator[pa.Table]:
    """The inputs one source names, with their stamps, as (path, stamp) tables: a folder or
    prefix (recursively, in sorted order), a glob pattern, a list file or a single image file.
    Files a folder or glob holds that cannot be images are added to ``skipped`` with the
    reason."""
    if Path(source).suffix.lower() in LIST_SUFFIXES:
        yield from _stamped(_read_list(source))
    elif storage.is_local(source):
        path = storage.absolute(source)
        if os.path.isfile(path):
            yield from _stamped(_tables([(path, None)]))
        elif os.path.isdir(path):
            entries = ((e.path, _local_stamp(e)) for e in _walk_local(path))
            yield from _tables(_usable(entries, skipped))
        else:
            names = sorted(p for p in globlib.glob(path, recursive=True) if not os.path.isdir(p))
            yield from _stamped(_tables(_usable(((name, None) for name in names), skipped)))
    else:
        with storage.located("list", source) as (fs, path):
            names = []
            if globlib.has_magic(path):
                kind, names = "glob", sorted(storage.as_url(source, n) for n in fs.glob(path))
            else:
                kind = "folder" if fs.isdir(path) else "file" if fs.isfile(path) else ""
        if kind == "glob":
            yield from _stamped(_tables(_usable(((name, None) for name in names), skipped)))
        elif kind == "folder":
            entries = (
                (storage.as_url(source, e["name"]), storage.object_stamp(e))
                for e in _remote_pages(source)
                if not e["name"].endswith("/")
            )
            yield from _tables(_usable(entries, skipped))
        elif kind == "file":
            yield from _stamped(_tables([(source, None)]))


# ---- writing and reading lists --------------------------------------------------------------


class _Unique:
    """Tables of rows written to a list with each path once, in row groups of
    :data:`ROWS_PER_GROUP`; notes whether the paths came in increasing order, and drops a
    path equal to the one before it (all duplicates, in a sorted stream)."""

    def __init__(self, path: str, limit: int | None = None) -> None:
        self._file = pq.ParquetWriter(path, SCHEMA)
        self.limit = limit
        self.count = 0
        self.duplicates = 0
        self.in_order = True
        self._last: str | None = None

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def add(self, table: pa.Table) -> None:
        if not len(table) or self.full:
            return
        paths = table.column("path")
        before = pa.chunked_array(
            [pa.array([self._last], pa.string()), paths.slice(0, len(paths) - 1)]
        )
        repeated = pc.fill_null(pc.equal(paths, before), False)
        self.in_order = self.in_order and not pc.any(pc.less(paths, before)).as_py()
        self.duplicates += pc.sum(repeated).as_py() or 0
        table = table.filter(pc.invert(repeated))
        if self.limit is not None:
            table = table.slice(0, self.limit - self.count)
        self._last = paths[-1].as_py()
        self._file.write_table(table, row_group_size=ROWS_PER_GROUP)
        self.count += len(table)

    def close(self) -> None:
        self._file.close()


def _sorted_runs(path: str, folder: str) -> list[str]:
    """The rows of a list file sorted by path in runs of :data:`SORT_RUN_ROWS` rows, each run
    a file of its own (stable: of equal paths the first listed comes first)."""
    runs = []
    source = pq.ParquetFile(path)
    for number, batch in enumerate(source.iter_batches(batch_size=SORT_RUN_ROWS)):
        run = os.path.join(folder, f"run-{number}.parquet")
        table = pa.Table.from_batches([batch]).sort_by("path")
        pq.write_table(table, run, row_group_size=ROWS_PER_GROUP)
        runs.append(run)
    return runs


def write_list(sources: list[str], dest: str, *, limit: int | None = None) -> Listing:
    """Write the inputs ``sources`` name to the local Parquet file ``dest``: sorted by path,
    each once, at most ``limit`` rows. Inputs that come in order (a folder, a sorted list) are
    written as they stream by; others are sorted from runs on disk. Raises
    ``FileNotFoundError`` naming every source that gives no input."""
    listing = Listing()
    missing = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dest))) as work:
        raw = _Unique(os.path.join(work, "raw.parquet"))
        for source in sources:
            before, skips = raw.count + raw.duplicates, listing.unlisted.total
            for table in source_tables(source, listing.unlisted):
                raw.add(table)
            if raw.count + raw.duplicates == before:
                got_skips = listing.unlisted.total > skips
                missing.append(f"{source} (no image among it)" if got_skips else source)
        raw.close()
        if missing:
            raise FileNotFoundError(f"no image files found for: {', '.join(missing)}")
        if raw.in_order and (limit is None or raw.count <= limit):
            shutil.move(os.path.join(work, "raw.parquet"), dest)
            listing.count, listing.duplicates = raw.count, raw.duplicates
            return listing
        raw_path = os.path.join(work, "raw.parquet")
        if raw.in_order:
            tables: Iterable[pa.Table] = (
                pa.Table.from_batches([batch])
                for batch in pq.ParquetFile(raw_path).iter_batches(batch_size=BATCH_ROWS)
            )
        else:
            tables = _tables(_merged(_sorted_runs(raw_path, work)))
        final = _Unique(dest, limit)
        for table in tables:
            final.add(table)
            if final.full:
                break
        final.close()
    listing.count, listing.duplicates = final.count, raw.duplicates + final.duplicates
    return listing


def _merged(runs: list[str]) -> Iterator[Row]:
    return heapq.merge(*(iter_rows(run) for run in runs), key=lambda row: row[0])


def iter_rows(url: str) -> Iterator[Row]:
    """Every row of a list, in order."""
    for paths, stamps in iter_chunks(url, BATCH_ROWS):
        yield from zip(paths, stamps, strict=True)


def iter_chunks(url: str, size: int, stop: int | None = None) -> Iterator[tuple[list, list]]:
    """The first ``stop`` rows (all: None) of a list as (paths, stamps) chunks of exactly
    ``size`` rows, the last one shorter: a chunk of a multiple of the shard size holds whole
    shards."""
    with storage.located("read", url) as (fs, path), fs.open(path, "rb") as handle:
        batches = pq.ParquetFile(handle).iter_batches(batch_size=size)
        pending: list[pa.RecordBatch] = []
        held = 0
        left = stop
        for batch in batches:
            if left is not None:
                batch = batch.slice(0, left)
                left -= len(batch)
            pending.append(batch)
            held += len(batch)
            while held >= size:
                table = pa.Table.from_batches(pending)
                yield _columns(table.slice(0, size))
                rest = table.slice(size)
                pending, held = rest.to_batches(), len(rest)
            if left == 0:
                break
        if held:
            yield _columns(pa.Table.from_batches(pending))


def _columns(table: pa.Table) -> tuple[list, list]:
    return table.column("path").to_pylist(), table.column("stamp").to_pylist()


_SCHEME = r"^[A-Za-z][A-Za-z0-9+.-]*://"


def location_bounds(url: str, stop: int) -> tuple[str, str]:
    """The smallest and largest :func:`location` among the first ``stop`` rows (their common
    folder is that of all rows), read column-wise."""
    low: str | None = None
    high: str | None = None
    with storage.located("read", url) as (fs, path), fs.open(path, "rb") as handle:
        left = stop
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS, columns=["path"]):
            paths = batch.column(0).slice(0, left)
            bounds = pc.min_max(pc.replace_substring_regex(paths, _SCHEME, "/"))
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            low = lo if low is None else min(low, lo)
            high = hi if high is None else max(high, hi)
            left -= min(left, len(batch))
            if left == 0:
                break
    if low is None or high is None:
        raise ValueError(f"{url} holds no inputs")
    return low, high


def count_rows(url: str) -> int:
    with storage.located("read", url) as (fs, path), fs.open(path, "rb") as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


class ListReader:
    """Rows of one list by range, the file opened once (a worker reads shard after shard)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, self._path = storage.filesystem(url)
        self._handle: Any = None
        self._file: pq.ParquetFile | None = None
        self._starts: list[int] = []
        self._cached: tuple[list[int], pa.Table] = ([], SCHEMA.empty_table())
        """The row groups read last: small shards in turn take the same one (one read each)."""

    def _open(self) -> pq.ParquetFile:
        if self._file is None:
            with storage.located("read", self.url):
                self._handle = self._fs.open(self._path, "rb")
                self._file = pq.ParquetFile(self._handle)
            metadata = self._file.metadata
            self._starts = [0]
            for group in range(metadata.num_row_groups):
                self._starts.append(self._starts[-1] + metadata.row_group(group).num_rows)
        return self._file

    def rows(self, start: int, stop: int) -> list[Row]:
        """Rows ``start`` to ``stop`` (exclusive), reading only the row groups that hold them
        (those of the last call kept)."""
        file = self._open()
        groups = [
            g
            for g in range(len(self._starts) - 1)
            if self._starts[g] < stop and self._starts[g + 1] > start
        ]
        if not groups:
            return []
        if self._cached[0] != groups:
            with storage.located("read", self.url):
                self._cached = (groups, file.read_row_groups(groups, columns=["path", "stamp"]))
        table = self._cached[1]
        first = self._starts[groups[0]]
        paths, stamps = _columns(table.slice(start - first, stop - start))
        return list(zip(paths, stamps, strict=True))

    def targets(self, start: int, stop: int, root: str) -> list[dict]:
        """The targets of rows ``start`` to ``stop``: {index, key, path}, keys relative to
        the inputs' common folder ``root`` (as :func:`root_url` gives it), and ``listed_bytes``
        where the stamp records a size (the reader checks it: :func:`listed_size`)."""
        rows = self.rows(start, stop)
        keys = target_keys([path for path, _ in rows], location(root))
        targets = []
        for i, (key, (path, stamp)) in enumerate(zip(keys, rows, strict=True)):
            target = {"index": start + i, "key": key, "path": path}
            size = listed_size(stamp)
            if size is not None:
                target["listed_bytes"] = size
            targets.append(target)
        return targets


def listed_size(stamp: str | None) -> int | None:
    """The byte count a change stamp records (``size:tag``, as :func:`storage.file_stamp` and
    :func:`storage.object_stamp` write it), None where it records none. A
    reader that finds another size knows the input changed since it was listed: the one
    change a resume that reuses its list could not see otherwise."""
    size = (stamp or "").split(":", 1)[0]
    return int(size) if size.isdigit() else None


_NOT_NORMAL = r"//|/\.\.?(/|$)|/$"
"""A location :func:`posixpath.relpath` would normalise: a doubled slash, a . or .. part."""


def target_keys(paths: list[str], common: str) -> list[str]:
    """:func:`target_key` of each path's :func:`location`, relative to ``common``; a list's
    normal absolute paths (all a written list holds locally) are cut by slicing, fast enough
    for ten million."""
    where = [path if "://" not in path else "/" + path.split("://", 1)[1] for path in paths]
    locations = pa.array(where, pa.string())
    inside = common.rstrip("/") + "/"
    usual = pc.all(pc.starts_with(locations, inside)).as_py() and not (
        pc.any(pc.match_substring_regex(locations, _NOT_NORMAL)).as_py()
    )
    if not usual:
        return [target_key(location(path), common) for path in paths]
    cut = len(common) + 1 if common != "/" else 1
    return [item[cut:] for item in where]


@dataclass(frozen=True)
class ShardList:
    """A job's shards as ranges of its input list: shard i is rows ``i * per_shard`` up to
    ``count``. Small and picklable: what a worker is given instead of every target."""

    url: str
    root: str
    per_shard: int
    count: int

    def rows(self, shard: int) -> tuple[int, int]:
        start = shard * self.per_shard
        return start, min(start + self.per_shard, self.count)


def recorded_paths(out: str) -> list[str] | None:
    """The input paths an output recorded, by index (``inputs.parquet``, or the one a line
    ``inputs.txt`` of an output begun before it); None where it recorded none."""
    listed = storage.join(out, layout.INPUT_LIST_FILE)
    if storage.exists(listed):
        return [path for path, _ in iter_rows(listed)]
    url = storage.join(out, layout.INPUTS_FILE)
    if not storage.exists(url):
        return None
    return storage.read_bytes(url).decode("utf-8", "surrogateescape").split("\n")[:-1]
