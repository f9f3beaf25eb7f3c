"""How large the label masks are against the defect actually injected, for each label rule.

The issue that prompted the 'pattern' rule: Poisson blending shifts intensities smoothly around a
pattern, and the published rule (difference > 7, 7x7 median) marks that shift too. Measured on
magnetic-tile targets with DeepCrack sources (CAI-N, 4:3:3): label area / pattern mask area, and
the fraction of the pattern's own pixels the label covers.

    python bench/bench_labels.py [--targets 32]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import TILES, report, shared_daad

from cai_ray.core.cai import CAIInjector, CAIParams, Injection
from cai_ray.daad.shards import PatternBank
from cai_ray.io.codecs import decode_image, resize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=32)
    args = parser.parse_args()
    patterns = PatternBank(
        shared_daad(), mode="grey", exclude_domains=["magnetic_tile", "crackforest"]
    )
    paths = sorted(TILES.glob("*.jpg"))[: args.targets]
    targets = [resize(decode_image(p.read_bytes(), "grey"), 256) for p in paths]
    foreground = np.ones((256, 256), bool)
    figures: dict[str, float | int | str] = {"targets": len(targets)}
    for rule in ("published", "pattern"):
        # the pattern rule with a 1x1 dilation is the injected pattern's own (resized) mask
        injector = CAIInjector(patterns, CAIParams(label_rule=rule))
        reference = CAIInjector(
            patterns, CAIParams(label_rule="pattern", pattern_dilation=1, diff_threshold=0)
        )
        ratios, coverage = [], []
        for path, target in zip(paths, targets, strict=True):
            made = injector.synthesize(target, foreground, seed=0, target_key=path.name)
            truth = reference.synthesize(target, foreground, seed=0, target_key=path.name)
            for sample, own in zip(made, truth, strict=True):
                if not (isinstance(sample, Injection) and isinstance(own, Injection)):
                    continue
                label, pattern = sample.mask > 0, own.mask > 0
                if pattern.sum() == 0:
                    continue
                ratios.append(label.sum() / pattern.sum())
                coverage.append((label & pattern).sum() / pattern.sum())
        figures[f"{rule}_area_over_pattern_median"] = float(np.median(ratios))
        figures[f"{rule}_area_over_pattern_p90"] = float(np.percentile(ratios, 90))
        figures[f"{rule}_covers_pattern_median"] = float(np.median(coverage))
    report(figures)


if __name__ == "__main__":
    main()
