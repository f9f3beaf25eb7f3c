"""Targets that kill their worker (over its memory limit, a crash): given up after
``resources.worker_deaths_per_target`` deaths with the reason, the job finishes, every other
sample made as an undisturbed run makes it; Ray's own retries bounded (a row of
docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cai_ray.config import ResourcesConfig, SynthConfig
from cai_ray.io.inputs import ShardList, write_list
from cai_ray.io.layout import sample_key
from cai_ray.io.tar import iter_tar
from cai_ray.pipeline.console import JobError
from cai_ray.pipeline.deaths import WORKER_DIED, DeathLedger, TargetGuard, WorkerDeathsError
from cai_ray.pipeline.resources import actor_options, restart_bound
from cai_ray.pipeline.stages import ForegroundStage, InjectionStage
from cai_ray.pipeline.synth import run_synth
from cai_ray.pipeline.verify import verify_output
from tests.conftest import demo_tiles
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars, stage_actors

HUGE_SIDE = 8000
"""A solid grey RGB PNG this many pixels a side: about 200 KB on disk, under max_pixels (64
million pixels), and about 600 MB while a foreground actor decodes it (measured: the tiles'
actors peak at 130-165 MB of private memory, this one's at 730 MB)."""

MEMORY_LIMIT_MB = 300
"""Between the two, with over 100 MB of margin on either side."""

pytestmark = pytest.mark.timeout(400)


def test_the_ledger_gives_a_target_up_once_its_workers_died_on_it_n_times():
    ledger = DeathLedger(deaths_per_target=2, memory_limit_mb=300)
    assert ledger.begin("foreground", 4) == {}
    ledger.start("foreground", 4, ["a.png"])
    ledger.start("foreground", 4, ["b.png"])
    ledger.note_over_limit("foreground", 4, 412)
    assert ledger.begin("foreground", 4) == {}  # b.png: one death, over the limit
    ledger.start("foreground", 4, ["b.png"])
    ledger.note_over_limit("foreground", 4, 398)
    given_up = ledger.begin("foreground", 4)
    assert given_up == {
        "b.png": "worker died 2 times on it: over the memory limit "
        "(resources.actor_memory_mb: 300 MB), at 412 MB"
    }
    ledger.finish("foreground", 4)
    assert ledger.begin("foreground", 4) == given_up  # a finished attempt charges nothing
    assert ledger.begin("injection", 4) == {}  # each stage has its own shards
    ledger.start("injection", 4, ["b.png#0", "b.png#1"])  # a batch: every target in it
    ledger.begin("injection", 4)
    ledger.start("injection", 4, ["b.png#0", "b.png#1"])
    crashed = ledger.begin("injection", 4)
    assert sorted(crashed) == ["b.png#0", "b.png#1"]
    assert "never over a memory limit of its own" in crashed["b.png#0"]
    assert ledger.summary() == {
        "foreground": {"deaths": 2, "over_limit": 2, "given_up": 1},
        "injection": {"deaths": 4, "over_limit": 0, "given_up": 2},
    }


def test_deaths_outside_any_target_stop_the_job_rather_than_loop():
    ledger = DeathLedger(deaths_per_target=2, memory_limit_mb=None)
    ledger.begin("injection", 0)
    ledger.start("injection", 0, ["a.png"])
    ledger.start("injection", 0, [])  # writing the shard
    ledger.begin("injection", 0)
    with pytest.raises(WorkerDeathsError, match="died 2 times on shard 0 outside its targets"):
        ledger.begin("injection", 0)


@pytest.mark.usefixtures("ray_local")
def test_deaths_outside_any_target_reach_the_user_as_one_line():
    import ray

    from cai_ray.pipeline.console import worker_error
    from cai_ray.pipeline.deaths import start_ledger

    guard = TargetGuard(start_ledger(2, None), "injection", memory_limit_mb=None)
    guard.begin(0)
    guard.start([])  # the attempt dies writing the shard, twice
    guard.begin(0)
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        guard.begin(0)
    assert worker_error(raised.value) == (
        "a worker failed: WorkerDeathsError: the injection actor died 2 times on shard 0 "
        "outside its targets (no target to give up): something else kills it, e.g. the "
        "kernel's OOM killer or Ray's memory monitor (see Ray's log folder)"
    )


def test_rays_restarts_are_bounded_above_what_the_ledger_allows():
    """The deaths the ledger allows on one shard, at least 16 (an actor meets many shards);
    a shard's retries stay Ray Data's (unbounded: a shard whose node was lost waits for its
    actor's restart elsewhere)."""
    assert restart_bound(ResourcesConfig(), targets_per_shard=32) == 2 * 33
    limited = ResourcesConfig(actor_memory_mb=300, worker_deaths_per_target=3)
    assert actor_options(limited, targets_per_shard=1) == {
        "memory": 300 * 2**20,
        "max_restarts": 16,
    }
    assert actor_options(ResourcesConfig(), targets_per_shard=1)["memory"] is None


WATCHED = """
import sys, time
from pathlib import Path
import numpy as np
from cai_ray.pipeline.deaths import MemoryWatchdog, private_mb
note = Path(sys.argv[1])
MemoryWatchdog(private_mb() + 100, lambda used: note.write_text(str(used))).start()
held = [np.ones(int(sys.argv[2]) * 2**20, np.uint8)]
time.sleep(1)
print("alive")
"""


@pytest.mark.parametrize(("allocate_mb", "killed"), [(200, True), (50, False)])
def test_the_watchdog_kills_its_process_over_the_limit(tmp_path, allocate_mb, killed):
    note = tmp_path / "note"
    process = subprocess.run(
        [sys.executable, "-c", WATCHED, str(note), str(allocate_mb)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    if killed:
        assert process.returncode == -signal.SIGKILL and process.stdout == ""
        assert int(note.read_text()) > 100
    else:
        assert process.returncode == 0 and process.stdout == "alive\n" and not note.exists()


def test_a_limit_below_what_an_actor_holds_is_refused_before_its_first_shard():
    with pytest.raises(ValueError, match=r"actor_memory_mb \(1 MB\) is below what a foreground"):
        TargetGuard(None, "foreground", memory_limit_mb=1)


def _stages(config: SynthConfig, tmp_path: Path, paths: list[str]) -> tuple:
    list_url = str(tmp_path / "inputs.parquet")
    write_list(paths, list_url)
    foreground = ForegroundStage(
        image_size=256,
        mode="grey",
        method="full",
        model_path=None,
        min_fraction=0.01,
        shards=ShardList(list_url, str(tmp_path), per_shard=len(paths), count=len(paths)),
    )
    injection = InjectionStage(
        synthesizer=config.method_settings,
        daad=None,
        image_size=256,
        mode="grey",
        seed=7,
        key_prefix="s",
        image_format="png",
        include_normal=False,
        out=str(tmp_path / "out"),
    )
    return foreground, injection


def test_a_given_up_target_leaves_the_other_samples_of_its_shard_as_they_were(
    make_config, tmp_path
):
    """NSA takes patches from the shard's other targets: a target given up still lends its
    pixels, so the others' samples keep their bytes."""
    config = make_config(synthesizer={"method": "nsa", "anomalies_per_target": 2})
    paths = [str(p) for p in demo_tiles(tmp_path, 3)]
    foreground, injection = _stages(config, tmp_path, paths)
    targets = foreground.shard_targets(0)
    prepared = foreground.process_shard(targets)
    made = [json.loads(prepared["targets"]), prepared["images"], prepared["foregrounds"], []]
    undisturbed = injection.process_shard(0, *made)
    reason = "worker died 2 times on it: over the memory limit"
    disturbed = injection.process_shard(0, *made, given_up={targets[1]["key"]: reason})

    expected = dict(iter_tar(undisturbed["tar"]))
    got = dict(iter_tar(disturbed["tar"]))
    assert sorted(got) == [sample_key("s", index, k) for index in (0, 2) for k in (0, 1)]
    assert all(got[key] == expected[key] for key in got)
    failed = json.loads(disturbed["entry"])["failed_samples"]
    assert failed == [
        {"key": sample_key("s", 1, k), "reason": reason, "cause": WORKER_DIED} for k in (0, 1)
    ]

    missing = {targets[0]["key"]: reason}
    skipped = foreground.process_shard(
        [{**targets[0], "path": str(tmp_path / "gone.jpg")}, *targets[1:]], missing
    )
    assert json.loads(skipped["skipped"]) == [
        {"path": str(tmp_path / "gone.jpg"), "reason": reason}
    ]
    assert json.loads(skipped["targets"]) == targets[1:]  # given up unread: no 'unreadable'


# --- on Ray: real faults ---------------------------------------------------------------------


class _Messages(logging.Handler):
    """The warnings a logger gives: pytest's caplog cannot tell (after a run on Ray in this
    process its handlers were found at level CRITICAL, recording nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def huge_inputs(tmp_path_factory) -> Path:
    """The 12 demo tiles and, sorting last (so the tiles' keys and indices are those of a job
    without it), a huge but tiny-on-disk PNG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("huge-inputs")
    demo_tiles(folder, 12)
    Image.new("RGB", (HUGE_SIDE, HUGE_SIDE), (128, 128, 128)).save(folder / "zz_huge.png")
    return folder


@pytest.fixture
def undisturbed_huge(make_config, huge_inputs):
    """The job without a memory limit: the huge image is a target like the others."""
    config = make_config(
        out="undisturbed", inputs={"paths": [str(huge_inputs)]}, output={"targets_per_shard": 1}
    )
    run_synth(config, show_progress=False)
    return config


@pytest.mark.fault_matrix
@pytest.mark.usefixtures("ray_local")
def test_an_input_over_the_actor_memory_limit_is_given_up_and_the_job_finishes(
    make_config, huge_inputs, undisturbed_huge
):
    config = make_config(
        out="limited",
        inputs={"paths": [str(huge_inputs)]},
        output={"targets_per_shard": 1},
        resources={"actor_memory_mb": MEMORY_LIMIT_MB},
    )
    out, before = Path(config.output.path), Path(undisturbed_huge.output.path)
    logged = _Messages()
    logging.getLogger("cai_ray.pipeline.deaths").addHandler(logged)
    started = time.monotonic()
    try:
        manifest = run_synth(config, show_progress=False)
    finally:
        logging.getLogger("cai_ray.pipeline.deaths").removeHandler(logged)
    job_s = time.monotonic() - started

    assert manifest["complete"] and verify_output(str(out)).ok
    huge = str(huge_inputs / "zz_huge.png")
    given_up = [s for s in manifest["skipped_inputs"] if s["path"] == huge]
    assert len(given_up) == 1
    reason = re.fullmatch(
        r"worker died 2 times on it: over the memory limit "
        r"\(resources.actor_memory_mb: 300 MB\), at (\d+) MB",
        given_up[0]["reason"],
    )
    assert reason, given_up[0]["reason"]
    # the huge target is the last shard's only one: the undisturbed run made samples of it
    undisturbed_tars = shard_tars(str(before))
    assert len(undisturbed_tars) == 13 and list(iter_tar(undisturbed_tars[12]))
    figures = compare(shard_tars(str(out)), undisturbed_tars[:12])
    for index in range(12):  # and the other shards' entries are the undisturbed ones
        name = f"shard-{index:06d}.json"
        assert (out / name).read_bytes() == (before / name).read_bytes()
    deaths = [int(n) for m in logged.messages for n in re.findall(r"died (\d+) times", m)]
    record(
        "out of memory in an actor",
        **figures,
        actor_deaths=sum(deaths),  # each one retry of the huge input's shard
        failed_targets=len(given_up),
        memory_limit_mb=MEMORY_LIMIT_MB,
        killed_at_mb=int(reason.group(1)),
        job_s=round(job_s, 1),
    )
    assert_exactly_once(figures)
    assert logged.messages == [
        "foreground actors died 2 times (2 over the memory limit); targets given up: 1"
    ]


@pytest.mark.usefixtures("ray_local")
def test_a_memory_limit_below_what_an_actor_holds_stops_the_job_at_once(make_config):
    config = make_config(out="too-low", resources={"actor_memory_mb": 20})
    started = time.monotonic()
    with pytest.raises(JobError, match=r"actor_memory_mb \(20 MB\) is below what an? \w+ actor"):
        run_synth(config, show_progress=False)
    assert time.monotonic() - started < 120


@pytest.mark.fault_matrix
@pytest.mark.usefixtures("ray_local")
def test_an_actor_killed_again_and_again_stops_the_job_and_a_rerun_completes_it(
    make_config, huge_inputs, undisturbed_huge
):
    """Ray Data would restart it forever (max_restarts -1); bounded, the job stops with an
    error that says so, and the same command afterwards makes the rest."""
    config = make_config(
        out="killed", inputs={"paths": [str(huge_inputs)]}, output={"targets_per_shard": 1}
    )
    killed: list[int] = []
    stop = threading.Event()

    def kill_every_injection_actor() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            for pid in stage_actors("InjectionStage"):
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_every_injection_actor)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(
            JobError,
            match="kept dying, and Ray stopped after 16 restarts of an actor",
        ):
            run_synth(config, show_progress=False)
    finally:
        stop.set()
        killer.join()
    stopped_s = time.monotonic() - started
    resumed = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and verify_output(config.output.path).ok
    figures = compare(shard_tars(config.output.path), shard_tars(undisturbed_huge.output.path))
    record(
        "an actor killed again and again",
        **figures,
        kills=len(killed),
        stopped_after_s=round(stopped_s, 1),
        rerun_s=round(time.monotonic() - resumed, 1),
    )
    assert_exactly_once(figures)
