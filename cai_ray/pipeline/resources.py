"""Actor-pool sizes from the config and the cluster's CPUs.

Pools must leave room for the work that feeds them: a pool that takes every CPU starves the
foreground actors and Ray Data's own tasks, and the job hangs. Sizes the config names are
checked against the cluster up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cai_ray.config import ResourcesConfig


@dataclass(frozen=True)
class StagePlan:
    foreground_actors: int
    foreground_cpus: float
    injection_actors: int
    injection_cpus: float
    injection_gpus: float = 0.0

    @property
    def reserved_cpus(self) -> float:
        return (
            self.foreground_actors * self.foreground_cpus
            + self.injection_actors * self.injection_cpus
        )


def plan_stages(
    config: ResourcesConfig, cluster_cpus: float, shards: int, cluster_gpus: float = 0.0
) -> StagePlan:
    """Pool sizes for ``shards`` units of work on a cluster with ``cluster_cpus`` logical CPUs
    and ``cluster_gpus`` GPUs (used only when injection actors take GPUs: the CDM).

    On an autoscaling cluster the CPUs up now say little (it may have no workers yet), so the
    config's actor counts are taken as they are and Ray's autoscaler adds nodes for them.
    """
    if config.autoscaling:
        if config.injection_actors is None or config.foreground_actors is None:
            raise ValueError(
                "resources.autoscaling needs resources.injection_actors and "
                "resources.foreground_actors: the cluster's size is not known up front"
            )
        work = max(1, shards)
        return StagePlan(
            min(config.foreground_actors, work),
            config.cpus_per_foreground_actor,
            min(config.injection_actors, work),
            config.cpus_per_injection_actor,
            config.gpus_per_injection_actor,
        )
    if cluster_cpus <= 0:
        raise ValueError(
            "the Ray cluster reports no CPUs; if it autoscales from zero workers, set "
            "resources.autoscaling with explicit actor counts"
        )
    work = max(1, shards)
    fg_cpus, inj_cpus = config.cpus_per_foreground_actor, config.cpus_per_injection_actor
    foreground = config.foreground_actors or max(1, math.ceil(cluster_cpus / 8))
    foreground = min(foreground, work)
    free = cluster_cpus - foreground * fg_cpus
    gpus = config.gpus_per_injection_actor
    if gpus and cluster_gpus < gpus:
        raise ValueError(
            f"resources.gpus_per_injection_actor is {gpus:g} but the cluster has "
            f"{cluster_gpus:g} GPUs: set it to 0 to sample on CPUs (slow), or add GPU nodes"
        )
    if config.injection_actors is not None:
        injection = min(config.injection_actors, work)
    elif gpus:
        injection = max(1, min(math.floor(cluster_gpus / gpus + 1e-9), work))
    else:
        injection = max(1, min(math.floor(free / inj_cpus), math.floor(cluster_cpus), work))
    plan = StagePlan(foreground, fg_cpus, injection, inj_cpus, gpus)
    if gpus and injection * gpus > cluster_gpus + 1e-9:
        raise ValueError(
            f"resources ask for {injection * gpus:g} GPUs ({injection} injection actors x "
            f"{gpus:g}) but the cluster has {cluster_gpus:g}"
        )
    if plan.reserved_cpus > cluster_cpus + 1e-9:
        raise ValueError(
            f"resources ask for {plan.reserved_cpus:g} CPUs ({foreground} foreground actors x "
            f"{fg_cpus:g}, {injection} injection actors x {inj_cpus:g}) "
            f"but the cluster has {cluster_cpus:g}: "
            "lower the actor counts or CPUs per actor (or set resources.autoscaling if the "
            "cluster adds nodes on demand)"
        )
    return plan


MIN_SHARD_BLOCKS = 1_000
"""Up to this many shards, each reaches Ray Data as a block of its own."""

BLOCKS_PER_ACTOR = 16
"""Beyond :data:`MIN_SHARD_BLOCKS`, the blocks each actor of the larger pool gets over a run:
enough that the last blocks leave little of the run with actors idle."""


def shard_blocks(shards: int, plan: StagePlan) -> int:
    """How many blocks a run's ``shards`` reach Ray Data in. Each block costs the driver
    milliseconds of scheduling, and a run of ten million inputs has hundreds of thousands of
    shards (docs/BENCHMARKS.md, "Handing the shards to Ray Data"), so beyond a thousand
    shards a block holds several; a stage still takes one shard a call, and every actor still
    gets work."""
    actors = max(plan.foreground_actors, plan.injection_actors)
    return max(1, min(shards, max(MIN_SHARD_BLOCKS, BLOCKS_PER_ACTOR * actors)))


MIN_ACTOR_RESTARTS = 16
"""Restarts a stage actor has in a run at least: each input that kills its worker costs its
actor ``worker_deaths_per_target`` of them, and one actor may meet several such inputs in a
run, more so with small shards."""


def restart_bound(config: ResourcesConfig, targets_per_shard: int) -> int:
    """How often Ray may restart one stage actor in a run: the worker deaths the ledger allows
    on one shard (``worker_deaths_per_target`` on each target and between them,
    :mod:`cai_ray.pipeline.deaths`), at least :data:`MIN_ACTOR_RESTARTS`. Ray Data's default
    restarts an actor forever, and an actor that dies while it starts is never charged to a
    target (measured: 56 starts in 60 s, Ray 2.60). A shard's retries stay unbounded: the
    ledger ends a shard's death loop (it gives the target up, or stops the job), and a shard
    whose actor is out of reach for a while (its node lost) must wait for the actor's restart
    elsewhere, not spend its retries on refused connections."""
    return max(config.worker_deaths_per_target * (targets_per_shard + 1), MIN_ACTOR_RESTARTS)


def actor_options(config: ResourcesConfig, targets_per_shard: int) -> dict[str, Any]:
    """``map_batches`` options for the stage actors: Ray's restarts of an actor bounded
    (:func:`restart_bound`), and the memory each needs where ``actor_memory_mb`` is set (Ray
    places an actor only where that much is free). Ray 2.60 takes the bound only as an extra
    remote argument, which it deprecates for 2.64 without a named replacement yet."""
    memory = None if config.actor_memory_mb is None else config.actor_memory_mb * 2**20
    return {"memory": memory, "max_restarts": restart_bound(config, targets_per_shard)}
