"""The driver at scale: what planning a job and ``synth --dry-run`` cost the driver at 10^5,
10^6 and 10^7 inputs (wall time and peak RSS, each measurement in a fresh process).

    python bench/bench_scale.py [--sizes 100000 1000000 10000000] [--list parquet|txt]

The inputs are a generated list (``--list parquet``: path and stamp columns, as
``cai-ray inputs list`` writes them; ``txt``: paths alone, so the driver stamps them): the
first 32 rows are links to the bundled demo tiles (the dry run probes two of them and the colour
comes from them), the rest name files that need not exist; a plan reads only the list. The job
is the demo config (its DAAD built first, outside the clock) with 32 targets a shard.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO, report

REAL_ROWS = 32
CHUNK = 1_000_000


def _chunks(folder: Path, count: int) -> Iterator[tuple[list[str], list[str]]]:
    """Paths and stamps, :data:`CHUNK` rows at a time (the generator's memory stays bounded
    too); the first :data:`REAL_ROWS` are links to the demo tiles, with their real stamps."""
    root = folder / "images"
    tiles = sorted((REPO / "data" / "demo" / "normal").glob("*.jpg"))
    (root / "00000").mkdir(parents=True, exist_ok=True)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        names = [f"{root}/{i // 1000:05d}/{i:08d}.jpg" for i in range(start, stop)]
        stamps = []
        for i, name in enumerate(names, start):
            if i < REAL_ROWS:
                link = Path(name)
                if not link.is_symlink():
                    link.symlink_to(tiles[i % len(tiles)])
                info = link.stat()
                stamps.append(f"{info.st_size}:{info.st_mtime_ns}")
            else:
                stamps.append(f"{4096 + i % 977}:1700000000000000000")
        yield names, stamps


def write_list(path: Path, count: int) -> None:
    """``count`` sorted input paths: a Parquet list with stamps, or a .txt of paths alone."""
    if path.suffix == ".parquet":
        schema = pa.schema([("path", pa.string()), ("stamp", pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            for names, stamps in _chunks(path.parent, count):
                writer.write_table(pa.table({"path": names, "stamp": stamps}, schema=schema))
    else:
        with path.open("w") as text:
            for names, _ in _chunks(path.parent, count):
                text.write("".join(f"{name}\n" for name in names))


def measure(list_path: Path, what: str) -> dict:
    """In this (fresh) process: plan or dry-run the demo job over ``list_path``."""
    from cai_ray.config import load_config
    from cai_ray.daad.shards import prepare_daad
    from cai_ray.pipeline.synth import dry_run, plan_job

    config = load_config(REPO / "configs" / "demo.yaml")
    config.inputs.paths = [str(list_path)]
    config.color = "grey"
    config.output.targets_per_shard = 32
    assert config.daad is not None
    config.daad.path = str(REPO / config.daad.path)
    if config.daad.build is not None:
        config.daad.build.spec = str(REPO / config.daad.build.spec)
        config.daad.build.data_root = str(REPO / config.daad.build.data_root)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as out:
        config.output.path = out
        prepare_daad(config.daad)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        if what == "plan":
            with tempfile.TemporaryDirectory(prefix="bench-scale-list-") as folder:
                plan = plan_job(config, folder)
                targets, shards = plan.count, plan.num_shards
        else:
            result = dry_run(config)
            targets, shards = result["targets"], result["shards"]
        wall = time.perf_counter() - start
    return {
        "targets": targets,
        "shards": shards,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--list", choices=["parquet", "txt"], default="parquet")
    parser.add_argument(
        "--what", choices=["plan", "dry-run"], nargs="+", default=["plan", "dry-run"]
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "bench-scale")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.what[0])))
        return
    figures: dict[str, float | int | str] = {"list": args.list}
    for size in args.sizes:
        list_path = args.workdir / f"inputs-{size}.{args.list}"
        if not list_path.exists():
            args.workdir.mkdir(parents=True, exist_ok=True)
            write_list(list_path, size)
        for what in args.what:
            child = [sys.executable, __file__, "--child", str(list_path), "--what", what]
            done = subprocess.run(child, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{what} of {size} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{size:>10} {what:8} {result['wall_s']:8.2f} s {result['peak_rss_mb']:7.0f} MB")
            name = f"{what.replace('-', '_')}_{size}"
            figures[f"{name}_s"] = result["wall_s"]
            figures[f"{name}_peak_rss_mb"] = result["peak_rss_mb"]
    sizes = sorted(args.sizes)
    if len(sizes) > 1:
        for what in args.what:
            name = what.replace("-", "_")
            ratio = figures[f"{name}_{sizes[-1]}_s"] / figures[f"{name}_{sizes[-2]}_s"]  # type: ignore[operator]
            figures[f"{name}_time_ratio_{sizes[-1]}_over_{sizes[-2]}"] = ratio
    report(figures)


if __name__ == "__main__":
    main()
