"""The benchmark's report: a CSV of every run, a markdown table (mean and standard deviation
over seeds), and pictures: training curves, a bar chart per metric, and test defects with their
true and predicted masks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cai_ray.extras import require
from cai_ray.io import storage
from cai_ray.io.codecs import ColorMode, resize
from cai_ray.io.layout import committed_indices, shard_name
from cai_ray.io.samples import decode_sample, read_meta
from cai_ray.io.tar import iter_tar

if TYPE_CHECKING:
    from cai_ray.benchmark.config import BenchmarkConfig

METRICS = ("pixel_auroc", "pixel_ap", "pro", "image_auroc")


def read_synth_images(out: str, size: int, mode: ColorMode, count: int) -> np.ndarray:
    """The first ``count`` pseudo-anomalous images of a synthesis output, in shard order."""
    images: list[np.ndarray] = []
    for index in sorted(committed_indices(out)):
        for _, files in iter_tar(storage.read_bytes(storage.join(out, shard_name(index)))):
            if read_meta(files)["label"] == 1:
                images.append(resize(decode_sample(files, mode)[0], size))
            if len(images) == count:
                return np.stack(images)
    if len(images) < 2:
        raise ValueError(f"{out} has fewer than 2 pseudo-anomalous images")
    return np.stack(images)


def _pyplot() -> Any:
    require("bench", ("matplotlib",), "the benchmark's pictures")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def summarize_runs(results: list[dict], fid: dict[str, float]) -> list[dict]:
    """One row per synthesizer, in the config's order: mean and std over seeds of each metric
    at the last epoch (the headline: picking the best epoch picks on the test set), and the
    mean pixel AP at the best epoch beside it, with the epochs that were best."""
    rows: list[dict] = []
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name]
        row: dict[str, Any] = {"synthesizer": name, "seeds": len(runs)}
        for metric in METRICS:
            values = np.array([r["last"][metric] for r in runs])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(runs) > 1 else 0.0
        row["best_pixel_ap"] = float(np.mean([r["best"]["pixel_ap"] for r in runs]))
        row["best_epochs"] = [r["best"]["epoch"] for r in runs]
        if name in fid:
            row["fid"] = fid[name]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    has_fid = any("fid" in row for row in rows)
    header = ["synthesizer", "pixel AUROC", "pixel AP", "PRO", "image AUROC", "AP (best epoch)"]
    header += ["best epochs"] + (["FID"] if has_fid else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["synthesizer"]]
        cells += [f"{100 * row[m]:.1f} ± {100 * row[m + '_std']:.1f}" for m in METRICS]
        cells += [f"{100 * row['best_pixel_ap']:.1f}", ", ".join(map(str, row["best_epochs"]))]
        if has_fid:
            cells.append(f"{row['fid']:.1f}" if "fid" in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def defect_table(results: list[dict]) -> str:
    """Pixel AP / PRO per defect type at the last epoch, mean over the seeds scored so, one row
    per synthesizer; "" when no run has them."""
    scored = [r for r in results if r.get("by_defect")]
    if not scored:
        return ""
    kinds = sorted({kind for r in scored for kind in r["by_defect"]["defects"]})
    header = ["synthesizer", *kinds, "all", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(r["name"] for r in scored):
        runs = [r for r in scored if r["name"] == name]
        cells = [name]
        for kind in kinds:
            per_run = [r["by_defect"]["defects"].get(kind) for r in runs]
            values = [m for m in per_run if m is not None]
            ap = 100 * np.mean([m["pixel_ap"] for m in values])
            cells.append(f"{ap:.1f} / {100 * np.mean([m['pro'] for m in values]):.0f}")
        ap = 100 * np.mean([r["last"]["pixel_ap"] for r in runs])
        cells.append(f"{ap:.1f} / {100 * np.mean([r['last']['pro'] for r in runs]):.0f}")
        cells.append(", ".join(str(r["seed"]) for r in runs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    storage.write_bytes_atomic(str(path), buffer.getvalue())


def _curves(plt: Any, results: list[dict], path: Path) -> None:
    """One colour per synthesizer, one line style per seed."""
    figure, (loss_axis, ap_axis) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(dict.fromkeys(run["name"] for run in results))
    seeds = list(dict.fromkeys(run["seed"] for run in results))
    for run in results:
        style = {
            "color": f"C{names.index(run['name']) % 10}",
            "linestyle": ("-", "--", ":", "-.")[seeds.index(run["seed"]) % 4],
        }
        label = f"{run['name']} s{run['seed']}"
        loss_axis.plot(range(1, len(run["losses"]) + 1), run["losses"], label=label, **style)
        epochs = [c["epoch"] for c in run["curve"]]
        ap_axis.plot(epochs, [c["pixel_ap"] for c in run["curve"]], marker=".", **style)
    loss_axis.set(xlabel="epoch", ylabel="focal loss (training)", yscale="log")
    ap_axis.set(xlabel="epoch", ylabel="pixel AP (test)")
    for axis in (loss_axis, ap_axis):
        axis.locator_params(axis="x", integer=True)
    loss_axis.legend(fontsize=7, ncol=2)
    _save(figure, path)
    plt.close(figure)


def _bars(plt: Any, rows: list[dict], metric: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(1.1 * len(rows) + 2, 3.5))
    names = [row["synthesizer"] for row in rows]
    axis.bar(names, [row[metric] for row in rows], yerr=[row[metric + "_std"] for row in rows])
    axis.set(ylabel=metric.replace("_", " "), title=f"{metric} (last epoch, mean ± std)")
    axis.tick_params(axis="x", rotation=30)
    _save(figure, path)
    plt.close(figure)


def _examples(
    plt: Any,
    examples: tuple[np.ndarray, np.ndarray, list[str]],
    maps: dict[str, np.ndarray],
    path: Path,
) -> None:
    images, masks, defects = examples
    columns = 2 + len(maps)
    figure, axes = plt.subplots(
        len(images), columns, figsize=(1.6 * columns, 1.6 * len(images)), squeeze=False
    )
    for row, (image, mask, defect) in enumerate(zip(images, masks, defects, strict=True)):
        panels = [("image", image, "gray"), ("truth", mask, "gray")]
        panels += [(name, m[row].astype(np.float32), "inferno") for name, m in maps.items()]
        for col, (title, panel, cmap) in enumerate(panels):
            axis = axes[row, col]
            axis.imshow(panel, cmap=cmap, vmin=0, vmax=255 if title == "image" else 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
        axes[row, 0].set_ylabel(defect, fontsize=8)
    _save(figure, path)
    plt.close(figure)


def write_report(
    config: BenchmarkConfig,
    results: list[dict],
    *,
    fid: dict[str, float],
    examples: tuple[np.ndarray, np.ndarray, list[str]],
    target: dict,
) -> dict:
    """Write results.csv, results.md, summary.json and the pictures into ``config.out``."""
    out = Path(config.out)
    rows = summarize_runs(results, fid)
    buffer = io.StringIO()
    fields = ["name", "seed", "samples", "failed_samples", "best_epoch"]
    fields += [f"best_{m}" for m in METRICS] + [f"last_{m}" for m in METRICS]
    writer = csv.DictWriter(buffer, fieldnames=fields + ["fid"], lineterminator="\n")
    writer.writeheader()
    for run in results:
        record = {k: run[k] for k in ("name", "seed", "samples", "failed_samples")}
        record["best_epoch"] = run["best"]["epoch"]
        record |= {f"best_{m}": round(run["best"][m], 5) for m in METRICS}
        record |= {f"last_{m}": round(run["last"][m], 5) for m in METRICS}
        record["fid"] = round(fid[run["name"]], 3) if run["name"] in fid else ""
        writer.writerow(record)
    storage.write_bytes_atomic(str(out / "results.csv"), buffer.getvalue().encode())
    table = markdown_table(rows)
    title = (
        f"# Benchmark {config.name}: target {target['name']}, seeds {config.seeds}\n\n"
        "Metrics at the last epoch, mean ± std over the seeds; AP (best epoch): the mean pixel "
        "AP at each run's best epoch, chosen on the test set.\n\n"
    )
    by_defect = defect_table(results)
    if by_defect:
        by_defect = (
            "\nPer defect type, last epoch, pixel AP / PRO in percent (each type's test images "
            "plus every normal one; mean over the seeds listed):\n\n" + by_defect
        )
    storage.write_bytes_atomic(str(out / "results.md"), (title + table + by_defect).encode())
    plt = _pyplot()
    _curves(plt, results, out / "curves.png")
    for metric in METRICS:
        _bars(plt, rows, metric, out / f"bars_{metric}.png")
    maps = {}
    for entry in config.synthesizers:
        file = out / "runs" / f"{entry.name}-s{config.seeds[0]}" / "examples.npy"
        if file.is_file():
            maps[entry.name] = np.load(file)
    if len(examples[0]):
        _examples(plt, examples, maps, out / "examples.png")
    summary = {"target": target, "rows": rows, "table": table, "by_defect_table": by_defect}
    storage.write_bytes_atomic(str(out / "summary.json"), json.dumps(summary, indent=1).encode())
    return summary
