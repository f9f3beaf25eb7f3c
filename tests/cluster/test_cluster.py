"""The synthesis job on a real multi-node Ray cluster, reading and writing S3 (SeaweedFS)."""

import json
import os
import subprocess
import sys
import time

import pytest

from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.io import storage
from tests.conftest import DEMO, REPO
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars
from tests.s3server import local_s3

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster_inputs(s3_server, local_cluster):
    """Normal images and a DAAD in a bucket, as a cluster's nodes would share them."""

    local_s3(s3_server.endpoint).mkdir("cluster")
    storage.configure(endpoint_url=s3_server.endpoint)
    for image in sorted((DEMO / "normal").glob("*.jpg")):
        storage.write_bytes_atomic(f"s3://cluster/normals/{image.name}", image.read_bytes())
    spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "demo.yaml")
    build_daad(spec, DEMO / "defects", "s3://cluster/daad")
    storage.configure()
    return "s3://cluster"


def _config(tmp_path, bucket: str, out: str) -> str:
    config = {
        "name": "cluster",
        "seed": 11,
        "inputs": {"paths": [f"{bucket}/normals/"]},
        "daad": {"path": f"{bucket}/daad"},
        "cai": {"quotas": {"large": 2, "medium": 1, "small": 1}},
        "output": {"path": f"{bucket}/{out}", "targets_per_shard": 1, "preview_samples": 0},
    }
    path = tmp_path / f"{out}.yaml"
    path.write_text(json.dumps(config))
    return str(path)


def _driver(cluster, config: str, endpoint: str) -> subprocess.Popen:
    """``cai-ray synth`` as a driver joining the cluster (what ``ray job submit`` runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cai_ray.cli", "-v", "--s3-endpoint-url", endpoint, "synth"]
        + ["--config", config, "--no-progress"],
        env={**os.environ, "RAY_ADDRESS": cluster.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _verify(endpoint: str, out: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "--s3-endpoint-url", endpoint, "verify", out],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def spread_run(local_cluster, cluster_inputs, s3_server, tmp_path_factory):
    out = f"{cluster_inputs}/spread"
    driver = _driver(
        local_cluster,
        _config(tmp_path_factory.mktemp("c"), cluster_inputs, "spread"),
        s3_server.endpoint,
    )
    log, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, log
    return out, log


def test_the_job_runs_across_nodes_and_verifies(local_cluster, spread_run, s3_server):
    out, log = spread_run
    assert "cluster CPUs 3" in log
    # three injection actors of 0.75 CPU cannot share a 1-CPU node: each ran on its own node
    assert "injection_actors=3" in log
    assert len(local_cluster.actor_nodes("InjectionStage")) == 3
    assert "OK: 12 shard(s), 48 samples" in _verify(s3_server.endpoint, out)


@pytest.mark.fault_matrix
def test_losing_a_worker_node_mid_job_loses_nothing(
    local_cluster, cluster_inputs, spread_run, s3_server, tmp_path
):
    """One of the two worker nodes lost for good after the first commits: the job finishes on
    the head and the other worker, with the bytes of the undisturbed run."""
    out = f"{cluster_inputs}/node-lost"
    driver = _driver(
        local_cluster, _config(tmp_path, cluster_inputs, "node-lost"), s3_server.endpoint
    )
    storage.configure(endpoint_url=s3_server.endpoint)
    try:
        deadline = time.monotonic() + 300
        committed = 0
        while time.monotonic() < deadline and not committed:  # the first shard's entry
            assert driver.poll() is None, driver.communicate()[0]
            time.sleep(0.1)
            committed = sum("/shard-" in url for url in storage.list_files(out, ".json"))
        assert committed, "no shard committed before the deadline"
        lost_at = time.monotonic()
        local_cluster.lose_worker(0)
        log, _ = driver.communicate(timeout=400)
        finished_s = time.monotonic() - lost_at
        assert driver.returncode == 0, log
        _verify(s3_server.endpoint, out)
        figures = compare(shard_tars(out), shard_tars(spread_run[0]))
    finally:
        storage.configure()
        local_cluster.restore_worker(0)
    record(
        "a worker node lost",
        **figures,
        committed_before_loss=committed,
        nodes_left=2,
        finished_after_loss_s=round(finished_s, 1),
    )
    assert figures["samples"] == 48
    assert_exactly_once(figures)


def test_ray_job_submit_writes_to_s3_and_verifies(local_cluster, s3_server):
    """docs/SCALE.md's cluster walkthrough against this cluster: upload the demo normals with
    ``cai-ray copy``, submit with the repository as working dir, verify the output."""

    local_s3(s3_server.endpoint).mkdir("cai-ray")
    endpoint = ["--s3-endpoint-url", s3_server.endpoint]
    cli = [sys.executable, "-m", "cai_ray.cli"]
    upload = subprocess.run(
        [*cli, "copy", "data/demo/normal", "s3://cai-ray/demo/normal", *endpoint],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upload.returncode == 0 and "copied 12 new file(s)" in upload.stdout, upload.stderr
    result = subprocess.run(
        ["ray", "job", "submit", "--address", local_cluster.dashboard, "--working-dir", "."]
        + ["--", "python", "-m", "jobs.synthesize", "--config", "configs/cluster_demo.yaml"]
        + [*endpoint, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=500,
    )
    logs = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0 and "succeeded" in logs, logs
    assert "OK: 3 shard(s), 120 samples" in _verify(s3_server.endpoint, "s3://cai-ray/demo/out")
