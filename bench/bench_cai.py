"""Single-process synthesis rate: samples/s per core at 256x256 with 4:3:3 quotas (10 a target
for the baselines), magnetic-tile targets, DeepCrack sources (DRAEM: DeepCrack images as
textures), PNG encoding and tar packing included (the injection actor's own code), and the peak
memory of that process. ``*_job_work_*`` adds reading and decoding the targets: all the work of
the Ray job, done serially, the figure to compare the job's rate with. The rates are the median
of three passes over the same targets, so with the DAAD patterns cached; ``*_cold_*`` is the
first pass, which reads and decodes every pattern it draws, as a short job's actors do.

    python bench/bench_cai.py [--targets 64] [--baselines] [--stages] [--label-rule published]

--stages adds where a CAI-N sample's time goes, per stage of the data flow, from one profiled
pass with the patterns cached (``stage_*``) and one by a new actor (``stage_cold_*``: every
pattern's first read is its ``daad_read``); cProfile's overhead is included, so the shares, not
the sums, are the figures to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from functools import partial
from pathlib import Path

import numpy as np
from common import SHARED, TILES, peak_rss_mb, report, shared_daad

from cai_ray.core.cai import CAIParams
from cai_ray.daad.settings import DaadConfig
from cai_ray.pipeline.stages import ForegroundStage, InjectionStage
from cai_ray.synthesizers.cai import CAIMethod
from cai_ray.synthesizers.cutpaste import CutPasteMethod
from cai_ray.synthesizers.draem import DraemMethod
from cai_ray.synthesizers.fpi import FPIMethod
from cai_ray.synthesizers.glass import GlassMethod
from cai_ray.synthesizers.nsa import NSAMethod
from cai_ray.synthesizers.registry import SynthesizerConfig, tuned


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=64)
    parser.add_argument("--baselines", action="store_true", help="also time the baselines")
    parser.add_argument("--stages", action="store_true", help="CAI-N's time per stage")
    parser.add_argument(
        "--label-rule",
        default=None,
        help="CAI's label rule (default: CAIParams' own); 'published' repeats the figures "
        "measured before 'pattern' became the default",
    )
    args = parser.parse_args()
    daad = shared_daad()
    paths = sorted(TILES.glob("*.jpg"))[: args.targets]
    targets = [{"index": i, "key": p.name, "path": str(p)} for i, p in enumerate(paths)]
    foreground = ForegroundStage(
        image_size=256, mode="grey", method="full", model_path=None, min_fraction=0.01
    )
    start = time.perf_counter()
    prepared = foreground.process_shard(targets)
    decode_s = time.perf_counter() - start
    figures: dict[str, float | int | str] = {"targets": len(targets)}
    textures = sorted(str(p) for p in (SHARED / "deepcrack" / "train_img").glob("*.jpg"))
    rule = {"label_rule": args.label_rule} if args.label_rule else {}
    figures["label_rule"] = args.label_rule or CAIParams().label_rule
    methods: list[tuple[str, SynthesizerConfig, CAIParams]] = [
        ("cai_n", CAIMethod(), CAIParams(blend="normal", **rule)),
        ("cai_m", CAIMethod(), CAIParams(blend="mixed", **rule)),
    ]
    if args.baselines:
        methods += [
            ("paste", CAIMethod(), CAIParams(blend="paste")),
            ("cutpaste", CutPasteMethod(method="cutpaste"), CAIParams()),
            ("cutpaste_scar", CutPasteMethod(method="cutpaste", variant="scar"), CAIParams()),
            ("nsa", NSAMethod(method="nsa"), CAIParams()),
            ("nsa_mixed", NSAMethod(method="nsa", blend="mixed"), CAIParams()),
            ("draem", DraemMethod(method="draem", textures=textures), CAIParams()),
            ("fpi", FPIMethod(method="fpi"), CAIParams()),
            ("glass", GlassMethod(method="glass", textures=textures), CAIParams()),
        ]
    for name, synthesizer, params in methods:

        def injection(synthesizer=synthesizer, params=params):
            """One pass of a new injection actor's work (its pattern cache empty at first)."""
            stage = InjectionStage(
                synthesizer=tuned(synthesizer, params),
                daad=DaadConfig(path=daad, exclude_domains=["magnetic_tile", "crackforest"]),
                image_size=256,
                mode="grey",
                seed=0,
                key_prefix="b",
                image_format="png",
                include_normal=False,
                out="unused: process_shard packs the shard, it does not commit it",
            )
            return partial(
                stage.process_shard,
                0,
                json.loads(prepared["targets"]),
                prepared["images"],
                prepared["foregrounds"],
                [],
            )

        inject = injection()
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            out = inject()
            timings.append(time.perf_counter() - start)
        samples = json.loads(out["entry"])["samples"]
        rate = samples / float(np.median(timings))
        figures[f"{name}_samples_per_s"] = rate
        figures[f"{name}_ms_per_sample"] = 1000 / rate
        # the first pass reads and decodes each DAAD pattern it draws; later ones find it in
        # the actor's pattern cache (a short job runs cold, a long one warm)
        figures[f"{name}_cold_samples_per_s"] = samples / timings[0]
        # the whole job's work for these targets in one process: read, decode, resize,
        # foreground, inject, encode, pack (what the Ray job spreads over its actors)
        figures[f"{name}_job_work_samples_per_s"] = samples / (float(np.median(timings)) + decode_s)
        if args.stages and name == "cai_n":
            prepare = partial(foreground.process_shard, targets)
            for regime, call in (("", inject), ("cold_", injection())):
                stages = stage_times(prepare, call)
                figures.update(
                    {
                        f"stage_{regime}{k}_ms_per_sample": v * 1000 / samples
                        for k, v in stages.items()
                    }
                )
    figures["peak_rss_mb"] = peak_rss_mb()
    report(figures)


# Stage -> the functions whose cumulative time is that stage's (file name ending, function).
INJECTION_STAGES = {
    "daad_read": [("shards.py", "_read")],
    "poisson": [("poisson.py", "poisson_blend")],
    "label": [("cai.py", "_label")],
    "encode": [("png.py", "encode_png")],
    "pack": [("tar.py", "build_tar")],
}


def _profiled(call) -> tuple[float, dict[tuple[str, str], float]]:
    """The call's wall time under cProfile, and each function's cumulative seconds."""
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(call)
    wall = time.perf_counter() - start
    cumulative: dict[tuple[str, str], float] = {}
    for (file, _, function), row in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        cumulative[(Path(file).name, function)] = (
            cumulative.get((Path(file).name, function), 0) + row[3]
        )
    return wall, cumulative


def stage_times(prepare, inject) -> dict[str, float]:
    """Seconds per stage over one profiled pass of the foreground stage and one of injection:
    ``decode`` reads and resizes the targets, ``foreground`` the rest of that stage;
    ``stm_ils`` is the draws' remainder (pattern choice, scaling, placement, the blend's mask),
    ``other`` the shard's (sample keys and JSON, copies)."""
    wall, functions = _profiled(prepare)
    stages = {"decode": functions.get(("codecs.py", "load_views"), 0.0)}
    stages["foreground"] = wall - stages["decode"]
    wall, functions = _profiled(inject)
    for stage, pairs in INJECTION_STAGES.items():
        stages[stage] = sum(functions.get(pair, 0.0) for pair in pairs)
    draws = functions.get(("cai.py", "draw_by_quota"), 0.0)
    stages["stm_ils"] = draws - stages["daad_read"] - stages["poisson"] - stages["label"]
    stages["other"] = wall - draws - stages["encode"] - stages["pack"]
    return stages


if __name__ == "__main__":
    main()
