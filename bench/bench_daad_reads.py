"""A pattern's first read, per DAAD domain: what a cold injection actor pays per draw.

Reads every usable pattern of the shared DAAD once (a fresh bank, so each is a cache miss) in
``--mode`` and reports milliseconds per read and the bytes read, per domain: from the DAAD as
built (a record's crop where it keeps one) and from a format-3 view of the same shards (whole
records only: the records table without the crop ranges, as before DAAD format 4). Both must give
the same patterns; the script checks it.

--shares times the decoding alone, for one record in three, by the share of the image's pixels
that its pattern crop has (whether or not the DAAD keeps it): the record's image and mask
against the crop and its mask as PNGs; what ``PATTERN_CROP_MAX_SHARE`` was chosen from.

    python bench/bench_daad_reads.py [--mode grey] [--per-domain 300] [--shares]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import report, shared_daad

from cai_ray.core.cai import SourcePattern
from cai_ray.daad.shards import PatternBank, iter_records
from cai_ray.daad.writer import INDEX_NAME, RECORDS_NAME
from cai_ray.io.codecs import ColorMode, decode_image, decode_mask, decode_png
from cai_ray.io.png import encode_png


def whole_record_view(daad: str, into: Path) -> str:
    """The DAAD as format 3 reads it: same shards (linked), no crop byte ranges."""
    index = json.loads(Path(daad, INDEX_NAME).read_text())
    index["format_version"] = 3
    (into / INDEX_NAME).write_text(json.dumps(index))
    table = pq.read_table(Path(daad, RECORDS_NAME))
    pq.write_table(table.drop_columns(["pattern_start", "pattern_end"]), into / RECORDS_NAME)
    for shard in index["shards"]:
        (into / shard["name"]).symlink_to(Path(daad, shard["name"]).resolve())
    return str(into)


def decode_times_by_share(daad: str, mode: ColorMode) -> dict[str, float | int]:
    """Milliseconds to decode a record's image and mask, and its crop and the crop's mask,
    per fifth of crop share (``share_0.4``: 40-60% of the image's pixels), with mean KiB."""
    rows: dict[float, list[list[float]]] = defaultdict(list)
    for n, (label, image_bytes, mask) in enumerate(iter_records(daad)):
        if n % 3:
            continue
        pattern = SourcePattern.from_full_image(
            decode_image(image_bytes),
            mask,
            anomaly_class=str(label.anomaly_class),
            domain=label.domain,
            record_id=label.record_id,
        )
        mask_png = encode_png(mask.astype(np.uint8) * 255)
        crop_pngs = [encode_png(pattern.image), encode_png(pattern.mask.astype(np.uint8) * 255)]
        start = time.perf_counter()
        decode_image(image_bytes, mode), decode_mask(mask_png)
        middle = time.perf_counter()
        decode_png(crop_pngs[0], mode), decode_png(crop_pngs[1], "grey")
        end = time.perf_counter()
        share = min(int(pattern.mask.size / mask.size * 5), 4) / 5
        whole_kib = (len(image_bytes) + len(mask_png)) / 1024
        crop_kib = sum(map(len, crop_pngs)) / 1024
        rows[share].append([middle - start, end - middle, whole_kib, crop_kib])
    figures: dict[str, float | int] = {}
    for share, values in sorted(rows.items()):
        whole_s, crop_s, whole_kib, crop_kib = np.mean(values, axis=0)
        figures[f"share_{share}_records"] = len(values)
        figures[f"share_{share}_whole_ms"] = whole_s * 1000
        figures[f"share_{share}_crop_ms"] = crop_s * 1000
        figures[f"share_{share}_whole_kib"] = whole_kib
        figures[f"share_{share}_crop_kib"] = crop_kib
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="grey", choices=["grey", "rgb"])
    parser.add_argument("--per-domain", type=int, default=300, help="patterns read per domain")
    parser.add_argument("--shares", action="store_true", help="decode time by crop share")
    args = parser.parse_args()
    daad = shared_daad()
    if args.shares:
        report(decode_times_by_share(daad, args.mode))
        return
    with tempfile.TemporaryDirectory() as folder:
        banks = {
            "crops": PatternBank(daad, mode=args.mode),
            "whole": PatternBank(whole_record_view(daad, Path(folder)), mode=args.mode),
        }
        crops = banks["crops"]
        table = pq.read_table(Path(daad, RECORDS_NAME)).to_pydict()
        whole_bytes = np.subtract(table["end"], table["start"])
        crop_bytes = np.subtract(table["pattern_end"], table["pattern_start"])
        kept = np.asarray(table["pattern_start"]) >= 0
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i, domain in enumerate(crops.domains):
            if len(by_domain[domain]) < args.per_domain:
                by_domain[domain].append(i)
        figures: dict[str, float | int | str] = {"mode": args.mode}
        for domain, indices in sorted(by_domain.items()):
            figures[f"{domain}_patterns"] = len(indices)
            figures[f"{domain}_crops_kept"] = int(kept[indices].sum())
            patterns = {}
            for name, bank in banks.items():
                start = time.perf_counter()
                patterns[name] = [bank[i] for i in indices]
                seconds = time.perf_counter() - start
                figures[f"{domain}_{name}_ms_per_read"] = seconds * 1000 / len(indices)
            for a, b in zip(patterns["crops"], patterns["whole"], strict=True):
                assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        figures["mean_kib_read_per_pattern_crops"] = float(
            np.where(kept, crop_bytes, whole_bytes).mean() / 1024
        )
        figures["mean_kib_read_per_pattern_whole"] = float(whole_bytes.mean() / 1024)
        figures["daad_mib"] = sum(f.stat().st_size for f in Path(daad).iterdir()) / 2**20
    report(figures)


if __name__ == "__main__":
    main()
