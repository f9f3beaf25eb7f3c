"""Test pixel AP and PRO per epoch of chosen rows of a finished benchmark, each the mean over its
seeds with the seeds' range shaded: the figure a table's headline (the last epoch) is read from.

    python bench/plot_curves.py bench/results/magnetic_tile_recipe --rows before default \
        mixture-cai-cutpaste cutpaste fpi --out docs/img/recipe/magnetic_tile.png

``results`` is a benchmark's output folder or its kept copy (``runs/<row>-s<seed>/result.json``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = {"pixel_ap": "pixel AP (test)", "pro": "PRO (test)"}


def load_rows(results: Path) -> dict[str, list[dict]]:
    """Each row's runs (one per seed), read from ``results/runs``."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(results.glob("runs/*/result.json")):
        name = re.sub(r"-s\d+$", "", path.parent.name)
        rows.setdefault(name, []).append(json.loads(path.read_text()))
    return rows


def plot(rows: dict[str, list[dict]], names: list[str], title: str, out: Path) -> None:
    figure, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
    for colour, name in enumerate(names):
        runs = rows[name]
        epochs = [point["epoch"] for point in runs[0]["curve"]]
        for axis, metric in zip(axes, METRICS, strict=True):
            values = np.array([[p[metric] * 100 for p in run["curve"]] for run in runs])
            seeds = ", ".join(str(run["seed"]) for run in runs)
            axis.plot(
                epochs, values.mean(0), marker=".", color=f"C{colour}", label=f"{name} ({seeds})"
            )
            if len(runs) > 1:
                axis.fill_between(
                    epochs, values.min(0), values.max(0), color=f"C{colour}", alpha=0.15
                )
    for axis, label in zip(axes, METRICS.values(), strict=True):
        axis.set(xlabel="epoch", ylabel=label, title=title)
    axes[0].legend(fontsize=8, title="row (seeds): mean, range shaded", title_fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a benchmark's out folder or its kept copy")
    parser.add_argument("--rows", nargs="+", required=True, help="synthesizer rows to draw")
    parser.add_argument("--title", default="", help="each panel's title")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    rows = load_rows(args.results)
    missing = [name for name in args.rows if name not in rows]
    if missing:
        parser.error(f"no runs for {missing} under {args.results}/runs (have: {sorted(rows)})")
    plot(rows, args.rows, args.title, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
