"""The fault points' test hook itself (cai_ray/faults.py): armed, it kills; misspelt, it is
refused; unset, it does nothing. The phases' kills in a real job: tests/pipeline/test_faults.py."""

import os
import signal
import subprocess
import sys

import pytest

from cai_ray import faults

REACH = "from cai_ray import faults; faults.fault_point(faults.PLANNING); print('went on')"


def _reach(kill_at: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.GROUP_VARIABLE}
    env.pop(faults.KILL_AT_VARIABLE, None)
    if kill_at is not None:
        env[faults.KILL_AT_VARIABLE] = kill_at
    return subprocess.run(
        [sys.executable, "-c", REACH],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # its own process group: the one it kills
    )


def test_a_fault_point_kills_only_where_its_phase_is_named():
    killed = _reach(faults.PLANNING)
    assert killed.returncode == -signal.SIGKILL and "went on" not in killed.stdout
    assert (
        killed.stderr == f"cai-ray: killed at fault point 'planning' ({faults.KILL_AT_VARIABLE})\n"
    )
    assert _reach(faults.VERIFYING).stdout == "went on\n"
    assert _reach(None).stdout == "went on\n"


def test_a_misspelt_phase_is_refused(monkeypatch):
    monkeypatch.setenv(faults.KILL_AT_VARIABLE, "planing")
    with pytest.raises(ValueError, match="'planing' is not one of the phases"):
        faults.fault_point(faults.PLANNING)
