"""How visible CAI's injections are, before any gate: the distribution of the two quantities the
visibility gate (``cai.min_changed_share``, ``cai.min_contrast``) cuts on, per anomaly class and
scale, on the shipped targets.

Targets: the demo tiles (256x256, grey) with the demo DAAD (out/demo-daad); magnetic tile's
MT_Free and the defect-free cotton crops (96x96 grey, as the detector benchmark) with the DAAD of
../shared/data, the target's own domain left out. CAI-N with the default settings, the gate off,
so every sample an ungated job would keep is measured. ``--sheet DIR`` writes, per target set,
the samples nearest each chosen quantile as PNG rows (target, sample, label) to look at.

    python bench/bench_visibility.py [--targets 48] [--sheet out/visibility]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from common import REPO, SHARED, TILES, report, shared_daad

from cai_ray.core.cai import CAIInjector, CAIParams, Injection
from cai_ray.core.labels import visibility
from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.daad.shards import PatternBank
from cai_ray.detector.target_specs import load_target_spec
from cai_ray.detector.target_splits import load_target_split
from cai_ray.io.codecs import decode_image, resize

QUANTILES = (1, 5, 10, 25, 50)
DEMO_DAAD = REPO / "out" / "demo-daad"


def _demo_daad() -> str:
    if not (DEMO_DAAD / "daad.json").exists():
        spec = DaadSpec.from_yaml(REPO / "configs" / "daad" / "demo.yaml")
        build_daad(spec, REPO / "data" / "demo" / "defects", str(DEMO_DAAD))
    return str(DEMO_DAAD)


def _target_sets(count: int) -> dict[str, tuple[list[Path], int, PatternBank]]:
    cotton = load_target_split(
        load_target_spec(REPO / "configs" / "targets" / "cotton_impurity.yaml"), SHARED
    )
    return {
        "demo": (
            sorted((REPO / "data" / "demo" / "normal").glob("*.jpg"))[:count],
            256,
            PatternBank(_demo_daad(), mode="grey"),
        ),
        "magnetic_tile": (
            sorted(TILES.glob("*.jpg"))[:count],
            96,
            PatternBank(shared_daad(), mode="grey", exclude_domains=["magnetic_tile"]),
        ),
        "cotton": (
            sorted(cotton.train)[:count],
            96,
            PatternBank(shared_daad(), mode="grey", exclude_domains=["cotton_impurity"]),
        ),
    }


def _measure(paths: list[Path], size: int, patterns: PatternBank) -> list[dict]:
    params = CAIParams(min_changed_share=0, min_contrast=0)
    injector = CAIInjector(patterns, params)
    rows = []
    for path in paths:
        target = resize(decode_image(path.read_bytes(), "grey"), size)
        foreground = np.ones(target.shape, bool)
        for sample in injector.synthesize(target, foreground, seed=0, target_key=path.name):
            if not isinstance(sample, Injection):
                continue
            placed = np.zeros(target.shape, bool)
            y0, x0, y1, x1 = sample.blend_box
            placed[y0:y1, x0:x1] = sample.pattern_footprint
            share, contrast = visibility(
                sample.image, target, placed, sample.mask, threshold=params.diff_threshold
            )
            rows.append(
                {
                    "group": f"{sample.anomaly_class}/{sample.scale}",
                    "share": share,
                    "contrast": contrast,
                    "strip": (target, sample.image, sample.mask),
                }
            )
    return rows


def _write_sheet(rows: list[dict], quantity: str, out: Path) -> None:
    """The samples nearest each of the low percentiles 1..30 of ``quantity``, one row each."""
    values = np.array([row[quantity] for row in rows])
    order = np.argsort(values)
    picks = [order[min(len(order) - 1, int(len(order) * q / 100))] for q in range(1, 31, 3)]
    strips = []
    for pick in picks:
        target, image, mask = rows[pick]["strip"]
        strip = np.hstack([target, image, mask])
        strip = cv2.resize(strip, (768, 256), interpolation=cv2.INTER_NEAREST)
        cv2.putText(
            strip,
            f"{quantity} {values[pick]:.2f} {rows[pick]['group']}",
            (4, 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            255,
            1,
        )
        strips.append(strip)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(strips))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=48)
    parser.add_argument("--sheet", type=Path)
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {}
    for name, (paths, size, patterns) in _target_sets(args.targets).items():
        rows = _measure(paths, size, patterns)
        figures[f"{name}_samples"] = len(rows)
        groups = sorted({row["group"] for row in rows})
        for group in ["all", *groups]:
            chosen = [row for row in rows if group in ("all", row["group"])]
            for quantity in ("share", "contrast"):
                values = np.array([row[quantity] for row in chosen])
                cells = " ".join(f"p{q}={np.percentile(values, q):.2f}" for q in QUANTILES)
                print(f"{name:14} {group:18} n={len(chosen):4} {quantity:8} {cells}")
        for low in (0.1, 0.2, 0.3):
            figures[f"{name}_share_under_{low}"] = float(np.mean([r["share"] < low for r in rows]))
        for low in (0.3, 0.5, 0.75, 1.0):
            figures[f"{name}_contrast_under_{low}"] = float(
                np.mean([r["contrast"] < low for r in rows])
            )
        gate = CAIParams()
        figures[f"{name}_cut_by_the_default_gate"] = float(
            np.mean(
                [
                    r["share"] < gate.min_changed_share or r["contrast"] < gate.min_contrast
                    for r in rows
                ]
            )
        )
        if args.sheet is not None:
            for quantity in ("share", "contrast"):
                _write_sheet(rows, quantity, args.sheet / f"{name}-{quantity}.png")
    report(figures)


if __name__ == "__main__":
    main()
