import pytest

from cai_ray.config import ResourcesConfig
from cai_ray.pipeline.resources import (
    BLOCKS_PER_ACTOR,
    MIN_SHARD_BLOCKS,
    StagePlan,
    plan_stages,
    shard_blocks,
)


def test_two_cores_leave_room_for_the_foreground_actor():
    plan = plan_stages(ResourcesConfig(), cluster_cpus=2, shards=100)
    assert plan.injection_actors == 2 and plan.foreground_actors == 1
    assert plan.reserved_cpus <= 2


def test_pools_scale_with_the_cluster_but_not_past_the_work():
    assert plan_stages(ResourcesConfig(), cluster_cpus=16, shards=100).injection_actors == 16
    assert plan_stages(ResourcesConfig(), cluster_cpus=16, shards=3).injection_actors == 3


def test_asking_for_more_than_the_cluster_has_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="cluster has 2"):
        plan_stages(ResourcesConfig(injection_actors=4, cpus_per_injection_actor=1), 2, 10)


def test_an_autoscaling_cluster_takes_the_configured_counts():
    config = ResourcesConfig(autoscaling=True, injection_actors=64, foreground_actors=4)
    plan = plan_stages(config, cluster_cpus=0, shards=1000)  # no workers up yet
    assert (plan.injection_actors, plan.foreground_actors) == (64, 4)
    assert plan_stages(config, cluster_cpus=0, shards=10).injection_actors == 10
    with pytest.raises(ValueError, match="needs resources.injection_actors"):
        plan_stages(ResourcesConfig(autoscaling=True), cluster_cpus=0, shards=10)
    with pytest.raises(ValueError, match="autoscal"):
        plan_stages(ResourcesConfig(), cluster_cpus=0, shards=10)


def test_gpu_actors_follow_the_gpus():
    config = ResourcesConfig(gpus_per_injection_actor=1, cpus_per_injection_actor=1)
    plan = plan_stages(config, cluster_cpus=16, shards=100, cluster_gpus=4)
    assert plan.injection_actors == 4 and plan.injection_gpus == 1
    halves = config.model_copy(update={"gpus_per_injection_actor": 0.5})
    assert plan_stages(halves, cluster_cpus=16, shards=100, cluster_gpus=4).injection_actors == 8
    assert plan_stages(config, cluster_cpus=16, shards=2, cluster_gpus=4).injection_actors == 2
    with pytest.raises(ValueError, match="has 0 GPUs"):
        plan_stages(config, cluster_cpus=16, shards=10, cluster_gpus=0)
    with pytest.raises(ValueError, match="ask for 6 GPUs"):
        plan_stages(config.model_copy(update={"injection_actors": 6}), 16, 10, cluster_gpus=4)
    assert plan_stages(ResourcesConfig(), 16, 10, cluster_gpus=4).injection_gpus == 0


def test_a_few_shards_are_a_block_each_and_many_share_blocks_every_actor_gets():
    small, large = StagePlan(1, 1.0, 2, 0.5), StagePlan(125, 1.0, 1000, 1.0)
    assert shard_blocks(13, small) == 13  # a small job spreads shard by shard
    assert shard_blocks(MIN_SHARD_BLOCKS, small) == MIN_SHARD_BLOCKS
    assert shard_blocks(312_500, small) == MIN_SHARD_BLOCKS  # ten million inputs, 32 a shard
    assert shard_blocks(312_500, large) == BLOCKS_PER_ACTOR * 1000  # every actor gets blocks
    assert shard_blocks(0, small) == 1
