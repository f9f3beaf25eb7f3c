"""Named fault points, a test hook: a driver run with ``CAI_RAY_KILL_AT=<phase>`` is killed
(SIGKILL, no cleanup) when it reaches that phase, so a test can kill it at every phase in turn
and check that a rerun completes the job exactly once. Killing on timing alone would be flaky.

Without the variable a fault point is one dictionary lookup. With it, the process that imports
this module first (the driver, before it starts Ray) records its process group in
``CAI_RAY_KILL_GROUP``, which the Ray workers it starts inherit: a fault point met in a worker
(the last shard's commit) kills the driver's group too, not only the worker. Run the driver as
the leader of its own group (``setsid``, ``start_new_session=True``) so that the group is the
driver and the local Ray it started.
"""

from __future__ import annotations

import os
import signal

KILL_AT_VARIABLE = "CAI_RAY_KILL_AT"
GROUP_VARIABLE = "CAI_RAY_KILL_GROUP"

PLANNING = "planning"
"""The input list made (in the driver's temporary folder), nothing written to the output."""
LISTING_OUTPUT = "listing the output"
"""A resume: the job file checked, the output's committed shards about to be listed."""
LAST_SHARD = "writing the last shard"
"""The job's last shard's tar written and its entry's temporary too, not yet renamed."""
MERGING_MANIFEST = "merging the manifest"
"""The merged manifest's temporary written, not yet in place of the old one."""
VERIFYING = "verifying"
"""``verify`` has checked the first shard."""
EXPORTING = "exporting"
"""``export``: the first shard of the run's files written and its part's temporary too, not
yet in place."""

PHASES = (PLANNING, LISTING_OUTPUT, LAST_SHARD, MERGING_MANIFEST, VERIFYING, EXPORTING)

if os.environ.get(KILL_AT_VARIABLE):
    os.environ.setdefault(GROUP_VARIABLE, str(os.getpgrp()))


def armed(phase: str) -> bool:
    """Whether ``CAI_RAY_KILL_AT`` names ``phase`` (refused if it names no phase at all: a
    misspelt phase would never fire, and the test that set it would learn nothing)."""
    wanted = os.environ.get(KILL_AT_VARIABLE)
    if wanted is None:
        return False
    if wanted not in PHASES:
        raise ValueError(f"{KILL_AT_VARIABLE}={wanted!r} is not one of the phases {PHASES}")
    return wanted == phase


def fault_point(phase: str) -> None:
    """Kill the driver here (its process group, then this process) if ``CAI_RAY_KILL_AT``
    names ``phase``; otherwise do nothing."""
    if not armed(phase):
        return
    os.write(2, f"cai-ray: killed at fault point {phase!r} ({KILL_AT_VARIABLE})\n".encode())
    os.killpg(int(os.environ.get(GROUP_VARIABLE, os.getpgrp())), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)  # a Ray worker leads a process group of its own
