"""Lazy DAAD reads: the pattern bank against a full scan, its memory bound, its errors."""

import io
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cai_ray.core.cai import CAIInjector, CAIParams, Injection, SourcePattern, UnreadablePattern
from cai_ray.daad.settings import DaadConfig
from cai_ray.daad.shards import PatternBank, iter_records, prepare_daad
from cai_ray.io.codecs import decode_image
from cai_ray.io.tar import build_tar, iter_tar, member_spans, sample_spans
from tests.conftest import older_daad


def _full_scan(daad: str, mode="grey") -> list[SourcePattern]:
    """The reference: every record's pattern cut from its whole source image."""
    return [
        SourcePattern.from_full_image(
            decode_image(image, mode),
            mask,
            anomaly_class=str(label.anomaly_class),
            domain=label.domain,
            record_id=label.record_id,
        )
        for label, image, mask in iter_records(daad)
    ]


def _crops_kept(daad: str) -> int:
    return sum(
        start >= 0
        for start in pq.read_table(Path(daad, "records.parquet"))["pattern_start"].to_pylist()
    )


@pytest.mark.parametrize("mode", ["grey", "rgb"])
def test_lazy_reads_give_the_full_scans_patterns_within_the_cache_bound(demo_daad, mode):
    """Records that keep their crop (most) and records that do not give the full scan's
    pixels, in either colour mode."""
    assert 0 < _crops_kept(demo_daad) < len(list(iter_records(demo_daad)))
    expected = _full_scan(demo_daad, mode)
    one_pattern = max(p.image.nbytes + p.mask.nbytes for p in expected)
    bank = PatternBank(demo_daad, mode=mode, cache_bytes=2 * one_pattern)
    assert len(bank) == len(expected)
    np.testing.assert_array_equal(bank.longest_sides, [p.longest_side for p in expected])
    for _ in range(2):  # the second pass re-reads what the small cache evicted
        for i, pattern in enumerate(expected):
            got = bank[i]
            assert got.record_id == pattern.record_id and got.box == pattern.box
            assert (got.anomaly_class, got.domain) == (pattern.anomaly_class, pattern.domain)
            np.testing.assert_array_equal(got.image, pattern.image)
            np.testing.assert_array_equal(got.mask, pattern.mask)
            assert bank.cached_bytes <= 2 * one_pattern
    assert bank.reads == 2 * len(expected)


def test_samples_do_not_depend_on_the_cache(demo_daad, tile_targets):
    foreground = np.ones(tile_targets[0].shape, bool)
    made = []
    for cache_bytes in (1, 2**30):
        injector = CAIInjector(PatternBank(demo_daad, mode="grey", cache_bytes=cache_bytes))
        made.append(
            [
                r.image
                for t, target in enumerate(tile_targets[:3])
                for r in injector.synthesize(target, foreground, seed=3, target_key=str(t))
                if isinstance(r, Injection)
            ]
        )
    assert len(made[0]) == len(made[1]) > 20
    for a, b in zip(*made, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_injector_over_a_list_and_over_the_bank_agree(demo_daad, tile_targets):
    foreground = np.ones(tile_targets[0].shape, bool)
    from_list = CAIInjector(_full_scan(demo_daad), CAIParams(blend="mixed"))
    from_bank = CAIInjector(PatternBank(demo_daad, mode="grey"), CAIParams(blend="mixed"))
    for a, b in zip(
        from_list.synthesize(tile_targets[0], foreground, seed=1, target_key="k"),
        from_bank.synthesize(tile_targets[0], foreground, seed=1, target_key="k"),
        strict=True,
    ):
        assert isinstance(a, Injection) and isinstance(b, Injection)
        np.testing.assert_array_equal(a.image, b.image)


def test_a_format_3_daad_without_crops_gives_the_same_patterns(demo_daad, tmp_path, caplog):
    """A DAAD built before records kept crops is still read, from whole records; a job says
    that rebuilding it would speed its first reads."""
    old = older_daad(demo_daad, tmp_path / "v3", 3, ("pattern_start", "pattern_end"))
    new, legacy = PatternBank(demo_daad, mode="grey"), PatternBank(str(old), mode="grey")
    for i in range(len(new)):
        np.testing.assert_array_equal(new[i].image, legacy[i].image)
        np.testing.assert_array_equal(new[i].mask, legacy[i].mask)
    with caplog.at_level(logging.WARNING, logger="cai_ray.daad.shards"):
        prepare_daad(DaadConfig(path=str(old)))
        prepare_daad(DaadConfig(path=demo_daad))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"DAAD {old} is format 3"]


def test_an_old_daad_and_a_damaged_shard_fail_clearly(demo_daad, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    index = json.loads(Path(demo_daad, "daad.json").read_text())
    del index["format_version"]
    (old / "daad.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="rebuild it"):
        PatternBank(str(old), mode="grey")

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in Path(demo_daad).iterdir():
        (damaged / file.name).write_bytes(file.read_bytes())
    shard = damaged / "daad-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    bank = PatternBank(str(damaged), mode="grey")
    with pytest.raises(OSError, match="shorter than expected"):
        bank[len(bank) - 1]


def test_a_damaged_crop_is_a_damaged_record(demo_daad, tmp_path):
    """A crop whose PNG is damaged fails like any damaged record: counted, named, drawn again."""
    daad = tmp_path / "daad"
    shutil.copytree(demo_daad, daad)
    shard = daad / "daad-000000.tar"
    data = bytearray(shard.read_bytes())
    _, start, end = next(m for m in member_spans(bytes(data)) if m[0].endswith(".crop.png"))
    data[start + 512 + 40 : end - 64] = bytes(end - 64 - start - 552)  # zeros over its IDAT
    shard.write_bytes(bytes(data))
    bank = PatternBank(str(daad), mode="grey")
    table = pq.read_table(daad / "records.parquet").to_pylist()
    index = next(
        i
        for i, r in enumerate(table)
        if r["shard"] == 0 and r["pattern_start"] < start < r["pattern_end"]
    )
    with pytest.raises(UnreadablePattern, match="damaged DAAD record"):
        bank[index]
    assert list(bank.damaged) == [f"{shard}#{bank._start[index]}"]


def _rewrite_crops(daad: str, out: Path, change: Callable[[str, str, bytes], bytes]) -> Path:
    """A copy of ``daad`` whose crop members are ``change(key, ext, data)``, the shards and
    the records table's byte ranges rewritten to match."""
    shutil.copytree(daad, out)
    table = pq.read_table(out / "records.parquet")
    names = ("start", "end", "pattern_start", "pattern_end")
    columns = {name: table[name].to_pylist() for name in names}
    row = 0
    for shard in sorted(out.glob("daad-*.tar")):
        samples = [
            (
                key,
                {
                    ext: change(key, ext, d) if ext.startswith("crop") else d
                    for ext, d in files.items()
                },
            )
            for key, files in iter_tar(shard.read_bytes())
        ]
        data = build_tar(samples)
        shard.write_bytes(data)
        members = {name: (start, end) for name, start, end in member_spans(data)}
        for (key, start, end), (_, files) in zip(sample_spans(data), samples, strict=True):
            columns["start"][row], columns["end"][row] = start, end
            if "crop.png" in files:
                first, last = members[f"{key}.crop.mask.png"], members[f"{key}.crop.png"]
                columns["pattern_start"][row], columns["pattern_end"][row] = first[0], last[1]
            row += 1
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    pq.write_table(table, out / "records.parquet")
    return out


def _pillow_png(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(decode_image(data)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _opencv_png(data: bytes) -> bytes:
    image = decode_image(data)
    ok, buffer = cv2.imencode(
        ".png",
        image if image.ndim == 2 else image[..., ::-1],
        [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH],
    )
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize("writer", [_pillow_png, _opencv_png], ids=["pillow", "opencv"])
@pytest.mark.parametrize("mode", ["grey", "rgb"])
def test_crops_another_encoder_wrote_give_the_same_patterns(demo_daad, tmp_path, writer, mode):
    """Crops re-optimised or written by another PNG encoder are intact records, read
    to the same patterns, none counted damaged (so no slot redraws and samples stay put)."""
    daad = _rewrite_crops(demo_daad, tmp_path / "daad", lambda key, ext, data: writer(data))
    ours, theirs = PatternBank(demo_daad, mode=mode), PatternBank(str(daad), mode=mode)
    assert len(theirs) == len(ours) and _crops_kept(str(daad)) == _crops_kept(demo_daad)
    for i in range(len(ours)):
        assert theirs[i].record_id == ours[i].record_id and theirs[i].box == ours[i].box
        np.testing.assert_array_equal(theirs[i].image, ours[i].image)
        np.testing.assert_array_equal(theirs[i].mask, ours[i].mask)
    assert theirs.damaged == {}


def _flip_idat_byte(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 4 + 10
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


def _flip_idat_crc(data: bytes) -> bytes:
    at = data.index(b"IEND") - 4 - 4 + 1  # the last chunk's CRC ends where IEND's length begins
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:20],  # the signature and part of the header: struct.error today
        lambda data: data[:28],
        lambda data: data[: len(data) // 2],
        _flip_idat_byte,
        _flip_idat_crc,
        lambda data: _flip_idat_crc(_pillow_png(data)),  # Pillow itself skips IDAT's CRC
    ],
    ids=["20-bytes", "28-bytes", "half", "idat-byte", "idat-crc", "pillow-idat-crc"],
)
@pytest.mark.parametrize("member", ["crop.png", "crop.mask.png"])
def test_a_short_or_corrupt_crop_is_a_counted_damaged_record(demo_daad, tmp_path, damage, member):
    """One short, truncated or CRC-corrupt crop is a damaged record, counted and
    named, whose draw fails as an unreadable pattern; it never ends the reader, and the other
    records read as before."""
    victim = next(
        r["record_id"]
        for r in pq.read_table(Path(demo_daad, "records.parquet")).to_pylist()
        if r["pattern_start"] >= 0
    )
    daad = _rewrite_crops(
        demo_daad,
        tmp_path / "daad",
        lambda key, ext, data: damage(data) if (key, ext) == (victim, member) else data,
    )
    ours, bank = PatternBank(demo_daad, mode="grey"), PatternBank(str(daad), mode="grey")
    for i in range(len(bank)):
        if ours[i].record_id == victim:
            with pytest.raises(UnreadablePattern, match="damaged DAAD record"):
                bank[i]
            assert list(bank.damaged) == [f"{daad / 'daad-000000.tar'}#{bank._start[i]}"]
        else:
            np.testing.assert_array_equal(bank[i].image, ours[i].image)
    assert len(bank.damaged) == 1
