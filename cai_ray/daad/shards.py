"""Reading DAAD shards back: records, source patterns for injection, and statistics."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from collections import Counter, OrderedDict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from cai_ray.core.cai import SourcePattern, UnreadablePattern, draw_weights
from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.classes import AnomalyClass
from cai_ray.daad.records import PATTERN_IMAGE, PATTERN_MASK, RecordLabel, parse_sample
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.writer import FORMAT_VERSION, INDEX_NAME, RECORDS_NAME
from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, DecodeError, decode_image, decode_png
from cai_ray.io.tar import iter_tar

log = logging.getLogger(__name__)


def read_index(daad: str) -> dict:
    url = storage.join(daad, INDEX_NAME)
    if not storage.exists(url):
        raise FileNotFoundError(
            f"not a DAAD (no {INDEX_NAME}): {daad}; build one with 'cai-ray daad build'"
        )
    try:
        index = json.loads(storage.read_bytes(url))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"DAAD index {url} is damaged (not valid JSON: {exc}); rebuild the DAAD with "
            "'cai-ray daad build'"
        ) from exc
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ValueError(f"{url} is not a DAAD index (no shard list); rebuild the DAAD")
    return index


def iter_records(daad: str) -> Iterator[tuple[RecordLabel, bytes, np.ndarray]]:
    """Every record, shard by shard (a full scan: for statistics and checks, not sampling)."""
    for shard in read_index(daad)["shards"]:
        for key, files in iter_tar(storage.read_bytes(storage.join(daad, shard["name"]))):
            yield parse_sample(key, files)


SAMPLING_COLUMNS = ["anomaly_class", "domain", "shard", "start", "end", "y0", "x0", "y1", "x1"]
PATTERN_COLUMNS = ["pattern_start", "pattern_end"]
CROPS_FORMAT = 4
"""The first DAAD format whose records keep pattern crops (``PATTERN_COLUMNS``); an older
DAAD's patterns are cut from whole records."""
TAGS_FORMAT = 5
"""The first DAAD format whose records table has each record's tags; an older DAAD's records
have none."""


def record_tags(table: pa.Table) -> list[list[str]]:
    """Each record's tags (none for a DAAD older than :data:`TAGS_FORMAT`, whose table has no
    ``tags`` column)."""
    if "tags" not in table.column_names:
        return [[] for _ in range(table.num_rows)]
    return [tags or [] for tags in table["tags"].to_pylist()]


def _with_tags(columns: list[str], version: int) -> list[str]:
    """``columns`` of the records table, and ``tags`` where a DAAD of this format has them."""
    return columns + (["tags"] if version >= TAGS_FORMAT else [])


def usable_records(
    table: pa.Table,
    daad: str,
    *,
    exclude_domains: list[str],
    include_classes: list[AnomalyClass] | None,
    exclude_tags: list[str],
) -> np.ndarray:
    """Which records of ``daad`` a job's filters leave (a bool per row of ``table``, which has
    ``domain``, ``anomaly_class`` and, from format 5, ``tags``). ValueError where none is: it
    says what each filter took out, in the order they apply (domains, tags, classes)."""
    keep = np.ones(table.num_rows, bool)
    removed = {}
    if exclude_domains:
        out = np.isin(np.asarray(table["domain"].to_pylist(), object), list(exclude_domains))
        removed[f"exclude_domains {sorted(exclude_domains)}"] = int((keep & out).sum())
        keep &= ~out
    if exclude_tags:
        unwanted = set(exclude_tags)
        out = np.array([bool(unwanted.intersection(t)) for t in record_tags(table)], bool)
        removed[f"exclude_tags {sorted(exclude_tags)}"] = int((keep & out).sum())
        keep &= ~out
    if include_classes is not None:
        wanted = [str(c) for c in include_classes]
        out = ~np.isin(np.asarray(table["anomaly_class"].to_pylist(), object), wanted)
        removed[f"classes drawn {sorted(wanted)}"] = int((keep & out).sum())
        keep &= ~out
    if not keep.any():
        said = [f"{name} took out {count}" for name, count in removed.items()]
        raise ValueError(
            f"no source patterns left in DAAD {daad}: of its {table.num_rows} records, "
            + "; ".join(said)
            + ". Loosen daad.exclude_domains, daad.exclude_tags or the classes drawn "
            "(include_classes, class_weights)"
        )
    return keep


def content_digest(daad: str) -> str:
    """A digest of the DAAD's contents (its shards' checksums, from the index): a DAAD rebuilt
    in place from other sources gets another, a copy elsewhere the same."""
    index = read_index(daad)
    shards = [(shard["name"], shard["sha256"]) for shard in index["shards"]]
    identity = {"format_version": index.get("format_version", 1), "shards": shards}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_records_table(
    daad: str,
    index: dict | None = None,
    *,
    columns: list[str] | None = None,
    min_version: int = 2,
    needed_for: str = "sampling",
) -> pa.Table:
    """The DAAD's per-record table (see ``writer._records_table``), or ``columns`` of it.
    A DAAD older than ``min_version`` fails with what to do (rebuild)."""
    import pyarrow.parquet as pq

    index = index if index is not None else read_index(daad)
    version = index.get("format_version", 1)
    if version < min_version:
        raise ValueError(
            f"DAAD {daad} was built by an older cai-ray (format {version}; {needed_for} needs "
            f"{min_version}, this one writes {FORMAT_VERSION}): "
            "rebuild it with 'cai-ray daad build'"
        )
    # One thread: the table is small, and Arrow's reader thread pool can abort the process at
    # interpreter exit ("terminate called without an active exception", apache/arrow#34314).
    data = io.BytesIO(storage.read_bytes(storage.join(daad, RECORDS_NAME)))
    return pq.read_table(data, columns=columns, use_threads=False)


class PatternBank:
    """The DAAD's usable source patterns, indexed up front and read lazily.

    Only the records table is held for every record (about 60 bytes each); a pattern's pixels
    are fetched with one ranged read the first time it is drawn (its crop where the record keeps
    one, else the whole record) and kept in an LRU cache of at most ``cache_bytes`` decoded
    bytes. So a DAAD far larger than an actor's memory works: every actor samples across all
    shards, and the cache bounds its memory. The cost is a read per cache miss (local disk:
    well under a millisecond; S3: a GET, tens of milliseconds).

    Pattern ``i`` is the ``i``-th usable record in DAAD order, whatever is cached, so samples
    depend only on the seed. Records from ``exclude_domains`` are never used: the dataset being
    evaluated must not be a source (leakage); nor records carrying one of ``exclude_tags``, nor,
    with ``include_classes``, records of other classes.
    """

    def __init__(
        self,
        daad: str,
        *,
        mode: ColorMode,
        exclude_domains: list[str] = [],  # noqa: B006 - read only
        include_classes: list[AnomalyClass] | None = None,
        exclude_tags: list[str] = [],  # noqa: B006 - read only
        cache_bytes: int = 512 * 2**20,
        damaged: dict[str, str] | None = None,
    ) -> None:
        index = read_index(daad)
        version = index.get("format_version", 1)
        crops = version >= CROPS_FORMAT
        wanted = _with_tags(SAMPLING_COLUMNS + (PATTERN_COLUMNS if crops else []), version)
        table = read_records_table(daad, index, columns=wanted)
        keep = usable_records(
            table,
            daad,
            exclude_domains=exclude_domains,
            include_classes=include_classes or None,
            exclude_tags=exclude_tags,
        )
        dropped = Counter(np.asarray(table["domain"].to_pylist(), object)[~keep].tolist())
        if dropped:
            log.info("excluded DAAD records (leakage guard, tags, class filter): %s", dict(dropped))
        table = table.filter(pa.array(keep))
        self.daad = daad
        self.mode: ColorMode = mode
        self.cache_bytes = cache_bytes
        self._shard_urls = [storage.join(daad, shard["name"]) for shard in index["shards"]]
        self._shard = table["shard"].to_numpy()
        self._start = table["start"].to_numpy()
        self._end = table["end"].to_numpy()
        no_crops = np.full(table.num_rows, -1, np.int64)
        self._pattern_start = table["pattern_start"].to_numpy() if crops else no_crops
        self._pattern_end = table["pattern_end"].to_numpy() if crops else no_crops
        columns = [table[name].to_numpy() for name in ("y0", "x0", "y1", "x1")]
        self.longest_sides = np.maximum(columns[2] - columns[0], columns[3] - columns[1])
        self.classes = np.asarray(table["anomaly_class"].to_pylist())
        self.domains = np.asarray(table["domain"].to_pylist())
        self.damaged = damaged if damaged is not None else {}
        """Damaged records met (``<shard>#<byte offset>`` -> why), for the job's report."""
        self._cache: OrderedDict[int, SourcePattern] = OrderedDict()
        self.cached_bytes = 0
        self.reads = 0

    def __len__(self) -> int:
        return len(self._shard)

    def __getitem__(self, index: int) -> SourcePattern:
        pattern = self._cache.get(index)
        if pattern is not None:
            self._cache.move_to_end(index)
            return pattern
        try:
            pattern = self._read(index)
        except (DecodeError, ValueError, KeyError, tarfile.TarError) as exc:
            where = f"{self._shard_urls[int(self._shard[index])]}#{int(self._start[index])}"
            self.damaged[where] = str(exc)
            raise UnreadablePattern(f"damaged DAAD record: at {where}: {exc}") from exc
        size = pattern.image.nbytes + pattern.mask.nbytes
        self._cache[index] = pattern
        self.cached_bytes += size
        while self.cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self.cached_bytes -= evicted.image.nbytes + evicted.mask.nbytes
        return pattern

    def _read(self, index: int) -> SourcePattern:
        """The pattern from its crop, where the record keeps one (small PNGs, decoded by hand
        where cai-ray wrote them), else from the record's whole source image and mask: the same
        pixels either way."""
        url = self._shard_urls[int(self._shard[index])]
        crop = self._pattern_start[index] >= 0
        start, end = (
            (self._pattern_start[index], self._pattern_end[index])
            if crop
            else (self._start[index], self._end[index])
        )
        data = storage.read_range(url, int(start), int(end))
        self.reads += 1
        samples = list(iter_tar(data))
        if len(samples) != 1:
            raise ValueError(f"{url}: the records table points at {len(samples)} records, not 1")
        key, files = samples[0]
        if crop:
            image = decode_png(files[PATTERN_IMAGE], self.mode)
            mask = decode_png(files[PATTERN_MASK], "grey") > 0
            anomaly_class, domain = str(self.classes[index]), str(self.domains[index])
        else:
            label, image_bytes, mask = parse_sample(key, files)
            image = decode_image(image_bytes, self.mode)
            anomaly_class, domain = str(label.anomaly_class), label.domain
        pattern = SourcePattern.from_full_image(
            image, mask, anomaly_class=anomaly_class, domain=domain, record_id=key
        )
        if pattern.longest_side != self.longest_sides[index]:
            raise ValueError(f"{url}: record {key} does not match the records table")
        return pattern


def prepare_daad(daad: DaadConfig) -> None:
    """Build the DAAD if the settings say how and it is missing; check it opens and that its
    filters (domains, tags, classes) leave sources: a clear error before any worker starts beats
    a failed one. An excluded tag that no record carries (an old DAAD, a misspelt tag) is
    warned about."""
    if daad.build is not None and not storage.exists(storage.join(daad.path, INDEX_NAME)):
        log.info("building DAAD %s from %s", daad.path, daad.build.spec)
        build_daad(DaadSpec.from_yaml(daad.build.spec), daad.build.data_root, daad.path)
    index = read_index(daad.path)
    version = index.get("format_version", 1)
    columns = _with_tags(["domain", "anomaly_class"], version)
    table = read_records_table(daad.path, index, columns=columns)  # an old one fails, saying so
    if version < CROPS_FORMAT:
        log.warning(
            "DAAD %s is format %d: each pattern's first draw decodes its whole source image. "
            "Rebuilt by this cai-ray ('cai-ray daad build'), it keeps pattern crops: the same "
            "samples, faster first draws (a job resumes only with the DAAD it began with)",
            daad.path,
            version,
        )
    carried = {tag for tags in record_tags(table) for tag in tags}
    if missing := sorted(set(daad.exclude_tags) - carried):
        why = (
            f"it is format {version}, built before records carried tags: rebuild it"
            if version < TAGS_FORMAT
            else f"its tags are {sorted(carried) or 'none'}"
        )
        log.warning(
            "daad.exclude_tags %s: no record of DAAD %s carries them, so they leave nothing out "
            "(%s)",
            missing,
            daad.path,
            why,
        )
    usable_records(
        table,
        daad.path,
        exclude_domains=daad.exclude_domains,
        include_classes=daad.drawn_classes(),
        exclude_tags=daad.exclude_tags,
    )


def pattern_weights(bank: PatternBank, daad: DaadConfig) -> np.ndarray | None:
    """Per-pattern draw weights of a job's ``daad.draw`` and ``daad.class_weights`` over the
    patterns its filters left in ``bank`` (:func:`cai_ray.core.cai.draw_weights`); None: every
    pattern alike (``records`` without class weights, the draw of cai-ray before modes)."""
    named = None
    if daad.class_weights is not None:
        named = {str(c): w for c, w in daad.class_weights.items()}
    return draw_weights(bank.classes, bank.domains, daad.draw, named)
