"""Are the PNG bytes a function of the pixels alone? ``encode_png`` at a given ISA-L level, in
fresh processes whose heaps first hold different junk, over every image and pattern crop of
the shared DAAD (about 9,700 PNGs); prints the number of distinct digests per level (1: the
bytes do not depend on the process).

    python bench/bench_png_determinism.py [--levels 0 1] [--runs 6]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

from common import report, shared_daad


def digest_in_this_process(daad: str, level: int, junk: int) -> str:
    import numpy as np

    from cai_ray.daad.records import PATTERN_IMAGE
    from cai_ray.io import codecs, png
    from cai_ray.io.tar import iter_tar

    rng = np.random.default_rng(junk)
    kept = [rng.integers(0, 255, int(rng.integers(1, 1 << 20)), np.uint8) for _ in range(junk)]
    png._DEFLATE_LEVEL = level  # the level under test, in this process only
    digest = hashlib.sha256()
    for shard in sorted(Path(daad).glob("*.tar")):
        for _, files in iter_tar(shard.read_bytes()):
            for name, data in files.items():
                if name == PATTERN_IMAGE or name in ("jpg", "png"):
                    digest.update(png.encode_png(codecs.decode_image(data)))
                    kept.append(np.empty(int(rng.integers(1, 5000)), np.uint8))
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    daad = shared_daad()
    if args.child:
        print(digest_in_this_process(daad, *args.child))
        return
    figures: dict[str, float | int | str] = {"runs": args.runs}
    for level in args.levels:
        digests = {
            subprocess.run(
                [sys.executable, __file__, "--child", str(level), str(junk)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            for junk in range(args.runs)
        }
        figures[f"level_{level}_distinct_digests"] = len(digests)
    report(figures)


if __name__ == "__main__":
    main()
