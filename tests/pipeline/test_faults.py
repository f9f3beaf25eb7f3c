"""Faults during the job: every sample still exactly once (rows of docs/RELIABILITY.md)."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cai_ray import faults
from cai_ray.config import SynthConfig
from cai_ray.io import layout, storage
from cai_ray.io.layout import OutputBusyError
from cai_ray.pipeline import synth
from cai_ray.pipeline.console import JobError
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import repair_output, verify_output
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars, stage_actors
from tests.faultproxy import FaultProxy
from tests.s3server import SeaweedS3, local_s3

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.usefixtures("ray_local"),
    pytest.mark.fault_matrix,
]

ONE_TARGET_PER_SHARD = {"targets_per_shard": 1}


@pytest.mark.parametrize("shards_a_block", [1, 4], ids=["a shard a block", "4 shards a block"])
def test_a_killed_injection_actor_loses_and_duplicates_nothing(
    make_config, undisturbed, monkeypatch, shards_a_block
):
    """A block of several shards (as a run of more than a thousand shards hands Ray Data) is
    retried whole where its actor dies: the shards it had committed are written again, the
    same bytes, and counted once."""
    monkeypatch.setattr(synth, "shard_blocks", lambda shards, _: -(-shards // shards_a_block))
    config = make_config(out="killed", output=ONE_TARGET_PER_SHARD)
    out = Path(config.output.path)
    killed: list[int] = []

    def kill_one_actor_after_the_first_commit() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("shard-*.json")):
            time.sleep(0.05)
        pids = stage_actors("InjectionStage")
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
    blocks = "" if shards_a_block == 1 else f", {shards_a_block} shards a block"
    row = f"injection actor killed{blocks}"
    record(row, **figures, job_s=round(time.monotonic() - started, 1))
    assert_exactly_once(figures)


def test_a_killed_driver_resumes_to_the_same_samples(make_config, undisturbed, tmp_path, caplog):
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
    assert json.loads((out / "owner.json").read_text())["pid"] == driver.pid  # not released

    started = time.monotonic()
    with caplog.at_level("WARNING", logger="cai_ray.pipeline.lease"):
        manifest = run_synth(config, show_progress=False)
    assert f"its process {driver.pid} on this host is gone" in caplog.text  # taken over at once
    assert not (out / "owner.json").exists()
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
            _end_stray_workers(driver.pid)
    return driver.returncode, printed.read_text()


def _end_stray_workers(group: int) -> None:
    """Kill and wait out the Ray workers the driver leading ``group`` started: each leads a
    process group of its own, so the group's kill spares them until they notice their raylet
    is gone, and one still writing may commit a shard after the driver died. Found by the
    ``CAI_RAY_KILL_GROUP`` they inherited (cai_ray/faults.py), so only this driver's."""
    marker = f"{faults.GROUP_VARIABLE}={group}".encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stray = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            with contextlib.suppress(OSError):
                if marker in environ.read_bytes().split(b"\0"):
                    stray.append(int(environ.parent.name))
        if not stray:
            return
        for pid in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise AssertionError(f"the workers of the killed driver {group} outlived it by 30 s")


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


@pytest.mark.parametrize(
    "phase", [p for p in faults.PHASES if p not in (faults.VERIFYING, faults.EXPORTING)]
)
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
    storage.configure()


def _shard_of(name: str) -> int:
    return int(name[len("shard-") : len("shard-000000")])


def _shard_files(out: Path) -> dict[str, int]:
    """Each shard file's name and modification time: which were written since."""
    return {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*")}


def test_damaged_committed_shards_are_named_removed_and_rewritten(make_config, undisturbed):
    """A finished output damaged after the fact, four ways: verify names each shard and what is
    wrong; the repair removes those shards (and the manifest) and nothing else; the next run,
    which reads no tar, rewrites exactly them."""
    config = make_config(out="damaged", output={"targets_per_shard": 1})
    out = Path(config.output.path)
    shutil.copytree(undisturbed.output.path, out)  # a finished output of this very job
    truncated, flipped = out / "shard-000001.tar", out / "shard-000004.tar"
    size = truncated.stat().st_size
    truncated.write_bytes(truncated.read_bytes()[: size // 2])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0xFF
    flipped.write_bytes(bytes(data))
    (out / "shard-000007.json").unlink()
    (out / "shard-000010.tar").unlink()
    damaged = [1, 4, 7, 10]
    whole = {n: t for n, t in _shard_files(out).items() if _shard_of(n) not in damaged}

    report = verify_output(str(out))
    assert report.damaged == damaged
    for reason in (
        f"shard-000001.tar: {size // 2} bytes, its entry says {size} (truncated or replaced)",
        "shard-000004.tar: checksum differs from its entry (bytes changed in place)",
        "shard-000007.tar: its entry shard-000007.json is missing (the shard is not committed)",
        "shard-000010.json: its tar shard-000010.tar is missing",
    ):
        assert reason in report.problems, report.problems
    named = {_shard_of(p) for p in report.problems if p.startswith("shard-")}
    assert named == set(damaged), report.problems

    assert repair_output(str(out)).damaged == damaged
    left = _shard_files(out)
    removed = [i for i in damaged if all(_shard_of(name) != i for name in left)]
    assert removed == damaged and left == whole and not (out / "manifest.json").exists()
    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and manifest["shards_made"] == len(damaged)
    after = _shard_files(out)
    whole_rewritten = sum(after[name] != written for name, written in whole.items())
    assert verify_output(str(out)).ok
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.output.path))
    record(
        "committed shard damaged",
        **figures,
        damaged=len(damaged),
        named_by_verify=len(named),
        removed_by_repair=len(removed),
        rewritten=manifest["shards_made"],
        whole_shards_rewritten=whole_rewritten,
        resume_s=round(time.monotonic() - started, 1),
    )
    assert whole_rewritten == 0
    assert_exactly_once(figures)
    uninterrupted = Path(undisturbed.output.path) / "manifest.json"
    assert (out / "manifest.json").read_bytes() == uninterrupted.read_bytes()


def test_a_second_job_on_a_held_output_refuses_naming_the_first(make_config, undisturbed, tmp_path):
    """Two jobs pointed at one output at once: the second refuses at once, naming the first's
    host and pid, and takes nothing; the first, its heartbeat refreshed as it runs, finishes the
    output exactly once and releases it."""
    config = make_config(out="two", output={"targets_per_shard": 1, "lease": {"heartbeat_s": 0.2}})
    out = Path(config.output.path)
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    with (tmp_path / "first.err").open("w") as errors:
        first = subprocess.Popen(
            [sys.executable, "-m", "cai_ray.cli", "synth", "--config", str(path), "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(out.glob("shard-*.json")):
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            time.sleep(0.05)
        held = json.loads((out / "owner.json").read_text())
        started = time.monotonic()
        with pytest.raises(OutputBusyError) as refused:
            run_synth(config, show_progress=False)
        refused_s = time.monotonic() - started
        committed_then = len(list(out.glob("shard-*.json")))
        assert f"cai-ray synth on host {socket.gethostname()}, pid {first.pid}, " in str(
            refused.value
        )
        assert json.loads((out / "owner.json").read_text())["token"] == held["token"]
        beats = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(beats) < 2 and first.poll() is None:
            try:
                beats.add(json.loads((out / "owner.json").read_text())["heartbeat"])
            except FileNotFoundError:  # released: the first job has just ended
                break
            time.sleep(0.05)
        assert len(beats) == 2, "the first job's heartbeat did not refresh its lease"
        assert first.wait(300) == 0, (tmp_path / "first.err").read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    assert not (out / "owner.json").exists()
    assert verify_output(str(out)).ok
    figures = compare(shard_tars(str(out)), shard_tars(undisturbed.output.path))
    record(
        "two jobs on one output",
        **figures,
        second_refused=1,
        refused_in_s=round(refused_s, 2),
        first_had_committed=committed_then,
    )
    assert_exactly_once(figures)


@pytest.mark.parametrize("store", ["local", "s3"])
def test_an_output_beside_another_dataset_leaves_it_alone(
    store, make_config, undisturbed, tmp_path, request
):
    """An output whose prefix begins another dataset's (``data/out`` beside ``data/out-other``,
    ``data/out.txt``), with files of the user's inside it: a job and its resume make and list
    only their own shards, and touch nothing else, locally and on S3 (a listing of ``out`` is
    not one of ``out*``)."""
    config = make_config(out="unused", output={"targets_per_shard": 1})
    if store == "local":
        base = str(tmp_path / "data")
    else:
        base = f"{request.getfixturevalue('s3_bucket')}/data"
        config.storage.endpoint_url = request.getfixturevalue("s3_server").endpoint
    config.output.path = out = storage.join(base, "out")
    expected = shard_tars(undisturbed.output.path)
    foreign = {
        "out-other/shard-000000.tar": expected[1],  # another dataset's shard 0: other samples
        "out-other/shard-000000.json": b"{}",
        "out-other/job.json": b"{}",
        "out.txt": b"notes beside the output",
        "out/README.txt": b"the user's own file inside the output",
        "out/.notes.tmp": b"named like a temporary, not one of the job's",
        "out/shard-000000.tar.orig": expected[2],
    }
    for name, data in foreign.items():
        storage.write_bytes_atomic(storage.join(base, *name.split("/")), data)

    made = run_synth(config, show_progress=False)["shards_made"]
    manifest = run_synth(config, show_progress=False)  # a resume: clears its temporaries
    touched = [
        name
        for name, data in foreign.items()
        if not storage.exists(url := storage.join(base, *name.split("/")))
        or storage.read_bytes(url) != data
    ]
    shards = len(expected)
    assert made == shards and manifest["shards_made"] == 0
    assert layout.committed_indices(out) == set(range(shards))
    assert manifest["shards"] == [layout.shard_name(i) for i in range(shards)]
    assert verify_output(out).ok
    figures = compare(shard_tars(out), expected)
    record(
        "output prefix shared with another dataset",
        store=store,
        **figures,
        foreign_files=len(foreign),
        foreign_touched=len(touched),
        shards_made=made,
    )
    assert not touched
    assert_exactly_once(figures)
