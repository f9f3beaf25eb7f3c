"""The PyTorch datasets over a real synthesis output (the pipeline tests' undisturbed job, 13
shards, one holding no sample), checked against the shard entries and against what webdataset
decodes; and the three recipes for reading shards in docs/API.md, run as written. Here, beside the
pipeline tests, to share their session's output."""

import os
import pickle
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from cai_ray.io import storage
from cai_ray.io.layout import committed_shards, shard_name
from cai_ray.io.tar import build_tar, iter_tar
from cai_ray.io.torch_dataset import ShardDataset, ShardStream, collate
from tests.conftest import REPO
from tests.docs import code_blocks, doc_section


@pytest.fixture(autouse=True)
def _no_ray_driver_across_a_fork(undisturbed):
    """DataLoader workers fork this process; a fork of a live Ray driver breaks the parent's gRPC
    channels to its GCS, and the next test that asks Ray anything waits forever. The outputs are
    made first (the session's ``undisturbed``), then Ray is stopped; later tests start it."""
    import ray

    ray.shutdown()
    yield


def _output(undisturbed) -> str:
    return str(undisturbed.output.path)


def _webdataset_samples(out: str) -> dict[str, dict]:
    """Every sample of the output's committed shards as webdataset decodes it, by key, in
    shard order."""
    urls = [storage.join(out, shard_name(index)) for index in sorted(committed_shards(out))]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode("l8")}


def _entry_counts(out: str) -> tuple[int, Counter]:
    entries = committed_shards(out).values()
    labels: Counter = Counter()
    for entry in entries:
        labels.update({int(label): n for label, n in entry["counts"]["label"].items()})
    return sum(entry["samples"] for entry in entries), labels


def test_the_map_dataset_is_every_sample_once_as_webdataset_decodes_it(undisturbed):
    out = _output(undisturbed)
    expected = _webdataset_samples(out)
    total, labels = _entry_counts(out)
    assert len(expected) == total > 0
    stored = ShardDataset(out, pixels="uint8")
    assert len(stored) == total  # from the entries: no shard read yet
    assert not stored._cache
    items = [stored[i] for i in range(len(stored))]
    assert [item["key"] for item in items] == list(expected)  # shard order, tar order
    assert Counter(item["label"] for item in items) == labels
    for item in items:
        sample = expected[item["key"]]
        assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 1
        assert np.array_equal(item["image"][0].numpy(), sample["png"])
        assert item["mask"].shape == item["image"].shape
        assert np.array_equal(item["mask"][0].numpy(), sample["mask.png"])
        assert item["meta"] == sample["json"] and item["label"] == sample["json"]["label"]
    assert stored[-1]["key"] == items[-1]["key"]
    with pytest.raises(IndexError):
        stored[total]

    scaled = ShardDataset(out, color="rgb", transform=lambda item: item["image"])
    first = scaled[0]
    assert first.dtype == torch.float32 and first.shape[0] == 3
    assert torch.equal(first[2], items[0]["image"][0].float() / 255)  # grey stored, R = G = B


def test_a_dataloader_with_two_workers_gives_each_sample_once(undisturbed):
    out = _output(undisturbed)
    keys = list(_webdataset_samples(out))

    def loaded(dataset, **options) -> list[str]:
        loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate, **options)
        batches = list(loader)
        assert all(b["image"].shape[1:] == b["mask"].shape[1:] for b in batches)
        assert all(len(b["meta"]) == len(b["key"]) == len(b["label"]) for b in batches)
        return [key for batch in batches for key in batch["key"]]

    shuffled = loaded(ShardDataset(out), shuffle=True)
    assert sorted(shuffled) == sorted(keys) and shuffled != keys

    stream = ShardStream(out, shuffle_buffer=8, seed=1)
    first = loaded(stream)
    assert sorted(first) == sorted(keys)
    assert loaded(stream) == first  # the same (seed, epoch): the same order
    stream.set_epoch(1)
    second = loaded(stream)
    assert sorted(second) == sorted(keys) and second != first


def _loaded_keys(dataset, workers: int = 2, **options) -> list[str]:
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate, **options)
    return [key for batch in loader for key in batch["key"]]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 5 worker processes")
def test_data_parallel_ranks_get_equal_steps_from_the_shard_entries(undisturbed):
    """Two ranks of five DataLoader workers each: 12 shards dealt to 10 readers, two of which
    get two. By default (world_size > 1) every reader stops at the smallest reader's share, so
    both ranks take the same steps; with ``equal_steps=False`` every sample comes once, in
    unequal shares."""
    out = _output(undisturbed)
    keys = list(_webdataset_samples(out))
    shards = ShardStream(out).shards
    sizes = [shard.samples for shard in shards]
    order = np.random.default_rng([1, 0]).permutation(len(shards))  # seed 1, epoch 0
    shares = [sum(sizes[i] for i in order[reader::10]) for reader in range(10)]
    ranks = [sum(shares[:5]), sum(shares[5:])]
    assert ranks[0] != ranks[1]  # unequal shares: the case to handle

    def stream(rank: int, **options) -> ShardStream:
        return ShardStream(out, rank=rank, world_size=2, seed=1, **options)

    unequal = [_loaded_keys(stream(rank, equal_steps=False), workers=5) for rank in range(2)]
    assert sorted(unequal[0] + unequal[1]) == sorted(keys)
    assert [len(rank) for rank in unequal] == ranks

    equal = [_loaded_keys(stream(rank, shuffle_buffer=8), workers=5) for rank in range(2)]
    assert [len(rank) for rank in equal] == [5 * min(shares)] * 2
    assert len(set(equal[0] + equal[1])) == 10 * min(shares) and set(equal[0]) <= set(keys)


def test_a_reader_without_a_shard_is_named(undisturbed):
    out = _output(undisturbed)
    shards = len(ShardStream(out).shards)
    readers = (
        rf"{shards} shards for {shards + 1} readers \({shards + 1} ranks x 1 DataLoader workers\)"
    )
    with pytest.raises(ValueError, match=f"{readers}: with equal_steps every epoch would be empty"):
        list(ShardStream(out, rank=0, world_size=shards + 1))
    with pytest.warns(UserWarning, match=f"{readers}: some read nothing"):
        assert list(ShardStream(out, rank=shards, world_size=shards + 1, equal_steps=False)) == []


def test_the_transform_runs_in_the_iterating_thread_so_augmentations_repeat(undisturbed):
    out = _output(undisturbed)
    threads = set()

    def augment(item):
        threads.add(threading.get_ident())
        return item["key"], float(torch.rand(1))

    def drawn() -> list:
        torch.manual_seed(0)
        return list(ShardStream(out, shuffle_buffer=4, transform=augment, decode_workers=4))

    first = drawn()
    assert threads == {threading.get_ident()}
    assert drawn() == first and len({draw for _, draw in first}) == len(first)


def test_set_epoch_reaches_persistent_spawned_workers(undisturbed):
    """Workers kept across epochs, started by spawn as a process holding a Ray driver must:
    each epoch is the order a fresh loader gives it."""
    out = _output(undisturbed)
    fresh = ShardStream(out, shuffle_buffer=8, seed=1)
    expected = []
    for epoch in range(2):
        fresh.set_epoch(epoch)
        expected.append(_loaded_keys(fresh))
    assert expected[0] != expected[1]
    stream = ShardStream(out, shuffle_buffer=8, seed=1)
    loader = DataLoader(
        stream,
        batch_size=4,
        num_workers=2,
        collate_fn=collate,
        persistent_workers=True,
        multiprocessing_context="spawn",
    )
    for epoch in range(2):
        stream.set_epoch(epoch)
        assert [key for batch in loader for key in batch["key"]] == expected[epoch]
    assert pickle.loads(pickle.dumps(stream)).epoch == 1  # a plain pickle takes the value


def test_an_output_on_s3_reads_as_the_local_one(undisturbed, s3_bucket):
    out = _output(undisturbed)
    remote = f"{s3_bucket}/synth/out"
    storage.copy_folder(out, remote)
    local, stored = ShardDataset(out, pixels="uint8"), ShardDataset(remote, pixels="uint8")
    assert len(stored) == len(local)
    for i in (0, len(local) // 2, len(local) - 1):
        assert stored[i]["key"] == local[i]["key"]
        assert torch.equal(stored[i]["image"], local[i]["image"])
        assert torch.equal(stored[i]["mask"], local[i]["mask"])
    # DataLoader workers are forks of this process, which has already read from the store
    loader = DataLoader(ShardStream(remote), batch_size=4, num_workers=2, collate_fn=collate)
    streamed = [key for batch in loader for key in batch["key"]]
    assert sorted(streamed) == sorted(local[i]["key"] for i in range(len(local)))


def test_a_path_that_is_not_an_output_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not a shard")
    for path in (tmp_path / "images", tmp_path / "missing", tmp_path / "images" / "a.png"):
        for dataset in (ShardDataset, ShardStream):
            with pytest.raises(FileNotFoundError, match=f"no committed shards in {path}"):
                dataset(str(path))
    with pytest.raises(FileNotFoundError, match="no committed shards in"):
        ShardDataset([str(tmp_path / "missing"), str(tmp_path / "images")])


def test_a_shard_changed_after_its_commit_is_named(undisturbed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(_output(undisturbed), out)
    index = min(i for i, entry in committed_shards(str(out)).items() if entry["samples"] > 1)
    tar = out / shard_name(index)
    tar.write_bytes(build_tar(list(iter_tar(tar.read_bytes()))[1:]))
    dataset = ShardDataset(str(out))
    with pytest.raises(ValueError, match=rf"{shard_name(index)} holds \d+ samples where its entry"):
        for i in range(len(dataset)):
            dataset[i]


def _recipes() -> list[str]:
    section = doc_section("docs/API.md", "Reading the shards from your training code")
    return code_blocks(section, "python")


def test_the_docs_have_three_recipes():
    recipes = _recipes()
    assert len(recipes) == 3
    assert "torch_dataset" in recipes[0] and "webdataset" in recipes[1] and "datasets" in recipes[2]


def _run_recipe(code: str, output: str, cwd: Path, **env: str) -> str:
    """The recipe run in a fresh interpreter from a folder whose out/demo is ``output``."""
    (cwd / "out").mkdir()
    (cwd / "out" / "demo").symlink_to(output)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_torch_recipe_runs(undisturbed, tmp_path):
    total, _ = _entry_counts(_output(undisturbed))
    printed = _run_recipe(_recipes()[0], _output(undisturbed), tmp_path).splitlines()
    assert printed[0].startswith(f"{total} samples; a batch: (8, 1, 256, 256) [")
    assert printed[1:] == [f"epoch 0: {total} samples", f"epoch 1: {total} samples"]


def test_the_webdataset_recipe_runs(undisturbed, tmp_path):
    out = _output(undisturbed)
    total, _ = _entry_counts(out)
    last = list(_webdataset_samples(out).values())[-1]
    printed = _run_recipe(_recipes()[1], out, tmp_path)
    method = last["json"]["method"]
    assert printed == f"{total} samples; the last: {last['__key__']} (256, 256) {method}\n"


def test_the_hugging_face_recipe_runs(undisturbed, tmp_path):
    pytest.importorskip("datasets")
    out = _output(undisturbed)
    total, _ = _entry_counts(out)
    first = next(iter(_webdataset_samples(out).values()))
    printed = _run_recipe(
        _recipes()[2],
        out,
        tmp_path,
        HF_HOME=str(tmp_path / "hf"),  # its cache, here rather than in the home folder
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    method = first["json"]["method"]
    assert printed == f"{total} samples; the first: {first['__key__']} (256, 256) {method}\n"


def test_without_torch_the_import_names_the_extra():
    """As on the base install: torch cannot be imported (a module set to None in sys.modules)."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from cai_ray.extras import MissingExtraError\n"
        "try:\n"
        "    import cai_ray.io.torch_dataset\n"
        "except MissingExtraError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "cai_ray.io.torch_dataset needs torch, which the base install leaves out: "
        'pip install -e ".[train]"\n'
    )
