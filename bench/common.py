"""Shared set-up for the benchmarks: real magnetic-tile targets, a DAAD of the shared datasets."""

from __future__ import annotations

from pathlib import Path

from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.writer import RECORDS_NAME

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TILES = SHARED / "magnetic_tile" / "MT_Free" / "Imgs"
BENCH_DAAD = REPO / "out" / "bench-daad"


def shared_daad() -> str:
    """The DAAD of ../shared/data, built once into out/bench-daad."""
    if not (BENCH_DAAD / RECORDS_NAME).exists():  # absent, or built before records tables
        spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "shared_data.yaml")
        build_daad(spec, SHARED, str(BENCH_DAAD))
    return str(BENCH_DAAD)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: ``VmHWM``, not getrusage's ``ru_maxrss``,
    which a process started by another keeps from its parent across exec."""
    return status_kib(Path("/proc/self"), "VmHWM") / 1024


def report(figures: dict[str, float | int | str]) -> None:
    """Figures last, one ``name=value`` per line, so they can be collected."""
    for name, value in figures.items():
        print(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")


def processes_named(marker: bytes) -> list[Path]:
    """/proc/<pid> folders of the processes whose command line contains ``marker``."""
    found = []
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (folder / "cmdline").read_bytes():
                found.append(folder)
        except OSError:
            continue
    return found


def status_kib(folder: Path, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (e.g. VmRSS, VmHWM); 0 if the process is gone."""
    try:
        for line in (folder / "status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def spilled_mib() -> float:
    """Object-store bytes Ray spilled to disk so far in this cluster (0 when nothing was)."""
    import re

    from ray._private.internal_api import memory_summary

    found = re.search(r"Spilled (\d+) MiB", memory_summary(stats_only=True))
    return float(found.group(1)) if found else 0.0


def seconds_per_call(call, calls: int, device: str, warmup: int = 3) -> float:
    """Wall seconds per ``call()`` after ``warmup`` untimed calls, the GPU drained before and
    after the timed ones (CUDA work is asynchronous)."""
    import time

    import torch

    def drain() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    drain()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    drain()
    return (time.perf_counter() - start) / calls
