"""The manifest is merged, not rebuilt: a resume merges the previous manifest with the entries
it lacks and the shards it makes, reading no entry of a shard the manifest covers, and writes
the bytes an uninterrupted run writes; a manifest it cannot trust (stale, damaged) is rebuilt
from every entry. In-process executor: the stages Ray runs."""

import itertools
import json
import logging
import shutil
from pathlib import Path

import pytest

from cai_ray.config import SynthConfig
from cai_ray.io import layout
from cai_ray.pipeline import synth
from cai_ray.pipeline.stages import InjectionStage
from cai_ray.pipeline.synth import Tally, covered_shards, run_synth, summarize
from cai_ray.pipeline.verify import verify_output
from tests.conftest import DEMO, demo_tiles

JOB = {
    "fingerprint": "f",
    "targets": 12,
    "shards": 6,
    "targets_per_shard": 2,
    "key_prefix": "s",
    "unlisted_inputs": [{"path": "/in/notes.txt", "reason": "not an image"}],
}


def _entry(index: int) -> dict:
    """A shard of two inputs (paths sort as their rows do), with skips, failures and damaged
    records in some shards only."""
    rows = [2 * index, 2 * index + 1]
    skipped = [{"path": f"/in/{rows[1]:02d}.jpg", "reason": "unreadable"}] if index % 2 else []
    if index == 4:
        skipped = [{"path": f"/in/{rows[0]:02d}.jpg", "view": v, "reason": "flat"} for v in (1, 0)]
    failed = [
        {"key": layout.sample_key("s", rows[0], k), "reason": "no room", "cause": "placement"}
        for k in range(index % 3)
    ]
    damaged = {f"daad/shard-{index % 2}.tar#0": "truncated"} if index in (1, 3, 4) else {}
    return {
        "shard": layout.shard_name(index),
        "index": index,
        "views": 2,
        "samples": 3 + index,
        "bytes": 100 * index,
        "counts": {"method": {"cai": 3 + index}, "scale": {"large": index} if index else {}},
        "skipped_inputs": skipped,
        "failed_samples": failed,
        "damaged_sources": damaged,
        "storage_retries": index % 3,
    }


def _tally(indices) -> Tally:
    tally = Tally()
    for index in indices:
        tally.add(index, _entry(index))
    return tally


def test_a_merged_manifest_equals_the_one_summed_from_every_entry():
    whole = summarize(JOB, _tally(reversed(range(6))))  # fold order does not matter
    assert whole["skipped_inputs"][0] == JOB["unlisted_inputs"][0]
    assert [f["key"] for f in whole["failed_samples"]][:2] == ["s-0000002-00", "s-0000004-00"]
    assert whole["complete"] and whole["samples"] == sum(3 + i for i in range(6))
    assert whole["storage_retries"] == sum(i % 3 for i in range(6))
    for size in range(7):
        for before in itertools.combinations(range(6), size):
            previous = summarize(JOB, _tally(before))
            assert covered_shards(JOB, previous) == set(before)
            after = [i for i in range(6) if i not in before]
            merged = summarize(JOB, _tally(after), json.loads(json.dumps(previous)))
            assert json.dumps(merged) == json.dumps(whole), before


def test_a_manifest_of_another_job_or_damaged_is_not_merged():
    manifest = summarize(JOB, _tally(range(3)))
    with pytest.raises(ValueError, match="another job's"):
        covered_shards({**JOB, "fingerprint": "g"}, manifest)
    with pytest.raises(ValueError, match="unlisted"):
        covered_shards({**JOB, "unlisted_inputs": [{"path": "/in/a.txt", "reason": "?"}]}, manifest)
    with pytest.raises(ValueError, match="lacks counts"):
        covered_shards(JOB, {k: v for k, v in manifest.items() if k != "counts"})


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    demo_tiles(folder, 5)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")  # a skip in shard 0
    (folder / "notes.txt").write_text("not an image")  # an unlisted input
    return folder


def _config(inputs: Path, out: Path) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "seed": 3,
            "image_size": 64,
            "inputs": {"paths": [str(inputs)]},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 2},
            "output": {"path": str(out), "targets_per_shard": 1, "preview_samples": 0},
            "resources": {"executor": "local"},
        }
    )


def _interrupt_after(monkeypatch, commits: int) -> None:
    """The run fails right after its ``commits``-th shard committed (the manifest written
    after each shard before it): a driver killed between a commit and the next manifest."""
    commit = InjectionStage.commit
    made = []

    def failing(self, index, *shard):
        written = commit(self, index, *shard)
        made.append(index)
        if len(made) == commits:
            raise RuntimeError("driver killed")
        return written

    monkeypatch.setattr(InjectionStage, "commit", failing)
    monkeypatch.setattr(synth, "MANIFEST_INTERVAL_S", 0.0)


def _entry_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    read_json = layout.read_json

    def counted(url: str) -> dict:
        if layout.SHARD_PATTERN.match(url.rsplit("/", 1)[-1]):
            reads.append(url.rsplit("/", 1)[-1])
        return read_json(url)

    monkeypatch.setattr(layout, "read_json", counted)
    return reads


def test_a_resume_merges_the_manifest_reading_only_the_entries_it_lacks(
    inputs, tmp_path, monkeypatch
):
    whole = tmp_path / "whole"
    run_synth(_config(inputs, whole), show_progress=False)
    out = tmp_path / "out"
    config = _config(inputs, out)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(RuntimeError, match="driver killed"):
            run_synth(config, show_progress=False)
    partial = json.loads((out / "manifest.json").read_text())
    assert partial["shards"] == ["shard-000000.tar", "shard-000001.tar"]
    assert not partial["complete"]
    # an entry the manifest covers, damaged: a resume does not read it, verify does
    (out / "shard-000000.json").write_text("{damaged")
    reads = _entry_reads(monkeypatch)
    manifest = run_synth(config, show_progress=False)
    assert reads == ["shard-000002.json"]  # committed after the last manifest
    assert manifest["complete"] and manifest["shards_made"] == 3
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()
    assert manifest["skipped_inputs"][0]["path"].endswith("notes.txt")
    assert any("unreadable" in p for p in verify_output(str(out)).problems)

    reads.clear()
    assert run_synth(config, show_progress=False)["shards_made"] == 0
    assert reads == []  # a complete output: the manifest alone
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()


def test_a_stale_or_damaged_manifest_is_rebuilt_from_the_entries(
    inputs, tmp_path, monkeypatch, caplog
):
    whole = tmp_path / "whole"
    run_synth(_config(inputs, whole), show_progress=False)
    out = tmp_path / "out"
    config = _config(inputs, out)
    run_synth(config, show_progress=False)
    for name in ("shard-000001.tar", "shard-000001.json"):
        (out / name).unlink()  # the manifest covers a shard no longer committed
    reads = _entry_reads(monkeypatch)
    with caplog.at_level(logging.INFO, logger="cai_ray.pipeline.synth"):
        assert run_synth(config, show_progress=False)["shards_made"] == 1
    assert "1 shard(s) no longer committed" in caplog.text
    assert "summing every shard's entry" in caplog.text
    assert len(reads) == 5  # the committed shards' entries, not the one made
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()

    (out / "manifest.json").write_text("{")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cai_ray.pipeline.synth"):
        run_synth(config, show_progress=False)
    assert "is not merged" in caplog.text
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()


def test_a_manifest_that_cannot_be_written_during_the_run_does_not_stop_it(
    inputs, tmp_path, monkeypatch, caplog
):
    whole = tmp_path / "whole"
    run_synth(_config(inputs, whole), show_progress=False)
    monkeypatch.setattr(synth, "MANIFEST_INTERVAL_S", 0.0)
    write_json = layout.write_json
    failures = []

    def flaky(url: str, value: dict, **options) -> None:
        if url.endswith("manifest.json") and len(failures) < 2:
            failures.append(url)
            raise OSError("the store is away")
        write_json(url, value, **options)

    monkeypatch.setattr(layout, "write_json", flaky)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="cai_ray.pipeline.synth"):
        assert run_synth(_config(inputs, out), show_progress=False)["complete"]
    assert len(failures) == 2 and "could not write the manifest so far" in caplog.text
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()


def _summed(out: Path) -> dict:
    """The manifest summed from every committed entry: what a merged one must equal."""
    tally = Tally()
    for index, entry in layout.committed_shards(str(out)).items():
        tally.add(index, entry)
    return summarize(layout.read_json(str(out / "job.json")), tally)


def test_inputs_moved_between_out_of_order_commits_and_the_resume_keep_shard_order(
    tmp_path, monkeypatch
):
    """Skips were merged by path, which is shard order only while all
    lie under one folder: inputs moved (a resume accepts it) after shards committed out of
    order (as under Ray) gave a manifest in another order than its entries'."""
    before = tmp_path / "aa_inputs"
    before.mkdir()
    for i, image in enumerate(sorted((DEMO / "normal").glob("*.jpg"))[:4]):
        shutil.copy(image, before / f"{i:02d}a.jpg")
        (before / f"{i:02d}b.jpg").write_bytes(b"broken")  # a skip in every shard
    out = tmp_path / "out"
    config = _config(before, out).model_copy(deep=True)
    config.output.targets_per_shard = 2
    run_locally = synth._run_locally
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        patch.setattr(
            synth, "_run_locally", lambda c, p, todo, *a: run_locally(c, p, todo[::-1], *a)
        )
        with pytest.raises(RuntimeError, match="driver killed"):
            run_synth(config, show_progress=False)
    after = before.rename(tmp_path / "zz_inputs")
    config.inputs.paths = [str(after)]
    assert run_synth(config, show_progress=False)["complete"]
    merged = json.loads((out / "manifest.json").read_text())
    assert json.dumps(merged, sort_keys=True) == json.dumps(_summed(out), sort_keys=True)
    assert [Path(s["path"]).name for s in merged["skipped_inputs"]] == [
        f"{i:02d}b.jpg" for i in range(4)
    ]


def test_a_manifest_that_cannot_be_merged_is_replaced_before_any_shard_is_made(
    inputs, tmp_path, monkeypatch
):
    """A rejected manifest left in place was trusted again by a later
    resume once the shards it named were remade, whatever they held by then."""
    out = tmp_path / "out"
    config = _config(inputs, out)
    run_synth(config, show_progress=False)
    for name in ("shard-000001.tar", "shard-000001.json"):
        (out / name).unlink()
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        with pytest.raises(RuntimeError, match="driver killed"):
            run_synth(config, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "shard-000001.tar" not in manifest["shards"] and not manifest["complete"]


def test_a_manifest_with_fields_of_the_wrong_kind_is_summed_again(inputs, tmp_path):
    """A manifest that parsed but held a string for a count stopped
    every resume with a TypeError; it is now summed from the entries like a damaged one."""
    whole = tmp_path / "whole"
    run_synth(_config(inputs, whole), show_progress=False)
    out = tmp_path / "out"
    config = _config(inputs, out)
    run_synth(config, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["samples"], manifest["shards"] = "5", manifest["shards"][:-1]
    (out / "manifest.json").write_text(json.dumps(manifest))
    for name in ("shard-000005.tar", "shard-000005.json"):
        (out / name).unlink()
    assert run_synth(config, show_progress=False)["complete"]
    assert (out / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()
