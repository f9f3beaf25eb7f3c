"""The plan streams the input list: its identity is that of the whole-list plan of before, and
the driver's memory does not grow with the number of targets."""

import hashlib
import json
import posixpath
import subprocess
import sys
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_ray.config import SynthConfig
from cai_ray.io import inputs
from cai_ray.pipeline.synth import plan_job
from tests.conftest import DEMO


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


_DRY_RUN = """
import json, sys
from cai_ray.config import SynthConfig
from cai_ray.pipeline.synth import dry_run
report = dry_run(SynthConfig.model_validate_json(sys.argv[1]))
# VmHWM: this process's own peak (getrusage's ru_maxrss keeps the parent's across exec)
status = open("/proc/self/status").read().splitlines()
peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"report": report, "peak_mb": peak_kb / 1024}))
"""


def _local_list(folder, count: int) -> str:
    """``count`` sorted local inputs, as ``cai-ray inputs list`` writes them (row groups of
    4,096): the first two links to demo tiles (the dry run makes them), the rest need not
    exist (a plan reads only the list)."""
    images = folder / f"images-{count}"
    images.mkdir()
    tiles = sorted((DEMO / "normal").glob("*.jpg"))[:2]
    for i, tile in enumerate(tiles):
        (images / f"{i:08d}.jpg").symlink_to(tile)
    paths = [f"{images}/{i:08d}.jpg" for i in range(count)]
    stamps = [f"{(images / f'{i:08d}.jpg').stat().st_size}:0" for i in range(len(tiles))]
    stamps += [f"{1000 + i % 7}:1700000000000000000" for i in range(len(tiles), count)]
    url = str(folder / f"inputs-{count}.parquet")
    pq.write_table(pa.table({"path": paths, "stamp": stamps}), url, row_group_size=4096)
    return url


def _dry_run_peak(tmp_path, count: int) -> tuple[dict, float]:
    """The dry run of a job over ``count`` inputs in a fresh interpreter: its report and the
    process's peak RSS in MB (imports included)."""
    config = _config(_local_list(tmp_path, count), tmp_path / f"out-{count}")
    done = subprocess.run(
        [sys.executable, "-c", _DRY_RUN, config.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    return result["report"], result["peak_mb"]


@pytest.mark.slow
def test_a_dry_run_of_a_million_targets_stays_in_a_few_hundred_mb(tmp_path):
    """The driver's peak RSS over a dry run, measured: a million targets cost what ten
    thousand do, but a batch of the list and a short digest per shard (31,250 of them)."""
    small_report, small = _dry_run_peak(tmp_path, 10_000)
    report, large = _dry_run_peak(tmp_path, 1_000_000)
    assert (report["targets"], report["shards"]) == (1_000_000, 31_250)
    assert small_report["targets"] == 10_000
    assert report["probe"]["inputs"] == 2, report["probe"]
    print(f"peak RSS: {small:.0f} MB at 10^4 targets, {large:.0f} MB at 10^6")
    assert large < 400
    assert large - small < 80
