"""The lease a run holds on its output (cai_ray/pipeline/lease.py): a second run refuses naming
the first; a lease goes stale when its heartbeat is old or its process on this host is gone,
and is then taken over; a run releases only its own lease. The other runs are real processes."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cai_ray.io import storage
from cai_ray.io.layout import OutputBusyError
from cai_ray.pipeline.lease import Lease, holding
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(90)

HOLD = """
import logging, os, sys, time
from cai_ray.pipeline.lease import Lease
logging.basicConfig(level=logging.WARNING)
lease = Lease(sys.argv[1], "first", timeout_s=1.0, heartbeat_s=0.5)
lease.claim()
if sys.argv[2] == "die":
    os._exit(0)  # killed: no release
time.sleep(float(sys.argv[2]))
lease.release()
"""


def _holder(out: str) -> dict | None:
    url = storage.join(out, "owner.json")
    return json.loads(storage.read_bytes(url)) if storage.exists(url) else None


def _run_holder(out: str, hold: str) -> subprocess.Popen:
    """Another process holding ``out`` (timeout 1 s, heartbeat every 0.5 s) for ``hold``
    seconds, or until it dies at once without releasing (``die``); back once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, out, hold],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _holder(out) is None and holder.poll() is None:
        time.sleep(0.02)
    return holder


def test_a_second_run_refuses_while_the_first_holds_the_output(tmp_path):
    out = tmp_path / "out"
    with holding(str(out), "cai-ray synth", timeout_s=300, heartbeat_s=30):
        holder = _holder(str(out))
        with pytest.raises(OutputBusyError) as refused:
            Lease(str(out), "cai-ray verify --repair", timeout_s=300, heartbeat_s=30).claim()
        assert _holder(str(out)) == holder  # the refused run took nothing
    message = str(refused.value)
    assert f"cai-ray synth on host {socket.gethostname()}, pid {os.getpid()}, started " in message
    assert "last heartbeat 0 s ago" in message and "goes stale 300 s after" in message
    assert not (out / "owner.json").exists()  # released at the end


def test_a_frozen_holder_is_taken_over_and_finds_out_when_it_wakes(tmp_path, caplog):
    """The holder refreshes its heartbeat while it runs; frozen (SIGSTOP) past its timeout,
    its lease is taken over, with a warning saying whose and why; woken, its next heartbeat
    finds the taker and says so, and its release leaves the taker's lease in place."""
    out = str(tmp_path / "out")
    first = _run_holder(out, "6")
    try:
        held = _holder(out)
        assert held is not None and held["pid"] == first.pid
        with pytest.raises(OutputBusyError, match=f"first on host .*, pid {first.pid}"):
            Lease(out, "second", timeout_s=300, heartbeat_s=30).claim()
        # frozen just after a heartbeat (not between its read of the file and its write)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _holder(out)["heartbeat"] == held["heartbeat"]:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)
        assert _holder(out)["heartbeat"] > held["heartbeat"]  # the heartbeat refreshed it
        time.sleep(1.5)  # past the holder's 1 s timeout
        second = Lease(out, "second", timeout_s=300, heartbeat_s=30)
        with caplog.at_level(logging.WARNING, logger="cai_ray.pipeline.lease"):
            second.claim()
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, errors = first.communicate(timeout=30)
    taken = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(taken) == 1 and f"pid {first.pid}" in taken[0] and "no heartbeat for" in taken[0]
    assert "was taken over by second on host" in errors
    assert first.returncode == 0
    assert _holder(out)["token"] == second.owner.token  # the first's release left it
    second.release()
    assert _holder(out) is None


def test_the_lease_of_a_process_gone_from_this_host_is_taken_over_at_once(tmp_path, caplog):
    """A driver killed here (no release) and resumed at once: its process is gone, so its
    lease is stale whatever its heartbeat's age."""
    out = str(tmp_path / "out")
    first = _run_holder(out, "die")
    assert first.wait(30) == 0
    assert _holder(out)["pid"] == first.pid
    with (
        caplog.at_level(logging.WARNING, logger="cai_ray.pipeline.lease"),
        holding(out, "cai-ray synth", timeout_s=300, heartbeat_s=30),
    ):
        assert _holder(out)["pid"] == os.getpid()
    assert f"its process {first.pid} on this host is gone" in caplog.text
    assert _holder(out) is None


def test_a_lease_on_s3_refuses_a_second_run_and_is_released(s3_bucket):
    out = f"{s3_bucket}/data/out"
    with holding(out, "cai-ray synth", timeout_s=300, heartbeat_s=30):
        assert _holder(out)["pid"] == os.getpid()
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            Lease(out, "cai-ray synth", timeout_s=300, heartbeat_s=30).claim()
    assert _holder(out) is None


def test_a_heartbeat_no_shorter_than_the_timeout_is_refused_with_the_config():
    from pydantic import ValidationError

    from cai_ray.config import OutputConfig

    assert OutputConfig(path="out").lease.model_dump() == {"timeout_s": 300, "heartbeat_s": 30}
    with pytest.raises(ValidationError, match=r"heartbeat_s \(60\) must be below timeout_s"):
        OutputConfig.model_validate({"path": "out", "lease": {"timeout_s": 60, "heartbeat_s": 60}})
