"""The Ray synthesis job's rate against cores x the single-process rate (bench_cai.py).

Runs the real job (configs/magnetic_tile.yaml settings) on a local Ray with --cpus CPUs into a
fresh folder and reports the end-to-end rate (Ray start and actor start-up included) and the
steady rate (shards committed after each actor's first one, over the time they took).

    python bench/bench_job.py --cpus 2 --targets 952 [--single-rate 258]
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import yaml
from common import REPO, peak_rss_mb, report, shared_daad

from cai_ray.config import SynthConfig
from cai_ray.pipeline.synth import run_synth


class WorkerMemory(threading.Thread):
    """Polls the peak RSS (VmHWM) of the injection actors' processes while the job runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = status.read_text()
                    cmdline = (status.parent / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"InjectionStage" not in cmdline:
                    continue
                for line in text.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--targets", type=int, default=952)
    parser.add_argument("--injection-actors", type=int, help="default: sized from the CPUs")
    parser.add_argument("--targets-per-shard", type=int, default=32)
    parser.add_argument("--single-rate", type=float, help="bench_cai.py's cai_n_samples_per_s")
    args = parser.parse_args()
    raw = yaml.safe_load((REPO / "configs" / "magnetic_tile.yaml").read_text())
    out = REPO / "out" / f"bench-job-{args.cpus}"
    shutil.rmtree(out, ignore_errors=True)
    raw["daad"] = {"path": shared_daad(), "exclude_domains": ["magnetic_tile"]}
    raw["inputs"]["limit"] = args.targets
    raw["output"].update(path=str(out), preview_samples=0)
    raw["output"]["targets_per_shard"] = args.targets_per_shard
    raw["resources"] = {"num_cpus": args.cpus, "injection_actors": args.injection_actors}
    raw["inputs"]["paths"] = [str((REPO / p).resolve()) for p in raw["inputs"]["paths"]]
    config = SynthConfig.model_validate(raw)
    memory = WorkerMemory()
    memory.start()
    start = time.perf_counter()
    manifest = run_synth(config, show_progress=False)
    total = time.perf_counter() - start
    memory.stop.set()
    # Steady rate: after every actor has committed its first shard (start-up excluded).
    commits = sorted(
        (p.stat().st_mtime, json.loads(p.read_text())["samples"])
        for p in Path(out).glob("shard-*.json")
    )
    actors = args.injection_actors or args.cpus
    warm = commits[actors - 1][0]
    steady = sum(n for _, n in commits[actors:]) / max(commits[-1][0] - warm, 1e-9)
    figures: dict[str, float | int | str] = {
        "cpus": args.cpus,
        "injection_actors": args.injection_actors or args.cpus,
        "samples": manifest["samples"],
        "shards": len(commits),
        "wall_s": total,
        "end_to_end_samples_per_s": manifest["samples"] / total,
        "steady_samples_per_s": steady,
        "driver_peak_rss_mb": peak_rss_mb(),
        "injection_worker_peak_rss_mb": memory.peak_mb,
    }
    if args.single_rate:
        figures["steady_efficiency_vs_cores_x_single"] = steady / (args.cpus * args.single_rate)
    report(figures)


if __name__ == "__main__":
    main()
