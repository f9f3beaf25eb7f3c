"""The plan streams the input list: its identity is that of the whole-list plan of before, and
the driver's memory does not grow with the number of targets."""

import hashlib
import json
import posixpath
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from cai_ray.config import SynthConfig
from cai_ray.io import inputs
from cai_ray.pipeline.synth import plan_job


def _generated(folder, count: int) -> str:
    """A list of ``count`` inputs that need not exist (planning reads only the list)."""
    paths = [f"s3://bucket/normals/part{i // 100:05d}/img{i:08d}.png" for i in range(count)]
    url = str(folder / f"generated-{count}.parquet")
    stamps = [f"{1000 + i % 7}:etag{i}" for i in range(count)]
    pq.write_table(pa.table({"path": paths, "stamp": stamps}), url)
    return url


def _config(listed: str, out) -> SynthConfig:
    return SynthConfig.model_validate(
        {
            "color": "grey",  # no input read to guess it
            "inputs": {"paths": [listed]},
            "synthesizer": {"method": "cutpaste"},
            "output": {"path": str(out), "targets_per_shard": 32},
        }
    )


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def test_the_identity_is_that_of_the_whole_list(tmp_path):
    listed = _generated(tmp_path, 1000)
    plan = plan_job(_config(listed, tmp_path / "out"), str(tmp_path))
    rows = list(inputs.iter_rows(listed))
    keys = [posixpath.relpath(inputs.location(path), "/bucket/normals") for path, _ in rows]
    stamps = [stamp for _, stamp in rows]
    assert plan.count == 1000 and plan.num_shards == 32 and plan.shard_range(31) == (992, 1000)
    assert plan.inputs_root == "s3://bucket/normals"
    assert plan.identity["inputs"] == _digest(keys)
    assert plan.identity["input_stamps"] == [
        _digest(stamps[start : start + 32])[:16] for start in range(0, 1000, 32)
    ]


def _peak_planning(tmp_path, count: int) -> int:
    listed = _generated(tmp_path, count)
    config = _config(listed, tmp_path / "out")
    tracemalloc.start()
    try:
        plan = plan_job(config, str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.count == count
    return peak


def test_planning_memory_does_not_grow_with_the_targets(tmp_path):
    """Python's allocations only (Arrow's buffers are its own, and batch-sized too). Five
    times the targets add only a short digest per shard (5,000 more: about 0.4 MB), where a
    dict and a stamp per target, as before the list, would add about 150 MB."""
    small, large = _peak_planning(tmp_path, 40_000), _peak_planning(tmp_path, 200_000)
    assert large < 32 * 2**20
    assert large - small < 3 * 2**20


def test_a_store_that_gives_up_while_the_colour_is_probed_is_named(tmp_path):
    """``color: auto`` reads the first inputs: a store that is down was reported as "none of
    the first 20 inputs is a readable image", hiding the endpoint; now its own error says it."""
    import pytest

    from cai_ray.io import storage

    config = _config(_generated(tmp_path, 3), tmp_path / "out")
    config.color = "auto"
    closed = "http://127.0.0.1:9"  # nothing listens there (tests/conftest.py)
    storage.configure(endpoint_url=closed, request_attempts=1)
    try:
        with pytest.raises(storage.StorageError, match=f"s3://bucket/normals/.* at {closed}"):
            plan_job(config, str(tmp_path))
    finally:
        storage.configure()
