"""Writing a DAAD: records into numbered tar shards, the records table (Parquet) that sampling
reads instead of the shards, and the index (``daad.json``) that names them and embeds the spec
and the build report. What the records are made from is the layouts' business
(:mod:`cai_ray.daad.layouts`); this module only writes them."""

from __future__ import annotations

import hashlib
import json

from cai_ray.core.duplicates import FINGERPRINT_BYTES
from cai_ray.daad.records import PATTERN_IMAGE, PATTERN_MASK, DaadRecord
from cai_ray.io import storage
from cai_ray.io.tar import build_tar, member_spans, sample_spans

INDEX_NAME = "daad.json"
RECORDS_NAME = "records.parquet"
FORMAT_VERSION = 5
"""2: a records table with each record's byte range, for lazy reads; 3: with each record's
source path, image size and near-duplicate fingerprint (read by ``daad stats``); 4: records may
keep their pattern crop, whose byte range the table gives (``pattern_start``, ``pattern_end``;
-1 where a record has none); 5: each record's tags (``tags``, a list; its source's, from the
spec). Sampling reads 2 and newer; an older one's records have no tags."""


def _records_table(rows: list[dict]) -> bytes:
    """One row per record: what sampling needs without opening a shard (class, domain, mask
    box), where the record and its pattern crop lie (shard number, byte ranges) and what finds
    duplicates (source path, image size, fingerprint). Sampling reads about 60 bytes a record
    of it, so an actor can index millions of records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "record_id": pa.array([r["record_id"] for r in rows], pa.string()),
        "anomaly_class": pa.array([r["anomaly_class"] for r in rows], pa.string()),
        "domain": pa.array([r["domain"] for r in rows], pa.string()),
        "shard": pa.array([r["shard"] for r in rows], pa.int32()),
        "start": pa.array([r["start"] for r in rows], pa.int64()),
        "end": pa.array([r["end"] for r in rows], pa.int64()),
        "pattern_start": pa.array([r["pattern"][0] for r in rows], pa.int64()),
        "pattern_end": pa.array([r["pattern"][1] for r in rows], pa.int64()),
        "tags": pa.array([list(r["tags"]) for r in rows], pa.list_(pa.string())),
    }
    for axis, name in enumerate(("y0", "x0", "y1", "x1")):
        columns[name] = pa.array([r["bbox"][axis] for r in rows], pa.int32())
    columns["path"] = pa.array([r["path"] for r in rows], pa.string())
    columns["height"] = pa.array([r["height"] for r in rows], pa.int32())
    columns["width"] = pa.array([r["width"] for r in rows], pa.int32())
    columns["fingerprint"] = pa.array(
        [r["fingerprint"].tobytes() for r in rows], pa.binary(FINGERPRINT_BYTES)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _pattern_spans(shard: bytes) -> dict[str, tuple[int, int]]:
    """Record key -> the byte range of its two pattern members (adjacent: their names sort
    together), for records that keep a pattern crop."""
    spans: dict[str, tuple[int, int]] = {}
    members = member_spans(shard)
    for (first, start, _), (second, _, end) in zip(members, members[1:], strict=False):
        key, _, ext = first.partition(".")
        if ext == PATTERN_MASK:
            assert second == f"{key}.{PATTERN_IMAGE}", f"{first} is not followed by its image"
            spans[key] = (start, end)
    return spans


class DaadWriter:
    """Writes the records it is given, in order, as shards of ``records_per_shard`` under
    ``out`` (each atomically, as soon as it is full); :meth:`finish` writes the last shard, the
    records table and the index. Same records in the same order, same bytes."""

    def __init__(self, out: str, records_per_shard: int) -> None:
        self.out = out
        self.records_per_shard = records_per_shard
        self.shards: list[dict] = []
        self._pending: list[DaadRecord] = []
        self._rows: list[dict] = []
        storage.makedirs(out)

    def add(self, record: DaadRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.records_per_shard:
            self._flush()

    def finish(self, name: str, spec: dict, report: dict) -> dict:
        """Write what is left, the records table and the index; return the index."""
        if self._pending:
            self._flush()
        storage.write_bytes_atomic(storage.join(self.out, RECORDS_NAME), _records_table(self._rows))
        index = {
            "format_version": FORMAT_VERSION,
            "records_table": RECORDS_NAME,
            "name": name,
            "spec": spec,
            "shards": self.shards,
            "report": report,
        }
        data = json.dumps(index, indent=2).encode()
        storage.write_bytes_atomic(storage.join(self.out, INDEX_NAME), data)
        return index

    def _flush(self) -> None:
        number = len(self.shards)
        name = f"daad-{number:06d}.tar"
        data = build_tar(record.to_sample() for record in self._pending)
        patterns = _pattern_spans(data)
        for record, (key, start, end) in zip(self._pending, sample_spans(data), strict=True):
            assert key == record.label.record_id
            self._rows.append(
                {
                    "record_id": key,
                    "anomaly_class": str(record.label.anomaly_class),
                    "domain": record.label.domain,
                    "shard": number,
                    "start": start,
                    "end": end,
                    "pattern": patterns.get(key, (-1, -1)),
                    "bbox": record.label.bbox,
                    "path": record.label.path,
                    "height": record.label.height,
                    "width": record.label.width,
                    "fingerprint": record.fingerprint,
                    "tags": record.label.tags,
                }
            )
        storage.write_bytes_atomic(storage.join(self.out, name), data)
        digest = hashlib.sha256(data).hexdigest()
        self.shards.append({"name": name, "records": len(self._pending), "sha256": digest})
        self._pending.clear()
