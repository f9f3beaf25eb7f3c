"""Faults during the job: every sample still exactly once (rows of docs/RELIABILITY.md)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars
from tests.s3server import local_s3

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.usefixtures("ray_local"),
    pytest.mark.fault_matrix,
]


def _injection_actor_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"InjectionStage" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def undisturbed(make_config):
    config = make_config(out="undisturbed", output={"targets_per_shard": 1})
    run_synth(config, show_progress=False)
    return config


def test_a_killed_injection_actor_loses_and_duplicates_nothing(make_config, undisturbed):
    config = make_config(out="killed", output={"targets_per_shard": 1})
    out = Path(config.output.path)
    killed: list[int] = []

    def kill_one_actor_after_the_first_commit() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("shard-*.json")):
            time.sleep(0.05)
        pids = _injection_actor_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one_actor_after_the_first_commit)
    killer.start()
    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    killer.join()
    assert killed, "no injection actor was running to kill"
    assert manifest["complete"]
    assert verify_output(str(out)).ok
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.output.path))
    record("injection actor killed", **figures, job_s=round(time.monotonic() - started, 1))
    assert_exactly_once(figures)


def test_a_killed_driver_resumes_to_the_same_samples(make_config, undisturbed, tmp_path):
    config = make_config(out="driver", output={"targets_per_shard": 1})
    out = Path(config.output.path)
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    driver = subprocess.Popen(
        [sys.executable, "-m", "cai_ray.cli", "synth", "--config", str(path), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(out.glob("shard-*.json"))) < 2:
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait(30)
    committed = len(list(out.glob("shard-*.json")))
    assert 2 <= committed < 13

    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"]
    assert verify_output(str(out)).ok
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.output.path))
    record(
        "driver killed mid-job",
        **figures,
        committed_before_kill=committed,
        resume_s=round(time.monotonic() - started, 1),
    )
    assert_exactly_once(figures)
    # the killed run's entries merged with the resumed run's: the manifest of an unbroken run
    uninterrupted = Path(undisturbed.output.path) / "manifest.json"
    assert (out / "manifest.json").read_bytes() == uninterrupted.read_bytes()


@pytest.fixture
def restartable_s3(tmp_path):
    """An S3 server of this test's own, since the test crashes and restarts it."""

    from tests.s3server import SeaweedS3

    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    local_s3(server.endpoint).mkdir("restart")
    try:
        yield server
    finally:
        server.stop()


def test_a_storage_server_restart_mid_job_loses_nothing(make_config, undisturbed, restartable_s3):
    from cai_ray.io import storage

    config = make_config(out="unused", output={"targets_per_shard": 1})
    config.output.path = "s3://restart/out"
    config.storage.endpoint_url = restartable_s3.endpoint
    outage: list[float] = []

    def crash_and_restart_after_the_first_commit() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if storage.list_files(config.output.path, ".json"):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        started = time.monotonic()
        restartable_s3.crash()
        time.sleep(3)  # writes and reads fail meanwhile: refused connections
        restartable_s3.start()
        outage.append(time.monotonic() - started)

    storage.configure(endpoint_url=restartable_s3.endpoint)
    restarter = threading.Thread(target=crash_and_restart_after_the_first_commit)
    restarter.start()
    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    restarter.join()
    assert outage and outage[0] > 3
    assert manifest["complete"]
    assert verify_output(config.output.path).ok
    figures = compare(shard_tars(config.output.path), shard_tars(undisturbed.output.path))
    record(
        "storage server restarted mid-job",
        **figures,
        outage_s=round(outage[0], 1),
        job_s=round(time.monotonic() - started, 1),
    )
    assert_exactly_once(figures)
    storage.configure()
