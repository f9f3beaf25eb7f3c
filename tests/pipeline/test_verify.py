"""``cai-ray verify`` accounts for every input of a shard's range from what the shard holds (its
samples' and failed samples' keys, its skips), not from the counts its own entry states: a shard
that lost an input, its entry's counts and checksum lowered to match, is caught (in-process
executor: the same stages Ray runs)."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from cai_ray.cli import main
from cai_ray.config import SynthConfig
from cai_ray.io.tar import build_tar, iter_tar
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.conftest import DEMO, demo_tiles


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    last = demo_tiles(folder, 5)[-1]
    # input 0, skipped as unreadable: verify places a skip in its shard by its path
    (folder / "broken.jpg").write_bytes(last.read_bytes()[:500])
    return folder


def _run(inputs: Path, out: Path, per_shard: int = 3, **geometry) -> Path:
    config = SynthConfig.model_validate(
        {
            "seed": 2,
            "image_size": 128,
            "inputs": {"paths": [str(inputs)], "geometry": geometry or {"mode": "resize"}},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 2},
            "output": {"path": str(out), "targets_per_shard": per_shard, "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    run_synth(config, show_progress=False)
    assert verify_output(str(out)).ok, verify_output(str(out)).problems
    return out


def _drop(out: Path, shard: int, target: int, view: int | None = None, *, per_target: int = 2):
    """Remove input ``target`` (or one ``view`` of it) from a shard: its samples from the tar,
    its failures from the entry, and every count and checksum lowered to match, so the entry
    agrees with its tar and the manifest with the entries."""

    def gone(key: str) -> bool:
        _, index, sample = key.rsplit("-", 2)
        return int(index) == target and (view is None or int(sample) // per_target == view)

    tar, entry_file = out / f"shard-{shard:06d}.tar", out / f"shard-{shard:06d}.json"
    entry = json.loads(entry_file.read_text())
    kept, dropped = [], Counter()
    for key, files in iter_tar(tar.read_bytes()):
        if gone(key):
            meta = json.loads(files["json"])
            for name in ("method", "scale", "anomaly_class"):
                if name in meta:
                    dropped[(name, meta[name])] += 1
            dropped[("label", str(meta["label"]))] += 1
        else:
            kept.append((key, files))
    failed = [f for f in entry["failed_samples"] if not gone(f["key"])]
    views = len(
        {
            (k.rsplit("-", 2)[1], int(k.rsplit("-", 2)[2]) // per_target)
            for k in ([key for key, _ in kept] + [f["key"] for f in failed])
        }
    )
    data = build_tar(kept)
    tar.write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    for (name, value), number in dropped.items():
        for counts in (entry["counts"][name], manifest["counts"][name]):
            counts[value] -= number
            if not counts[value]:
                del counts[value]
    manifest["samples"] -= entry["samples"] - len(kept)
    entry.update(
        samples=len(kept),
        views=views,
        failed_samples=failed,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    if view is None:
        entry["targets"] -= 1
    entry_file.write_text(json.dumps(entry))
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_verify_finds_an_input_missing_from_its_shard(inputs, tmp_path):
    out = _run(inputs, tmp_path / "out")
    assert (
        "unreadable"
        in json.loads((out / "shard-000000.json").read_text())["skipped_inputs"][0]["reason"]
    )
    _drop(out, shard=0, target=1)
    problems = verify_output(str(out)).problems
    assert any(
        p.startswith("shard-000000.tar: input 1 (")
        and "is neither kept nor skipped (in its range [0, 3)," in p
        for p in problems
    ), problems
    assert any(
        p == "shard-000000.tar: its entry accounts for 2 inputs, its range [0, 3) holds 3"
        for p in problems
    ), problems
    assert not any("shard-000001" in p for p in problems)


def test_verify_finds_a_tile_missing_from_its_image(inputs, tmp_path):
    """Tiles: each image is several targets; one of them dropped with the entry's views
    lowered still leaves every input with samples, but not every view of it."""
    out = _run(inputs, tmp_path / "out", mode="tile")
    entry = json.loads((out / "shard-000001.json").read_text())
    assert entry["views"] > 2  # the bundled tiles (364x481) make several 128 px tiles each
    _drop(out, shard=1, target=5, view=1)
    problems = verify_output(str(out)).problems
    assert any(
        p.startswith("shard-000001.tar: input 5 (") and "views [1] of its" in p for p in problems
    ), problems
    assert not any("shard-000000" in p for p in problems)


def _damage_several(out: Path) -> None:
    """Damage in shards 1, 2 and 4 of six: an input dropped, a key from another shard, a key
    twice, each with its entry's checksum made to match."""
    _drop(out, shard=1, target=1)
    for shard, extra in ((2, 3), (4, 4)):  # shard 2 gets input 3's sample, shard 4 its own twice
        tar, entry_file = out / f"shard-{shard:06d}.tar", out / f"shard-{shard:06d}.json"
        source = out / f"shard-{extra:06d}.tar"
        samples = list(iter_tar(tar.read_bytes()))
        samples.append(next(iter(iter_tar(source.read_bytes()))))
        data = build_tar(samples)
        tar.write_bytes(data)
        entry = json.loads(entry_file.read_text())
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        entry_file.write_text(json.dumps(entry))


def test_verify_reports_the_same_problems_in_shard_order_whatever_the_workers(
    inputs, tmp_path, capsys
):
    """Keys are checked shard by shard: a key copied into another shard does not belong there,
    a key twice in a shard is a duplicate; the report's order does not depend on the threads."""
    out = _run(inputs, tmp_path / "out", per_shard=1)  # six shards of one input each
    _damage_several(out)
    one, four = verify_output(str(out), workers=1), verify_output(str(out), workers=4)
    assert one.problems == four.problems and one.count == len(one.problems)
    shards = [p[len("shard-") : len("shard-000000")] for p in one.problems if p.startswith("shard")]
    assert shards == sorted(shards) and {"000001", "000002", "000004"} <= set(shards)
    assert "shard-000002.tar: key s-0000003-00 does not belong to this shard" in one.problems
    assert "shard-000004.tar: duplicate key s-0000004-00" in one.problems
    assert any(p.startswith("manifest says") for p in one.problems)

    assert main(["verify", str(out), "--show", "2", "--workers", "3", "--no-progress"]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [f"PROBLEM {p}" for p in one.problems[:2]]
    assert printed[2:4] == [
        f"... and {one.count - 2} more",
        f"FAILED: {one.shards} shard(s), {one.samples} samples, {one.count} problem(s)",
    ]
    assert one.damaged == [1, 2, 4]
    assert printed[4:] == [
        "3 damaged shard(s) (shard-000001.tar, shard-000002.tar, shard-000004.tar): "
        f"'cai-ray verify {out} --repair' removes them, then the job's 'cai-ray synth --config "
        "...' rewrites them (a run reads no tar, so it cannot tell a damaged shard from a whole "
        "one)"
    ]


def test_a_shard_the_store_cannot_serve_is_not_damaged_and_repair_keeps_it(
    inputs, tmp_path, monkeypatch
):
    """A read that fails for the store's sake (it gave up after its retries, no permission)
    says nothing of a shard's bytes: verify reports it unchecked, and ``--repair``, which
    removes damaged shards, removes nothing. Before, such a shard counted as damaged, and a
    repair during an outage deleted whole shards."""
    from cai_ray.io import storage
    from cai_ray.pipeline.verify import repair_output

    out = _run(inputs, tmp_path / "out", per_shard=1)
    read = storage.read_bytes

    def store_gives_up(url: str) -> bytes:
        if url.endswith("shard-000003.tar"):
            raise storage.StorageError(f"cannot read {url} at http://127.0.0.1:9 (gave up)")
        return read(url)

    monkeypatch.setattr(storage, "read_bytes", store_gives_up)
    report = repair_output(str(out))
    assert not report.ok and report.damaged == []
    assert any(
        p.startswith("shard-000003.tar: could not be read, not checked") for p in report.problems
    )
    monkeypatch.setattr(storage, "read_bytes", read)
    assert verify_output(str(out)).ok  # nothing was removed


def test_verify_streams_problems_before_checking_every_shard(inputs, tmp_path, monkeypatch):
    from cai_ray.pipeline import verify

    out = _run(inputs, tmp_path / "out", per_shard=1)  # six shards of one input each
    _drop(out, shard=1, target=1)
    checked: list[int] = []
    check = verify._check_shard
    monkeypatch.setattr(verify, "_check_shard", lambda *a: checked.append(a[1]) or check(*a))
    seen_at: list[int] = []
    report = verify_output(str(out), workers=1, on_problem=lambda p: seen_at.append(len(checked)))
    assert report.count == len(seen_at) and report.problems == []
    assert seen_at[0] < 6 == len(checked)  # the first problem came with shards left to check


def _linked_output(tmp_path: Path, count: int) -> str:
    """An output of ``count`` shards of one 32 px input each (links to the demo tiles)."""
    folder = tmp_path / f"linked-{count}"
    folder.mkdir()
    tiles = sorted((DEMO / "normal").glob("*.jpg"))
    for i in range(count):
        (folder / f"{i:04d}.jpg").symlink_to(tiles[i % len(tiles)])
    out = tmp_path / f"out-{count}"
    config = SynthConfig.model_validate(
        {
            "image_size": 32,
            "color": "grey",
            "inputs": {"paths": [str(folder)]},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 1},
            "output": {"path": str(out), "targets_per_shard": 1, "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )
    run_synth(config, show_progress=False)
    return str(out)


def test_verify_memory_does_not_hold_every_key_or_entry(tmp_path):
    """Between 20 and 100 shards the peak grows by the listing's names alone (under 2 KB a
    shard); every shard's keys, inputs and entries held at once took 3 KB and more."""
    import tracemalloc

    def peak(out: str) -> int:
        tracemalloc.start()
        try:
            assert verify_output(out, workers=2).ok
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peaks = {}
    for count in (20, 100):
        out = _linked_output(tmp_path, count)
        verify_output(out, workers=2)  # imports and caches outside the measure
        # tracemalloc sees every thread: the least of three leaves out what another thread of
        # the test session (Ray's, a heartbeat) allocated meanwhile
        peaks[count] = min(peak(out) for _ in range(3))
    assert (peaks[100] - peaks[20]) / 80 < 2048, peaks
