"""Faults during the job: every sample still exactly once (rows of docs/RELIABILITY.md)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cai_ray import faults
from cai_ray.io import layout
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


def _driver(command: list[str], kill_at: str, logs: Path) -> tuple[int, str]:
    """Run ``cai-ray <command>`` as a driver leading its own session (the local Ray it starts
    in its process group) with the fault point ``kill_at`` armed; its exit status (-9: killed)
    and what it printed. Whatever is left of it is killed after; the temporary folder a killed
    driver cannot remove (its input list) is left in ``logs``, Ray's session folder where Ray
    keeps it."""
    logs.mkdir(exist_ok=True)
    printed = logs / f"{kill_at.replace(' ', '-')}.log"
    ray_tmp = os.environ.get("RAY_TMPDIR", os.environ.get("TMPDIR", "/tmp"))  # as Ray picks it
    with printed.open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "cai_ray.cli", *command],
            env={
                **os.environ,
                faults.KILL_AT_VARIABLE: kill_at,
                "TMPDIR": str(logs),
                "RAY_TMPDIR": ray_tmp,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            driver.wait(300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
    return driver.returncode, printed.read_text()


KILLED_BEFORE = {faults.LISTING_OUTPUT: faults.LAST_SHARD}
"""A phase only a resume reaches, and where an earlier run is killed to leave one to resume."""


def _assert_died_while(phase: str, out: Path, shards: int, before: set[int]) -> set[int]:
    """What a run killed at ``phase`` left shows it died there; the shards committed."""
    committed = layout.committed_indices(str(out))
    last = shards - 1
    if phase == faults.PLANNING:
        assert not (out / layout.JOB_FILE).exists()
    elif phase == faults.LISTING_OUTPUT:  # the last shard's temporary entry cleared first
        assert committed == before and not list(out.glob(".*.tmp"))
    elif phase == faults.LAST_SHARD:
        assert (out / layout.shard_name(last)).is_file() and last not in committed
        assert list(out.glob(f".{layout.entry_name(last)}.*.tmp"))
    elif phase == faults.MERGING_MANIFEST:
        assert committed == set(range(shards)) and not (out / layout.MANIFEST_FILE).exists()
        assert list(out.glob(f".{layout.MANIFEST_FILE}.*.tmp"))
    return committed


@pytest.mark.parametrize("phase", [p for p in faults.PHASES if p != faults.VERIFYING])
def test_a_driver_killed_at_each_phase_reruns_to_the_same_output(
    phase, make_config, undisturbed, tmp_path
):
    """Killed by the fault point of each phase (cai_ray/faults.py), not on timing: a rerun
    completes the job exactly once, with the manifest of an unbroken run."""
    config = make_config(out="killed", output={"targets_per_shard": 1})
    out = Path(config.output.path)
    reference = Path(undisturbed.output.path)
    shards = layout.read_json(str(reference / layout.JOB_FILE))["shards"]
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    command = ["synth", "--config", str(path), "--no-progress"]
    if phase in KILLED_BEFORE:
        status, printed = _driver(command, KILLED_BEFORE[phase], tmp_path / "logs")
        assert status == -signal.SIGKILL, printed
    before = layout.committed_indices(str(out))
    status, printed = _driver(command, phase, tmp_path / "logs")
    assert status == -signal.SIGKILL, printed
    committed = _assert_died_while(phase, out, shards, before)

    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    resume_s = time.monotonic() - started
    assert manifest["complete"] and manifest["shards_made"] == shards - len(committed)
    assert verify_output(str(out)).ok
    assert (out / layout.MANIFEST_FILE).read_bytes() == (
        reference / layout.MANIFEST_FILE
    ).read_bytes()
    figures = compare(shard_tars(str(out)), shard_tars(str(reference)))
    record(
        f"driver killed while {phase}",
        **figures,
        committed_before_kill=len(committed),
        resume_s=round(resume_s, 1),
    )
    assert_exactly_once(figures)


def test_a_verify_killed_midway_simply_reruns(undisturbed, tmp_path):
    """verify writes nothing: killed after its first shard, it leaves the output as it was, and
    a rerun checks it all."""
    out = undisturbed.output.path
    tars = shard_tars(out)
    status, printed = _driver(["verify", out, "--no-progress"], faults.VERIFYING, tmp_path)
    assert status == -signal.SIGKILL and "OK:" not in printed, printed
    assert f"killed at fault point {faults.VERIFYING!r}" in printed
    started = time.monotonic()
    report = verify_output(out)
    rerun_s = time.monotonic() - started
    assert report.ok and report.shards == len(tars)
    figures = compare(shard_tars(out), tars)
    record(
        f"driver killed while {faults.VERIFYING}",
        **figures,
        committed_before_kill=len(tars),
        resume_s=round(rerun_s, 1),
    )
    assert_exactly_once(figures)


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
