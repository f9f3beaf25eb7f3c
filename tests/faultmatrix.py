"""The fault matrix's figures (docs/RELIABILITY.md). Each fault test compares what a disturbed
run wrote with what an undisturbed run of the same config wrote, asserts nothing was lost,
duplicated or changed, and records what it measured: a JSON line per test in the file named by
``CAI_RAY_FAULT_REPORT`` when it is set (``bench/fault_matrix.py`` sets it, runs the tests and
writes the table), nothing otherwise."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from cai_ray.io import layout, storage
from cai_ray.io.tar import iter_tar

REPORT_VARIABLE = "CAI_RAY_FAULT_REPORT"


def shard_tars(out: str) -> list[bytes]:
    """The bytes of every shard tar in an output, local or s3://, in shard order (files named
    as shards: another dataset's files beside them are not the job's)."""
    urls = storage.list_files(out, ".tar")
    return [storage.read_bytes(url) for url in urls if layout.is_ours(url.rsplit("/", 1)[-1])]


def samples(tars: Iterable[bytes]) -> tuple[dict[str, bytes], Counter[str]]:
    """Each sample's bytes (image and mask) by key, and how often each key was written."""
    found: dict[str, bytes] = {}
    seen: Counter[str] = Counter()
    for tar in tars:
        for key, files in iter_tar(tar):
            found[key] = files["png"] + files["mask.png"]
            seen[key] += 1
    return found, seen


def compare(disturbed: Iterable[bytes], undisturbed: Iterable[bytes]) -> dict[str, int]:
    """Samples expected, lost, duplicated (written more than once) and changed (other bytes)."""
    got, seen = samples(disturbed)
    expected, _ = samples(undisturbed)
    return {
        "samples": len(expected),
        "lost": len(expected.keys() - got.keys()),
        "duplicated": sum(count - 1 for count in seen.values()),
        "changed": sum(got[key] != data for key, data in expected.items() if key in got),
        "unexpected": len(got.keys() - expected.keys()),
    }


def assert_exactly_once(figures: dict[str, int]) -> None:
    """Every expected sample present once with the undisturbed bytes, and nothing else."""
    wrong = {k: figures[k] for k in ("lost", "duplicated", "changed", "unexpected") if figures[k]}
    assert not wrong, f"not exactly once: {wrong} of {figures['samples']} samples"


def record(row: str, **figures: object) -> None:
    """Append this test's figures for ``row`` (the fault's name in the matrix) to the report,
    with the test's name as junit reports it (``test_x[param]``)."""
    report = os.environ.get(REPORT_VARIABLE)
    if report:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].rsplit(" (", 1)[0]
        with Path(report).open("a") as file:
            file.write(json.dumps({"row": row, "test": test, **figures}) + "\n")


def stage_actors(stage: str) -> list[int]:
    """The pids of this test session's own actors of ``stage`` (the machine may run others'
    Ray clusters: theirs are not descendants of this process)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue

    def mine(pid: int) -> bool:
        for _ in range(64):  # bounded: a process tree is shallow
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
            if pid <= 1:
                return False
        return False

    found = []
    for pid in parents:
        try:
            if mine(pid) and stage.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found
