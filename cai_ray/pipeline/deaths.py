"""Targets that kill their worker: each made again a bounded number of times, then given up
with the reason, while the job goes on.

A target can kill the actor making it: an image whose decoding takes the actor over its memory
limit, a decoder that crashes on one file. Ray restarts the actor and retries its shard, and Ray
Data's actor pools do so without end by default (``max_restarts`` and ``max_task_retries`` -1):
one such target would keep a job busy forever. So a run on Ray keeps a :class:`DeathLedger`,
one small actor, where a stage notes which targets of a shard it is on; when the shard comes
back after its actor died, the ledger charges the death to those targets, and a target charged
``resources.worker_deaths_per_target`` deaths is given up (a skipped input, or failed samples,
with the reason) instead of made again. The shard's other targets are made as ever: the same
bytes as a run without the fault. Ray's restarts of an actor are bounded above what the ledger
needs (:func:`cai_ray.pipeline.resources.restart_bound`), so deaths the ledger cannot pin on a
target (an actor that dies while it starts) do not loop either.

A memory limit (``resources.actor_memory_mb``) is enforced by :class:`MemoryWatchdog`, a thread
in each stage actor that reads the actor's private resident memory every
:data:`MEMORY_POLL_S` seconds and kills the actor (SIGKILL, as the kernel's OOM killer does)
once it is over: Ray's own memory monitor acts only near 95% of the node's memory, and an
address-space limit (RLIMIT_AS) breaks a Ray worker, which maps gigabytes it never touches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MEMORY_POLL_S = 0.05
"""How often a stage actor reads its memory: an actor can go over its limit by what it
allocates in this time before it is killed."""

WORKER_DIED = "worker died"
"""What the manifest counts samples given up after worker deaths by (``failed_by_cause``)."""

_BETWEEN_TARGETS = ""
"""The ledger's name for a shard's work outside its targets (writing it out)."""


class WorkerDeathsError(RuntimeError):
    """A shard's actor keeps dying outside its targets: no target to give up, so the job stops."""


def private_mb() -> int:
    """This process's private resident memory in MB: its resident pages less the shared ones
    (the object store's, the libraries'), so what its own allocations hold."""
    with open("/proc/self/statm") as statm:
        fields = statm.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE") >> 20


class MemoryWatchdog:
    """Kills its own process once its private memory is over ``limit_mb``, after telling
    ``on_over`` how much it held; a daemon thread, started by :meth:`start`."""

    def __init__(self, limit_mb: int, on_over: Callable[[int], None]) -> None:
        self.limit_mb = limit_mb
        self.on_over = on_over

    def start(self) -> None:
        threading.Thread(target=self._watch, name="memory-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            used = private_mb()
            if used > self.limit_mb:
                log.error("%d MB over the memory limit of %d MB: killed", used, self.limit_mb)
                self.on_over(used)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(MEMORY_POLL_S)


class DeathLedger:
    """Which targets each stage's shards are on, and the worker deaths charged to each target;
    held by one Ray actor per run (:func:`start_ledger`), called by every stage actor
    (:class:`TargetGuard`). A shard is named by its stage and index, a target by its key."""

    def __init__(self, deaths_per_target: int, memory_limit_mb: int | None) -> None:
        self.allowed = deaths_per_target
        self.limit_mb = memory_limit_mb
        self.on: dict[tuple[str, int], list[str]] = {}
        """The targets each unfinished attempt at a shard was on last."""
        self.deaths: Counter[tuple[str, int, str]] = Counter()
        self.over_limit: Counter[tuple[str, int, str]] = Counter()
        self.peak_mb: dict[tuple[str, int, str], int] = {}

    def begin(self, stage: str, shard: int) -> dict[str, str]:
        """An attempt at a shard begins: an earlier one that did not finish died, and its death
        is charged to the targets it was on. Returns the targets to give up, with the reason;
        raises :class:`WorkerDeathsError` once the shard's deaths outside its targets reach the
        allowance."""
        if (stage, shard) in self.on:
            for key in self.on[(stage, shard)] or [_BETWEEN_TARGETS]:
                self.deaths[(stage, shard, key)] += 1
        self.on[(stage, shard)] = []
        between = self.deaths[(stage, shard, _BETWEEN_TARGETS)]
        if between >= self.allowed:
            raise WorkerDeathsError(
                f"the {stage} actor died {between} times on shard {shard} outside its targets "
                "(no target to give up): something else kills it, e.g. the kernel's OOM killer "
                "or Ray's memory monitor (see Ray's log folder)"
            )
        return {
            key: self._reason((stage, shard, key))
            for (named, index, key), count in self.deaths.items()
            if (named, index) == (stage, shard) and key and count >= self.allowed
        }

    def start(self, stage: str, shard: int, keys: list[str]) -> None:
        """The shard's attempt is on these targets now (none: outside its targets)."""
        self.on[(stage, shard)] = keys

    def finish(self, stage: str, shard: int) -> None:
        self.on.pop((stage, shard), None)

    def note_over_limit(self, stage: str, shard: int, used_mb: int) -> None:
        """The shard's actor is about to be killed over its memory limit, holding ``used_mb``."""
        for key in self.on.get((stage, shard)) or [_BETWEEN_TARGETS]:
            self.over_limit[(stage, shard, key)] += 1
            self.peak_mb[(stage, shard, key)] = max(
                used_mb, self.peak_mb.get((stage, shard, key), 0)
            )

    def summary(self) -> dict[str, dict[str, int]]:
        """Per stage: worker deaths charged, how many were over the memory limit, and the
        targets given up."""
        stages: dict[str, dict[str, int]] = {}
        for (stage, _, key), count in self.deaths.items():
            figures = stages.setdefault(stage, {"deaths": 0, "over_limit": 0, "given_up": 0})
            figures["deaths"] += count
            figures["given_up"] += int(bool(key) and count >= self.allowed)
        for (stage, _, _), count in self.over_limit.items():
            stages.setdefault(stage, {"deaths": 0, "over_limit": 0, "given_up": 0})
            stages[stage]["over_limit"] += count
        return stages

    def _reason(self, target: tuple[str, int, str]) -> str:
        deaths, over = self.deaths[target], min(self.over_limit[target], self.deaths[target])
        died = f"{WORKER_DIED} {deaths} times on it"
        limit = f"the memory limit (resources.actor_memory_mb: {self.limit_mb} MB)"
        if over == deaths:
            return f"{died}: over {limit}, at {self.peak_mb[target]} MB"
        if over:
            return f"{died}, {over} of them over {limit}, at {self.peak_mb[target]} MB"
        return (
            f"{died}, never over a memory limit of its own: a crash, or killed from outside "
            "(the kernel's OOM killer, Ray's memory monitor)"
        )


def start_ledger(deaths_per_target: int, memory_limit_mb: int | None) -> Any:
    """The run's ledger: a Ray actor on this (the driver's) node, which lives as long as the
    job, of no CPU."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(DeathLedger).options(num_cpus=0, scheduling_strategy=here)
    return actor.remote(deaths_per_target, memory_limit_mb)


class TargetGuard:
    """A stage actor's side of the ledger: tells it which shard and targets the actor is on and
    learns which targets to give up; with a memory limit, watches the actor's memory (from its
    first shard on: what it holds once built must fit). Without a ledger (the local executor,
    a probe) it gives nothing up; a memory limit is watched all the same."""

    def __init__(self, ledger: Any, stage: str, memory_limit_mb: int | None) -> None:
        self.ledger, self.stage, self.shard = ledger, stage, -1
        if memory_limit_mb is None:
            return
        held = private_mb()
        if held > memory_limit_mb:
            raise ValueError(
                f"resources.actor_memory_mb ({memory_limit_mb} MB) is below what a {stage} "
                f"actor holds before its first shard ({held} MB): raise it"
            )
        MemoryWatchdog(memory_limit_mb, self._note_over_limit).start()

    def begin(self, shard: int) -> dict[str, str]:
        """The shard starts (again, after a death): the targets to give up, with the reason."""
        self.shard = shard
        return self._call("begin", shard) or {}

    def start(self, keys: list[str]) -> None:
        """The actor is on these targets of the shard from now on (none: between targets)."""
        self._call("start", self.shard, keys)

    def finish(self) -> None:
        self._call("finish", self.shard)

    def _call(self, method: str, *args: object) -> Any:
        """Wait for the ledger's answer: a death right after must find the call recorded."""
        if self.ledger is None:
            return None
        import ray

        return ray.get(getattr(self.ledger, method).remote(self.stage, *args))

    def _note_over_limit(self, used_mb: int) -> None:
        """Best effort, briefly: the actor is over its limit and keeps growing meanwhile."""
        if self.ledger is None:
            return
        import ray

        note = self.ledger.note_over_limit.remote(self.stage, self.shard, used_mb)
        ray.wait([note], timeout=1.0)


def close_ledger(ledger: Any) -> dict[str, dict[str, int]]:
    """End the run's ledger, logging the worker deaths it saw; returns its summary (empty
    where the ledger cannot be reached: its end never hides the error that ends a job)."""
    import ray

    try:
        summary: dict[str, dict[str, int]] = ray.get(ledger.summary.remote(), timeout=30)
    except Exception as exc:  # the ledger's node or Ray itself gone: the job's error matters
        log.warning("the worker-death ledger could not be read at the end: %s", exc)
        summary = {}
    with contextlib.suppress(Exception):
        ray.kill(ledger)
    for stage, figures in sorted(summary.items()):
        log.warning(
            "%s actors died %d times (%d over the memory limit); targets given up: %d",
            stage,
            figures["deaths"],
            figures["over_limit"],
            figures["given_up"],
        )
    return summary


def job_error(exc: Exception, ledger: Any, restarts: int) -> str | None:
    """The error for a job Ray stopped because a stage actor kept dying (``exc``, an actor
    error), with what the run's ledger saw; None for any other error (an actor's constructor
    that raised says why itself)."""
    import ray

    if not isinstance(exc, ray.exceptions.RayActorError) or exc.actor_init_failed:
        return None
    try:
        summary: dict[str, dict[str, int]] = ray.get(ledger.summary.remote(), timeout=30)
    except Exception:  # the ledger is gone too: say what is known
        summary = {}
    seen = "; ".join(
        f"{stage}: {f['deaths']} deaths during targets or shards ({f['over_limit']} over the "
        f"memory limit), {f['given_up']} targets given up"
        for stage, f in sorted(summary.items())
    )
    return (
        f"a stage actor kept dying, and Ray stopped after {restarts} restarts of an actor "
        f"({seen or 'none of the deaths during a shard'}): something "
        "outside the targets kills the actors, e.g. the kernel's OOM killer, Ray's memory "
        "monitor or lost nodes (see Ray's log folder), or one actor met more inputs that kill "
        "their worker than its restarts allow (raise resources.worker_deaths_per_target, or "
        "targets_per_shard)"
    )
