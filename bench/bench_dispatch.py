"""What handing a run's shards to Ray Data costs the driver, beyond the shards' own work: N
shard rows through two pass-through actor pools sized and placed as the pipeline sizes them
on this machine, in the blocks the pipeline picks (``resources.shard_blocks``) and one block a
shard (as every run did before). Wall time, time to the first row back, the driver's peak RSS;
each measurement in a fresh process with its own local Ray.

    python bench/bench_dispatch.py [--sizes 10000 100000] [--blocks picked one-per-shard]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import peak_rss_mb, report


class PassThrough:
    """A stage that does no work: what is left is the dispatch."""

    def __call__(self, batch: dict) -> dict:
        return batch


def measure(shards: int, blocks_rule: str) -> dict:
    """In this (fresh) process: ``shards`` rows through the two pools, counted back."""
    import os

    import ray

    from cai_ray.config import ResourcesConfig
    from cai_ray.pipeline.resources import plan_stages, shard_blocks
    from cai_ray.pipeline.synth import shard_dataset

    cpus = os.cpu_count() or 1  # named, so a new local Ray starts, never another's joined
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    stages = plan_stages(ResourcesConfig(), cluster_cpus=cpus, shards=shards)
    blocks = shard_blocks(shards, stages) if blocks_rule == "picked" else shards
    start = time.perf_counter()
    dataset = shard_dataset(list(range(shards)), blocks)
    handed = time.perf_counter() - start
    pools = [
        (stages.foreground_actors, stages.foreground_cpus),
        (stages.injection_actors, stages.injection_cpus),
    ]
    for actors, cpus_each in pools:
        dataset = dataset.map_batches(
            PassThrough,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_each,
        )
    first, rows = 0.0, 0
    for _ in dataset.iter_rows():
        rows += 1
        first = first or time.perf_counter() - start
    wall = time.perf_counter() - start
    ray.shutdown()
    assert rows == shards, f"{rows} rows came back of {shards}"
    return {
        "blocks": blocks,
        "handed_s": handed,
        "first_row_s": first,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--blocks",
        choices=["picked", "one-per-shard"],
        nargs="+",
        default=["picked", "one-per-shard"],
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1])))
        return
    figures: dict[str, float | int | str] = {}
    for size in args.sizes:
        for rule in args.blocks:
            command = [sys.executable, __file__, "--child", str(size), rule]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{size} shards, {rule}, failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{size:>8} shards {rule:14} {result['blocks']:>8} blocks "
                f"{result['handed_s']:7.1f} s handed {result['first_row_s']:7.1f} s first "
                f"{result['wall_s']:7.1f} s all {result['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
            name = f"{rule.replace('-', '_')}_{size}"
            for key, value in result.items():
                figures[f"{name}_{key}"] = value
    report(figures)


if __name__ == "__main__":
    main()
