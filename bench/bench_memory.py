"""Driver and worker memory over a long job: is it flat?

Makes --targets small targets (64x64 crops of the real MT_Free tiles, written once to
out/bench-memory-inputs), runs the job with 10 samples per target into a fresh folder, and
samples every second the driver's RSS and the largest injection worker's RSS against the samples
committed so far. Reports both at about --early samples and at the end, and the ratio.

    python bench/bench_memory.py --targets 12000 --cpus 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import cv2
from common import REPO, TILES, processes_named, report, shared_daad, spilled_mib, status_kib

from cai_ray.config import SynthConfig
from cai_ray.pipeline.synth import run_synth

SIZE = 64


def make_inputs(count: int) -> Path:
    folder = REPO / "out" / "bench-memory-inputs"
    if len(list(folder.glob("*.png"))) >= count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(TILES.glob("*.jpg"))]
    made = 0
    while made < count:
        for tile in tiles:
            if made == count:
                break
            h, w = tile.shape
            y, x = (made * 7) % max(1, h - SIZE), (made * 13) % max(1, w - SIZE)
            cv2.imwrite(str(folder / f"t{made:06d}.png"), tile[y : y + SIZE, x : x + SIZE])
            made += 1
    return folder


class Sampler(threading.Thread):
    def __init__(self, out: Path, samples_per_shard: int) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.per_shard = samples_per_shard
        self.rows: list[tuple[float, int, float, float]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        driver = Path("/proc/self")
        while not self.stop.wait(1.0):
            workers = [status_kib(p, "VmRSS") / 1024 for p in processes_named(b"InjectionStage")]
            committed = len(list(self.out.glob("shard-*.json"))) * self.per_shard
            elapsed = time.monotonic() - self.started
            driver_mb = status_kib(driver, "VmRSS") / 1024
            self.rows.append((elapsed, committed, driver_mb, max(workers, default=0.0)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=12000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--early", type=int, default=10000, help="samples of the first reading")
    args = parser.parse_args()
    inputs = make_inputs(args.targets)
    out = REPO / "out" / "bench-memory"
    shutil.rmtree(out, ignore_errors=True)
    config = SynthConfig.model_validate(
        {
            "name": "memory",
            "image_size": SIZE,
            "color": "grey",
            "inputs": {"paths": [str(inputs)], "limit": args.targets},
            "daad": {"path": shared_daad(), "exclude_domains": ["magnetic_tile"]},
            "output": {"path": str(out), "targets_per_shard": 64, "preview_samples": 0},
            "resources": {"num_cpus": args.cpus},
        }
    )
    sampler = Sampler(out, 64 * config.samples_per_target)
    sampler.start()
    start = time.perf_counter()
    manifest = run_synth(config, show_progress=False)
    wall = time.perf_counter() - start
    spilled = spilled_mib()
    sampler.stop.set()
    sampler.join()
    rows = [r for r in sampler.rows if r[1] > 0]
    early = next(r for r in rows if r[1] >= args.early)
    late = rows[-1]
    steady = [r for r in rows if r[1] >= args.early]
    (out / "memory.json").write_text(json.dumps(sampler.rows))
    report(
        {
            "targets": args.targets,
            "samples": manifest["samples"],
            "wall_s": wall,
            "samples_per_s": manifest["samples"] / wall,
            "failed_samples": len(manifest["failed_samples"]),
            "object_store_spilled_mib": spilled,
            "early_samples": early[1],
            "driver_rss_mb_early": early[2],
            "driver_rss_mb_end": late[2],
            "driver_rss_max_over_min_after_early": max(r[2] for r in steady)
            / min(r[2] for r in steady),
            "worker_rss_mb_early": early[3],
            "worker_rss_mb_end": late[3],
            "worker_rss_max_over_min_after_early": max(r[3] for r in steady)
            / max(1e-9, min(r[3] for r in steady if r[3] > 0)),
        }
    )


if __name__ == "__main__":
    main()
