"""Faults during the job: every sample still exactly once (rows of docs/RELIABILITY.md)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cai_ray.config import SynthConfig
from cai_ray.io import layout, storage
from cai_ray.pipeline.console import JobError
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars
from tests.faultproxy import FaultProxy
from tests.pipeline.conftest import job_config
from tests.s3server import SeaweedS3, local_s3

pytestmark = [pytest.mark.timeout(400), pytest.mark.usefixtures("ray_local")]

ONE_TARGET_PER_SHARD = {"targets_per_shard": 1}


def _injection_actor_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"InjectionStage" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@dataclass(frozen=True)
class Undisturbed:
    config: SynthConfig
    job_s: float


@pytest.fixture(scope="module")
def undisturbed(ray_local, demo_daad, normals_with_a_corrupt_file, tmp_path_factory):
    """The run every fault test here compares with (local output), made once."""
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    config = job_config(demo_daad, normals_with_a_corrupt_file, out, output=ONE_TARGET_PER_SHARD)
    started = time.monotonic()
    run_synth(config, show_progress=False)
    return Undisturbed(config, round(time.monotonic() - started, 1))


def test_a_killed_injection_actor_loses_and_duplicates_nothing(make_config, undisturbed):
    config = make_config(out="killed", output=ONE_TARGET_PER_SHARD)
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
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.config.output.path))
    record("injection actor killed", **figures, job_s=round(time.monotonic() - started, 1))
    assert_exactly_once(figures)


def test_a_killed_driver_resumes_to_the_same_samples(make_config, undisturbed, tmp_path):
    config = make_config(out="driver", output=ONE_TARGET_PER_SHARD)
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
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.config.output.path))
    record(
        "driver killed mid-job",
        **figures,
        committed_before_kill=committed,
        resume_s=round(time.monotonic() - started, 1),
    )
    assert_exactly_once(figures)
    # the killed run's entries merged with the resumed run's: the manifest of an unbroken run
    uninterrupted = Path(undisturbed.config.output.path) / "manifest.json"
    assert (out / "manifest.json").read_bytes() == uninterrupted.read_bytes()


@pytest.fixture
def restartable_s3(tmp_path):
    """An S3 server of this test's own, since the test crashes and restarts it."""
    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    local_s3(server.endpoint).mkdir("restart")
    try:
        yield server
    finally:
        server.stop()
        storage.configure()


def _job_on(server: SeaweedS3, make_config, **storage_settings) -> SynthConfig:
    """The undisturbed run's job, writing to ``s3://restart/out`` on ``server``."""
    config = make_config(
        out="unused",
        output=ONE_TARGET_PER_SHARD,
        storage={"endpoint_url": server.endpoint, **storage_settings},
    )
    config.output.path = "s3://restart/out"
    return config


class Outage(threading.Thread):
    """Crashes the S3 server once the job's first shard has committed and starts it again
    ``down_s`` later, on the same ports and data: requests meanwhile meet refused
    connections. ``crashed`` and ``lasted_s``: when it crashed (monotonic, None: never) and
    how long until it served again. It looks with a client of its own, so its requests are
    not among the job's (cai_ray.io.storage counts the retries of this process)."""

    def __init__(self, server: SeaweedS3, out: str, down_s: float) -> None:
        super().__init__()
        self.server, self.down_s = server, down_s
        self.entries = f"{out.removeprefix('s3://')}/shard-*.json"
        self.crashed: float | None = None
        self.lasted_s = 0.0

    def run(self) -> None:
        client = local_s3(self.server.endpoint)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            client.invalidate_cache()
            if client.glob(self.entries):  # an entry is written after its tar: committed
                break
            time.sleep(0.1)
        else:
            return
        self.crashed = time.monotonic()
        self.server.crash()
        time.sleep(self.down_s)
        self.server.start()
        self.lasted_s = round(time.monotonic() - self.crashed, 1)


def test_object_storage_down_30_s_mid_job_is_waited_out(make_config, undisturbed, restartable_s3):
    """Every request that meets the outage retries within the default budget (10 attempts,
    at least 55.5 s of backoff in all: storage.retry_budget_s), longer than 30 s down plus the
    server's restart, so the job finishes with every sample once."""
    config = _job_on(restartable_s3, make_config)
    assert storage.retry_budget_s(config.storage.request_attempts)[0] > 45
    outage = Outage(restartable_s3, config.output.path, down_s=30)
    outage.start()
    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    finished = time.monotonic()
    outage.join()
    assert outage.crashed is not None and outage.crashed < finished  # the job met the outage
    assert outage.lasted_s >= 30
    assert manifest["complete"]
    assert manifest["storage_retries_made"] > 0  # and waited it out
    assert verify_output(config.output.path).ok
    figures = compare(shard_tars(config.output.path), shard_tars(undisturbed.config.output.path))
    record(
        "object storage down 30 s",
        **figures,
        outage_s=outage.lasted_s,
        retries=manifest["storage_retries_made"],
        retries_in_manifest=manifest["storage_retries"],
        job_s=round(finished - started, 1),
        undisturbed_job_s=undisturbed.job_s,
    )
    assert_exactly_once(figures)


def test_object_storage_down_beyond_the_retry_budget_fails_naming_it_and_a_rerun_completes(
    make_config, undisturbed, restartable_s3
):
    """With 2 attempts (0.5 to 1 s of backoff) the job stops at the first request the outage
    refuses, naming the endpoint and the object; once the server is back the same command
    resumes the committed shards and makes the rest, every sample once."""
    config = _job_on(restartable_s3, make_config, request_attempts=2)
    outage = Outage(restartable_s3, config.output.path, down_s=30)
    outage.start()
    with pytest.raises(JobError) as failed:
        run_synth(config, show_progress=False)
    assert outage.crashed is not None
    failed_after_s = round(time.monotonic() - outage.crashed, 1)
    message = str(failed.value)
    assert "s3://restart/out/" in message  # the object: a shard, an entry, the input list
    assert f" at {restartable_s3.endpoint} (gave up after 2 attempts" in message
    outage.join()
    committed = len(layout.committed_indices(config.output.path))
    assert 1 <= committed < 13

    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    resume_s = round(time.monotonic() - started, 1)
    assert manifest["complete"] and manifest["shards_made"] == 13 - committed
    assert verify_output(config.output.path).ok
    figures = compare(shard_tars(config.output.path), shard_tars(undisturbed.config.output.path))
    record(
        "object storage down beyond the retry budget",
        **figures,
        outage_s=outage.lasted_s,
        failed_after_s=failed_after_s,
        error=message[:240],
        committed_before_rerun=committed,
        resume_s=resume_s,
    )
    assert_exactly_once(figures)


SLOW_STORE = ["pass", "throttle", "pass", "reset", "throttle", "delay"]
"""Of every 6 requests 2 answered 503 SlowDown, 1 reset, 1 answered 2 s late (the proxy makes
every request a connection of its own, so the shares hold whatever the connection pools)."""


def test_throttling_resets_and_slow_answers_are_retried_and_counted(
    make_config, undisturbed, s3_server, s3_bucket
):
    """A job writing through a store that throttles, drops and dawdles finishes with every
    sample once; the retries it made are counted (per shard in the entries, summed in the
    manifest, in all in run_synth's answer) and match the faults the proxy injected; nothing
    else in the manifest changes."""
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = FaultProxy(("127.0.0.1", port), SLOW_STORE, delay_s=2.0)
    config = make_config(
        out="unused", output=ONE_TARGET_PER_SHARD, storage={"endpoint_url": proxy.endpoint}
    )
    config.output.path = f"{s3_bucket}/out"
    try:
        started = time.monotonic()
        manifest = run_synth(config, show_progress=False)
        job_s = round(time.monotonic() - started, 1)
    finally:
        proxy.close()
    storage.configure(endpoint_url=s3_server.endpoint)  # the checks read the store directly
    assert manifest["complete"]
    assert verify_output(config.output.path).ok
    figures = compare(shard_tars(config.output.path), shard_tars(undisturbed.config.output.path))
    injected = {mode: proxy.counts[mode] for mode in ("throttle", "reset", "delay")}
    retries = manifest["storage_retries_made"]
    # each 503 is a failed attempt that is retried; so is each reset, but for those aiohttp
    # resends at once itself (an idempotent request whose connection dropped, once), unseen
    assert injected["throttle"] <= retries <= injected["throttle"] + injected["reset"]
    assert 0 < manifest["storage_retries"] <= retries  # the shards' share, in their entries
    assert injected["delay"] > 0
    entries = layout.read_entries(config.output.path, range(13))
    assert sum(entry["storage_retries"] for _, entry in entries) == manifest["storage_retries"]
    written = layout.read_json(storage.join(config.output.path, layout.MANIFEST_FILE))
    baseline = json.loads((Path(undisturbed.config.output.path) / "manifest.json").read_text())
    assert {**written, "storage_retries": 0} == baseline
    record(
        "throttling, resets and slow answers",
        **figures,
        retries=retries,
        retries_in_manifest=manifest["storage_retries"],
        injected=injected,
        requests=sum(proxy.counts.values()),
        delay_s=proxy.delay_s,
        job_s=job_s,
        undisturbed_job_s=undisturbed.job_s,
    )
    assert_exactly_once(figures)
